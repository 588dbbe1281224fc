//! The HTTP server: the collections of a data directory over HTTP and JSON (API version 1), on tokio and
//! axum, with the synchronous engine called on tokio's blocking pool (reads of one record by id excepted). See
//! `docs/server.md`.
//!
//! One file per concern: `router` (the route table, the middleware stack and the small routes: health,
//! OpenAPI, stats and metrics); the routes per resource: `records`, `collections`, `transactions`,
//! `changes`, `admin`, `artifacts`, `queue` (the job queue) and `run_metrics` (runs' time series); `auth`
//! (tokens, their configuration and project scopes), `extract` (validated inputs), `limits` (shedding and
//! timeouts), `metrics` (the counters and their Prometheus text), `config` (the TOML file) and `state`
//! (what handlers share, and the helper running their blocking calls). Problem documents are
//! `crate::problem`'s. Dependencies between them go one way: `config` uses `auth`, `state` uses
//! `metrics`, never the other way round.

mod admin;
mod artifacts;
mod auth;
mod changes;
mod collections;
mod config;
mod extract;
mod limits;
mod metrics;
mod queue;
mod records;
mod router;
mod run_metrics;
mod state;
mod transactions;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::serve::ListenerExt;
use cairn_store::artifacts::{ArtifactOptions, Artifacts};
use cairn_store::{Store, StoreOptions};
use tokio::sync::watch;

pub use auth::{hash_token, Role, TokenConfig};
pub use config::{
    ArtifactSettings, BackendConfig, ChangeRetention, Config, ConfigError, Limits, QueueSettings, RunMetricsSettings,
    S3Settings,
};
pub use router::app;
pub(crate) use run_metrics::problem as run_metrics_problem;
pub use state::AppState;

use crate::backend::{
    ArtifactStore, Backend, EmbeddedBackend, PostgresArtifactOptions, PostgresArtifacts, PostgresBackend,
    PostgresOptions,
};
use crate::replicate::Replicators;
use auth::Tokens;

/// Why the server could not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Without tokens, only loopback addresses are allowed.
    #[error("no tokens are configured, so the server listens on loopback only; {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    /// `--data` is missing: the embedded backend needs a data directory.
    #[error("the embedded backend needs a data directory (--data), or give a PostgreSQL URL (--backend)")]
    NoData,
    /// The backend could not be opened.
    #[error("cannot open the backend: {0}")]
    Backend(String),
    /// The data directory could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// The engine's error.
        source: cairn_store::StoreError,
    },
    /// Binding, serving or the runtime failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database did not flush or close cleanly.
    #[error("closing the database failed: {0}")]
    Close(String),
    /// The artifact store (`<data dir>/blobs`, or the object store of `[artifacts] objects`) could not be
    /// opened.
    #[error("cannot open the artifact store in {path}: {message}")]
    Artifacts {
        /// Its blob directory, or the object store's URL.
        path: PathBuf,
        /// The artifact store's error.
        message: String,
    },
    /// The S3 API was asked for on the PostgreSQL backend without an object store for the artifacts' bytes.
    #[error(
        "the S3 API on the PostgreSQL backend needs an object store for the artifacts' bytes: give \
         --artifact-objects s3://bucket/prefix (or file:///dir; [artifacts] objects), or remove --s3-listen and \
         [s3] enabled = true"
    )]
    S3Unavailable,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let context = context.into();
    move |source| ServeError::Io { context, source }
}

impl AppState {
    /// State over an open `store` (the embedded backend), with `config`'s tokens and limits (its `listen`
    /// and `backend` are not used), for serving [`app`](crate::app) in-process. `shutdown` becoming `true`
    /// ends open change streams and long polls; keep its sender for as long as the state serves requests.
    /// Fails if `config` does not pass [`Config::validate`].
    pub fn from_config(store: Store, config: &Config, shutdown: watch::Receiver<bool>) -> Result<Self, ConfigError> {
        let backend = Arc::new(EmbeddedBackend::new(store, config.limits.max_concurrency));
        Self::with_backend(backend, config, shutdown)
    }

    /// As [`from_config`](Self::from_config), over any backend.
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        config: &Config,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let tokens = Tokens::new(&config.tokens).map_err(ConfigError::Invalid)?;
        Ok(Self::new(backend, tokens, config.limits.clone(), shutdown))
    }
}

/// What `cairn serve` was asked.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The data directory of the embedded backend (created if missing).
    pub data: Option<PathBuf>,
    /// Overrides the configuration's `listen`.
    pub listen: Option<SocketAddr>,
    /// Overrides the configuration's `[s3] listen`, and turns the S3 API on.
    pub s3_listen: Option<SocketAddr>,
    /// Overrides the configuration's `[artifacts] objects` (PostgreSQL backend only).
    pub artifact_objects: Option<String>,
    /// The configuration (`Config::default()` for the defaults).
    pub config: Config,
}

