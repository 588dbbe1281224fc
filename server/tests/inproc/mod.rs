//! Drives the server in-process: `cairn_server::app` over a store in a temporary directory, each request
//! one `tower::ServiceExt::oneshot` call on the router, with no socket and no process. With
//! `CAIRN_TEST_BACKEND=postgres` the application runs on the PostgreSQL backend instead, over a fresh
//! database of `cairn_pgcluster::Postgres::shared()` (the cluster `CAIRN_TEST_POSTGRES` names, or one of
//! its own).

#![allow(dead_code, reason = "each test binary uses part of it")]

#[path = "../problem/mod.rs"]
mod problem;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use axum::response::Response;
use axum::Router;
use cairn_server::backend::{Backend, EmbeddedBackend, PostgresBackend, PostgresOptions};
use cairn_server::{AppState, Config, Role, TokenConfig};
use serde_json::Value;
use tower::ServiceExt;

/// The application over a fresh store. Clones share the store, the limits and the metrics.
#[derive(Clone)]
pub struct App {
    router: Router,
    /// Which backend runs: `embedded` or `postgres`.
    pub backend: &'static str,
    _keep: Arc<Keep>,
}

/// What lives as long as the last clone: the shutdown sender (change streams end when it goes), the data
/// directory, and the PostgreSQL cluster when the backend is PostgreSQL. Dropped after the router (fields
/// drop in order).
struct Keep {
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
    _postgres: Option<cairn_pgcluster::Postgres>,
}

/// Whether `CAIRN_TEST_BACKEND` asks for the PostgreSQL backend.
/// A token whose secret is its name, with `role`, scoped to `project` if given.
pub fn token(name: &str, role: Role, project: Option<&str>) -> TokenConfig {
    use sha2::{Digest, Sha256};
    let sha256 = Sha256::digest(name.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    TokenConfig { name: name.into(), sha256, role, project: project.map(Into::into) }
}

pub fn on_postgres() -> bool {
    std::env::var("CAIRN_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

impl App {
    /// The application over a fresh data directory (or a fresh PostgreSQL database), with `config`.
    pub fn start(config: Config) -> App {
        let dir = tempfile::tempdir().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (backend, postgres): (Arc<dyn Backend>, _) = if on_postgres() {
            let pg = cairn_pgcluster::Postgres::shared();
            let opts = PostgresOptions {
                pool_size: 8,
                max_concurrency: config.limits.max_concurrency,
                retention: config.changes.clone(),
                ..PostgresOptions::new(&pg.database())
            };
            // Set up on a runtime of its own (this function is not async); the background tasks then run on
            // the test's runtime.
            let backend = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(PostgresBackend::setup(opts))
            })
            .join()
            .unwrap()
            .unwrap()
            .with_queue_options(config.queue.options());
            backend.start();
            (Arc::new(backend), Some(pg))
        } else {
            let store = cairn_store::Store::open(dir.path().join("data")).unwrap();
            let backend =
                EmbeddedBackend::new(store, config.limits.max_concurrency).with_queue_options(config.queue.options());
            (Arc::new(backend), None)
        };
        let kind = backend.kind();
        let state = AppState::with_backend(backend, &config, stopped).unwrap();
        App {
            router: cairn_server::app(state),
            backend: kind,
            _keep: Arc::new(Keep { _stop: stop, _dir: dir, _postgres: postgres }),
        }
    }

    /// A request to `path` (which starts with `/`).
    pub fn req(&self, method: Method, path: &str) -> Req {
        Req { router: self.router.clone(), request: Request::builder().method(method).uri(path), body: Body::empty() }
    }
}

/// A request being built, sent by [`Req::send`].
pub struct Req {
    router: Router,
    request: axum::http::request::Builder,
    body: Body,
}

impl Req {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Req {
        self.request = self.request.header(name, value.as_ref());
        self
    }

    /// Adds `Authorization: Bearer TOKEN`.
    pub fn bearer_auth(self, token: &str) -> Req {
        self.header("authorization", format!("Bearer {token}"))
    }

    /// A JSON body, with its content type.
    pub fn json(mut self, value: &Value) -> Req {
        self.body = Body::from(serde_json::to_vec(value).unwrap());
        self.header("content-type", "application/json")
    }

    /// A raw body.
    pub fn body(mut self, body: &'static str) -> Req {
        self.body = Body::from(body);
        self
    }

    /// Runs the request through the application.
    pub async fn send(self) -> Result<Response, Infallible> {
        self.router.oneshot(self.request.body(self.body).unwrap()).await
    }
}

/// The body as text.
pub async fn text(resp: Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The status and JSON body of a response (`Value::Null` for an empty body), an error checked to be a
/// problem document.
pub async fn json(resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, problem::checked_body(status, ctype.as_deref(), &bytes))
}
