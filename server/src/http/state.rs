//! What every handler shares: the storage backend, the tokens, the limits, the metrics, and the signals
//! for change streams and shutdown.

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use super::auth::Tokens;
use super::config::Limits;
use super::metrics::Metrics;
use crate::backend::{ArtifactStore, Backend, Permits};
use crate::problem::ApiError;

/// Shared state of the server. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Where the records are.
    pub(crate) backend: Arc<dyn Backend>,
    /// Bearer tokens.
    pub(crate) tokens: Arc<Tokens>,
    /// Request limits.
    pub(crate) limits: Arc<Limits>,
    /// Request counters and latency histograms.
    pub(crate) metrics: Arc<Metrics>,
    /// Becomes `true` when the server starts shutting down; open change streams end.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Permits for open change streams.
    pub(crate) streams: Arc<Semaphore>,
    /// The artifact store, when the server has one (the embedded backend's, in `<data dir>/blobs`, or the
    /// PostgreSQL backend's with `--artifact-objects`).
    pub(crate) artifacts: Option<ArtifactStore>,
    /// Permits for the artifact routes' blocking calls.
    pub(crate) artifact_permits: Arc<Permits>,
    /// Permits for the queue routes' blocking calls (claims long-polling for a job hold theirs while they
    /// wait, so they have their own).
    pub(crate) queue_permits: Arc<Permits>,
    /// Permits for the run-metrics routes' blocking calls.
    pub(crate) metrics_permits: Arc<Permits>,
}

impl AppState {
    /// State over `backend`.
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        tokens: Tokens,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            backend,
            tokens: Arc::new(tokens),
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            artifact_permits: Arc::new(Permits::new(limits.max_concurrency)),
            queue_permits: Arc::new(Permits::new(limits.max_concurrency)),
            metrics_permits: Arc::new(Permits::new(limits.max_concurrency)),
            limits: Arc::new(limits),
            metrics: Arc::new(Metrics::default()),
            shutdown,
            artifacts: None,
        }
    }

    /// This state with an artifact store: the `/v1/artifacts` routes, and the blob store's health in
    /// `/healthz` and `/metrics`, answer from it (without one, the routes answer 501).
    pub fn with_artifacts(mut self, artifacts: impl Into<ArtifactStore>) -> Self {
        self.artifacts = Some(artifacts.into());
        self
    }
}

/// Runs `f` on tokio's blocking pool holding one of `permits` until it returns (503 at once when none is
/// free): the artifact, queue and run-metrics routes' blocking calls. `what` names the call in the error of
/// a task that panicked.
pub(crate) async fn blocking<R: Send + 'static>(
    permits: &Permits,
    what: &'static str,
    f: impl FnOnce() -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    let permit = permits.take()?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|e| {
        ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{what} task failed: {e}"))
    })?
}