/// Runs the server until SIGTERM or Ctrl-C, then stops accepting, finishes in-flight requests, ends change
/// streams, flushes and closes the backend. Prints `listening on http://ADDR` on stdout once bound, and then,
/// when the S3 API is on, `s3 listening on http://ADDR`.
pub fn serve(mut opts: ServeOptions) -> Result<(), ServeError> {
    if let Some(objects) = opts.artifact_objects.take() {
        opts.config.artifacts.objects = Some(objects);
    }
    opts.config.validate()?;
    let listen = opts.listen.unwrap_or(opts.config.listen);
    let tokens = Tokens::new(&opts.config.tokens).map_err(|e| ServeError::Config(ConfigError::Invalid(e)))?;
    if !tokens.enabled() && !listen.ip().is_loopback() {
        return Err(ServeError::NotLoopback(listen));
    }
    let s3_asked = opts.s3_listen.is_some() || opts.config.s3.enabled == Some(true);
    let has_artifacts = opts.config.backend.url.is_none() || opts.config.artifacts.objects.is_some();
    if !has_artifacts && s3_asked {
        return Err(ServeError::S3Unavailable);
    }
    let s3_listen = opts.s3_listen.unwrap_or(opts.config.s3.listen);
    let s3_on = has_artifacts && (s3_asked || opts.config.s3.enabled.is_none());
    if s3_on && !tokens.enabled() && !s3_listen.ip().is_loopback() {
        return Err(ServeError::NotLoopback(s3_listen));
    }
    let limits = opts.config.limits.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(2 * limits.max_concurrency + 16)
        .build()
        .map_err(io("cannot start the runtime"))?;
    runtime.block_on(async move {
        let (backend, store, embedded, artifacts) = open_backend(&opts).await?;
        // The job queue opens now, so that its maintenance rescues leases that expired while the server was
        // down without waiting for a request to open it.
        let opening = backend.clone();
        let queue = tokio::task::spawn_blocking(move || opening.queue().map(drop))
            .await
            .map_err(|e| io("the task opening the job queue failed")(std::io::Error::other(e)))?;
        match queue {
            Err(e) if e.status != axum::http::StatusCode::NOT_IMPLEMENTED => {
                return Err(ServeError::Backend(format!("cannot open the job queue: {}", e.detail)));
            }
            _ => {}
        }
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(io(format!("cannot listen on {listen}")))?;
        let addr = listener.local_addr().map_err(io("cannot read the bound address"))?;
        let s3 = match &artifacts {
            Some(artifacts) if s3_on => {
                let service = crate::s3::s3_service(artifacts.clone(), &opts.config)?;
                let listener = tokio::net::TcpListener::bind(s3_listen)
                    .await
                    .map_err(io(format!("cannot listen on {s3_listen} for the S3 API (--s3-listen, [s3] listen)")))?;
                let addr = listener.local_addr().map_err(io("cannot read the bound address"))?;
                Some((service, listener, addr))
            }
            _ => None,
        };
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "listening on http://{addr}");
        if let Some((_, _, s3_addr)) = &s3 {
            let _ = writeln!(stdout, "s3 listening on http://{s3_addr}");
        }
        let _ = stdout.flush();
        let kind = backend.kind();
        if tokens.enabled() {
            tracing::info!(%addr, backend = kind, "listening; bearer tokens required");
        } else {
            tracing::warn!(%addr, backend = kind, "no tokens configured: authentication is off, listening on loopback only");
        }
        match &s3 {
            Some((_, _, s3_addr)) => tracing::info!(addr = %s3_addr, "S3 API listening (path-style, region us-east-1)"),
            None if artifacts.is_none() => tracing::warn!(
                "no artifact store: on the PostgreSQL backend the artifacts' bytes go to an object store; start with \
                 --artifact-objects s3://bucket/prefix ([artifacts] objects) for the S3 API and /v1/artifacts (501 \
                 meanwhile)"
            ),
            None => tracing::info!("S3 API off ([s3] enabled = false)"),
        }
        let (stop, stopped) = watch::channel(false);
        let mut state = AppState::new(backend.clone(), tokens, limits, stopped.clone());
        if let Some(a) = &artifacts {
            state = state.with_artifacts(a.clone());
        }
        let replicators = match &store {
            Some(store) => Some(
                Replicators::start(store, embedded.as_ref(), &opts.config.replicate, &stopped)
                    .map_err(io("cannot start the replication threads"))?,
            ),
            None => None,
        };
        if let Some(r) = &replicators {
            state.metrics.watch_replicas(r.status.clone());
        }
        let s3_task = s3.map(|(service, listener, _)| {
            let mut stopped = stopped.clone();
            tokio::spawn(service.serve(listener, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        });
        let retention = crate::run_retention::start(backend.clone(), opts.config.run_metrics.clone(), stopped.clone());
        let app = app(state);
        // Answers go out at once, not held back by Nagle's algorithm until the client's ACK of the segment
        // before (a delay of up to the client's delayed-ACK timeout when an answer takes two segments).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                tracing::info!("shutting down: finishing in-flight requests");
                stop.send_replace(true);
            })
            .await
            .map_err(io("serving failed"))?;
        if let Some(task) = retention {
            let _ = task.await;
        }
        if let Some(task) = s3_task {
            task.await.map_err(|e| io("the S3 listener failed")(std::io::Error::other(e)))?.map_err(io("serving S3 failed"))?;
        }
        tokio::task::spawn_blocking(move || {
            // The stop signal was sent: each replicator ends after its current step.
            if let Some(r) = replicators {
                r.join();
            }
            backend.close().map_err(ServeError::Close)
        })
        .await
        .map_err(|e| ServeError::Close(e.to_string()))??;
        tracing::info!("backend closed");
        Ok(())
    })
}

