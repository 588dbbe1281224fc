//! `cairn serve`: the HTTP server over a data directory, and the S3 API of its artifact store (see
//! `docs/server.md`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::Failure;
use cairn_server::{Config, ServeOptions};

/// Arguments of `cairn serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory of the embedded backend (created if missing).
    #[arg(long = "data", value_name = "DIR")]
    data: Option<PathBuf>,
    /// A PostgreSQL database to keep the records in instead of a data directory
    /// (`postgres://user@host:port/database`), overriding the configuration's `[backend] url`. Several
    /// servers may share one.
    #[arg(long, value_name = "URL", conflicts_with = "data")]
    backend: Option<String>,
    /// Address to listen on, overriding the configuration's `listen` (default 127.0.0.1:7070; port 0 picks
    /// a free port). The bound address is printed on stdout.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address of the S3 API's listener, overriding the configuration's `[s3] listen` (default
    /// 127.0.0.1:9000; port 0 picks a free port), and turning the S3 API on. The bound address is printed
    /// on stdout after the HTTP one (`s3 listening on http://ADDR`). With `--backend`, only together with
    /// `--artifact-objects`.
    #[arg(long, value_name = "ADDR")]
    s3_listen: Option<SocketAddr>,
    /// On the PostgreSQL backend: where the artifact store keeps its objects' bytes (`s3://bucket/prefix` or
    /// `file:///absolute/dir`), overriding the configuration's `[artifacts] objects`; its metadata go to the
    /// PostgreSQL database. Without it the PostgreSQL backend has no artifact store (no S3 API). Refused
    /// with a data directory, whose artifacts live in `<data dir>/blobs`.
    #[arg(long, value_name = "URL")]
    artifact_objects: Option<String>,
    /// Configuration file (TOML): tokens and limits. Without it: defaults, no authentication, loopback only.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(args: &ServeArgs) -> Result<(), Failure> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| Failure::new("cannot start the server", e))?,
        None => Config::default(),
    };
    if let Some(url) = &args.backend {
        config.backend.url = Some(url.clone());
    }
    init_logs();
    let opts = ServeOptions {
        data: args.data.clone(),
        listen: args.listen,
        s3_listen: args.s3_listen,
        artifact_objects: args.artifact_objects.clone(),
        config,
    };
    cairn_server::serve(opts).map_err(|e| Failure::new("server", e))
}

/// Structured logs on stderr (colored only on a terminal); `RUST_LOG` filters them (default `info`).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}
