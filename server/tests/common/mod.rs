//! Drives the real `cairn` binary: `cairn serve --listen 127.0.0.1:0`, reading the bound address from its
//! stdout, with an HTTP client over loopback. For the tests that need a process (`process.rs`); the HTTP
//! contract is tested in-process (`inproc`).

#[path = "../problem/mod.rs"]
pub mod problem;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;

/// A running server; killed on drop unless stopped.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The client, with no token.
    pub client: Client,
}

impl Server {
    /// A server on `data`, writing its config under `scratch`; its S3 listener (on by default with a data
    /// directory) on a free loopback port too, so that servers run side by side.
    pub fn start_on(data: &Path, config: Option<&str>, scratch: &Path) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.args(["serve", "--s3-listen", "127.0.0.1:0", "--data"]).arg(data);
        Self::launch(cmd, config, scratch)
    }

    /// A server on the PostgreSQL database `url` (`serve --backend URL`), writing its config under `scratch`.
    #[allow(dead_code, reason = "the tests of the PostgreSQL backend use it; process.rs does not")]
    pub fn start_backend(url: &str, config: Option<&str>, scratch: &Path) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.args(["serve", "--backend", url]);
        Self::launch(cmd, config, scratch)
    }

    /// Starts `cmd` (a `serve` without `--listen`) on a free loopback port and waits for its address.
    fn launch(mut cmd: Command, config: Option<&str>, scratch: &Path) -> Server {
        cmd.args(["--listen", "127.0.0.1:0"]);
        if let Some(text) = config {
            let path = scratch.join("cairn.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        cmd.env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server { child: Some(child), base, client: Client::new() }
    }

    /// A request to `path` (which starts with `/`).
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// Sends SIGTERM and waits: the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The status and JSON body of a response (`Value::Null` for an empty body), an error checked to be a
/// problem document.
pub async fn json(resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.bytes().await.unwrap();
    (status, problem::checked_body(status, ctype.as_deref(), &bytes))
}

impl Server {
    /// Kills the server with SIGKILL and waits for it: no flush, no close, as a crash leaves it.
    #[allow(dead_code, reason = "the soak kills servers; process.rs stops them")]
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}