/// The backend, its records and its artifacts.
type Opened = (Arc<dyn Backend>, Option<Store>, Option<Artifacts>, Option<ArtifactStore>);

/// The backend `opts` name, and with the embedded one its store (replication copies it) and the artifact
/// store in `<data dir>/blobs` (both as itself, for replication, and as the server's artifact store); with
/// PostgreSQL, its artifact store when `[artifacts] objects` names where the bytes go.
async fn open_backend(opts: &ServeOptions) -> Result<Opened, ServeError> {
    let config = &opts.config;
    if let Some(url) = &config.backend.url {
        if !config.replicate.is_empty() {
            return Err(ServeError::Backend(
                "[[replicate]] copies the embedded store's change feed: it needs the embedded backend, not PostgreSQL"
                    .to_owned(),
            ));
        }
        let pg = PostgresOptions {
            url: url.clone(),
            schema: config.backend.schema.clone(),
            pool_size: config.backend.pool_size,
            max_concurrency: config.limits.max_concurrency,
            retention: config.changes.clone(),
        };
        let backend =
            PostgresBackend::open(pg).await.map_err(ServeError::Backend)?.with_queue_options(config.queue.options());
        let artifacts = match &config.artifacts.objects {
            Some(objects) => Some(open_postgres_artifacts(config, url, objects).await?),
            None => None,
        };
        return Ok((Arc::new(backend), None, None, artifacts));
    }
    let data = opts.data.clone().ok_or(ServeError::NoData)?;
    let blobs = data.join("blobs");
    let store_opts = config.changes.apply(StoreOptions::default());
    let path = data.clone();
    let store = tokio::task::spawn_blocking(move || Store::with_db(Store::engine_options().open(&path)?, store_opts))
        .await
        .map_err(|e| io("the task opening the data directory failed")(std::io::Error::other(e)))?
        .map_err(|source| ServeError::Open { path: data, source })?;
    let (for_artifacts, path) = (store.clone(), blobs.clone());
    let artifacts =
        tokio::task::spawn_blocking(move || Artifacts::open(for_artifacts, &path, ArtifactOptions::default()))
            .await
            .map_err(|e| io("the task opening the artifact store failed")(std::io::Error::other(e)))?
            .map_err(|e| ServeError::Artifacts { path: blobs, message: e.to_string() })?;
    let backend = EmbeddedBackend::new(store.clone(), config.limits.max_concurrency)
        .with_artifacts(artifacts.clone())
        .with_queue_options(config.queue.options());
    Ok((Arc::new(backend), Some(store), Some(artifacts.clone()), Some(artifacts.into())))
}

/// The PostgreSQL backend's artifact store: its tables in the database at `url`, its bytes at `objects`.
async fn open_postgres_artifacts(config: &Config, url: &str, objects: &str) -> Result<ArtifactStore, ServeError> {
    let a = &config.artifacts;
    let mut location = cairn_sync::ObjectLocation::new(objects).endpoint(a.endpoint.clone());
    if let (Some(key), Some(secret)) = (&a.access_key_id, &a.secret_access_key) {
        location = location.credentials(key, secret);
    }
    if let Some(region) = &a.region {
        location = location.region(region);
    }
    let fail = |message: String| ServeError::Artifacts { path: PathBuf::from(objects), message };
    let location = location.open().map_err(|e| fail(e.to_string()))?;
    let (store, prefix) = location.opened().ok_or_else(|| fail("the object store did not open".into()))?;
    let opts = PostgresArtifactOptions {
        schema: config.backend.schema.clone(),
        gc_grace: std::time::Duration::from_secs(a.gc_grace_secs),
        maintenance_interval: std::time::Duration::from_secs(a.maintenance_interval_secs),
        ..PostgresArtifactOptions::new(url)
    };
    let artifacts = PostgresArtifacts::open(opts, store, prefix).await.map_err(fail)?;
    tracing::info!(objects, "artifact store: metadata in PostgreSQL, bytes in the object store");
    Ok(artifacts.into())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
