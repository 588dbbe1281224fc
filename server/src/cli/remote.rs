//! Calls to a running server's admin routes, for the commands that cannot open a directory the server
//! holds (`cairn backup --server`, `cairn check --server`). Plain HTTP; the token comes from `--token` or
//! `CAIRN_TOKEN`.

use clap::Args;
use serde_json::Value;

use super::Failure;

/// Where the server is, and the token to show it.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of a running `cairn serve` (for example `http://127.0.0.1:7070`); the command then goes
    /// through the server's admin routes instead of opening the data directory.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token of an admin with no project scope (default: the CAIRN_TOKEN environment variable).
    #[arg(long, value_name = "TOKEN", env = "CAIRN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// POSTs `body` to `path` of the server and returns the JSON answer; a problem document is a failure that
/// quotes its detail.
pub fn post(server: &str, token: Option<&str>, path: &str, body: &Value) -> Result<Value, Failure> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new("cannot start the HTTP client", e))?;
    runtime.block_on(async {
        let mut req = reqwest::Client::new().post(&url).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| Failure::new(format_args!("POST {url}"), e))?;
        let status = resp.status();
        let answer: Value =
            resp.json().await.map_err(|e| Failure::new(format_args!("POST {url}: reading the answer"), e))?;
        if status.is_success() {
            Ok(answer)
        } else {
            let detail = answer["detail"].as_str().unwrap_or("no detail");
            Err(Failure::new(format_args!("POST {url}"), format_args!("{status}: {detail}")))
        }
    })
}
