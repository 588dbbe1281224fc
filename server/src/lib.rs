//! Cairn's HTTP server as a library: the collections of a [`cairn_store::Store`] over HTTP and JSON (API
//! version 1; routes, status codes and documents in `docs/server.md` and `docs/openapi.json`), on axum and
//! tokio, with the synchronous engine called on tokio's blocking pool.
//!
//! What it is:
//!
//! - [`app`]: the [`axum::Router`] with every route and its middleware stack (request tracing, metrics, load
//!   shedding and the request timeout, bearer-token authentication), over an [`AppState`];
//! - [`backend`]: the storage boundary the routes call, [`backend::Backend`], with its two implementations:
//!   the embedded record store of a data directory (the default) and PostgreSQL (several servers on one
//!   database); failed calls answer with [`problem::ApiError`], the problem document of the request;
//! - [`AppState::from_config`]: that state, built in-process from an open store and a [`Config`] (tokens and
//!   limits), for embedding the server in another program or driving it in tests without a socket
//!   ([`AppState::with_backend`] over any backend);
//! - [`serve`]: what `cairn serve` runs: open a data directory, bind, answer until SIGTERM or Ctrl-C, then
//!   finish in-flight requests, end change streams, flush and close (failures are a [`ServeError`]);
//! - [`s3_service`]: the S3 API of an artifact store ([`backend::ArtifactStore`]: the embedded
//!   [`cairn_store::artifacts::Artifacts`], or the PostgreSQL backend's [`backend::PostgresArtifacts`]) as an
//!   [`S3Server`], which `cairn serve` answers on its second listener and tests run in-process on a loopback
//!   port;
//! - [`Config`] (with [`Limits`], [`TokenConfig`] and [`Role`]), the configuration file, and [`hash_token`],
//!   the SHA-256 the configuration holds instead of a token;
//! - [`report`]: what the server and the command-line tool both print.
//!
//! What it is not: not the command-line tool (that is the `cairn` binary, which uses this library), not an
//! HTTP client, and not a way into the handlers and extractors, which are internal. It
//! installs no tracing subscriber, and only [`serve`] builds a tokio runtime: [`app`] runs on the caller's.
//!
//! In-process, without a socket:
//!
//! ```
//! use axum::body::Body;
//! use axum::http::Request;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let store = cairn_store::Store::open(dir.path()).unwrap();
//! // Change streams and long polls end when this sender sends `true`; keep it while the app serves.
//! let (_stop, stopped) = tokio::sync::watch::channel(false);
//! let state = cairn_server::AppState::from_config(store, &cairn_server::Config::default(), stopped).unwrap();
//! let resp = cairn_server::app(state)
//!     .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(resp.status(), 200);
//! # }
//! ```

pub mod backend;
mod http;
pub mod problem;
pub mod replicate;
pub mod report;
pub mod run_retention;
mod s3;

pub use http::{
    app, hash_token, serve, AppState, ArtifactSettings, BackendConfig, ChangeRetention, Config, ConfigError, Limits,
    QueueSettings, Role, RunMetricsSettings, S3Settings, ServeError, ServeOptions, TokenConfig,
};
pub use s3::{s3_service, S3Server};
