//! What every handler shares: the store, the tokens, the limits, the metrics, and the signals for the change
//! feed and shutdown. Engine calls run on tokio's blocking pool.

use std::sync::Arc;

use cairn_store::Store;
use tokio::sync::{watch, Semaphore};

use super::auth::Tokens;
use super::config::Limits;
use super::error::ApiError;
use super::metrics::Metrics;

/// Shared state of the server. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The collections.
    pub(crate) store: Store,
    /// Bearer tokens.
    pub(crate) tokens: Arc<Tokens>,
    /// Request limits.
    pub(crate) limits: Arc<Limits>,
    /// Request counters and latency histograms.
    pub(crate) metrics: Arc<Metrics>,
    /// The newest commit sequence the server wrote; change-feed waiters watch it.
    pub(crate) written: watch::Sender<u64>,
    /// Becomes `true` when the server starts shutting down; open change streams end.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Permits for open change streams.
    pub(crate) streams: Arc<Semaphore>,
}

impl AppState {
    /// State over `store`.
    pub(crate) fn new(store: Store, tokens: Tokens, limits: Limits, shutdown: watch::Receiver<bool>) -> Self {
        let written = watch::Sender::new(store.db().last_sequence());
        Self {
            store,
            tokens: Arc::new(tokens),
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            limits: Arc::new(limits),
            metrics: Arc::new(Metrics::default()),
            written,
            shutdown,
        }
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store)).await.map_err(join_error)?
    }

    /// Runs a read on the blocking pool.
    pub(crate) async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        self.blocking(f).await
    }

    /// Runs a record write on the blocking pool, then wakes change-feed waiters if it committed.
    pub(crate) async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        let out = self.blocking(f).await;
        let seq = self.store.db().last_sequence();
        self.written.send_if_modified(|written| {
            let newer = seq > *written;
            if newer {
                *written = seq;
            }
            newer
        });
        out
    }

    /// Runs a collection declaration on the blocking pool. The store keeps record writes out while it
    /// rebuilds indexes.
    pub(crate) async fn declare<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        self.blocking(f).await
    }
}

fn join_error(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("engine task failed: {e}"))
}
