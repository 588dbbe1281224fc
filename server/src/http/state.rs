//! What every handler shares: the store, the tokens, the limits, the metrics, and the signals for the change
//! feed and shutdown. Engine calls run on tokio's blocking pool, at most `max_concurrency` at once.

use std::sync::atomic::Ordering;
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
    /// Permits for engine tasks in flight, `max_concurrency` of them. A task holds its permit until it
    /// finishes, also when the request that started it timed out and was answered, so the work left behind
    /// by timed-out requests is bounded and new engine calls are shed while it runs.
    pub(crate) engine: Arc<Semaphore>,
}

impl AppState {
    /// State over `store`.
    pub(crate) fn new(store: Store, tokens: Tokens, limits: Limits, shutdown: watch::Receiver<bool>) -> Self {
        let written = watch::Sender::new(store.db().last_sequence());
        Self {
            store,
            tokens: Arc::new(tokens),
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            engine: Arc::new(Semaphore::new(limits.max_concurrency)),
            limits: Arc::new(limits),
            metrics: Arc::new(Metrics::default()),
            written,
            shutdown,
        }
    }

    /// Runs `f` on the blocking pool, holding an engine permit until `f` returns; 503 with `Retry-After: 1`
    /// at once if every permit is taken. Dropping the returned future (a timeout) does not stop `f`, but
    /// the permit stays taken until it has.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        let Ok(permit) = self.engine.clone().try_acquire_owned() else {
            self.metrics.shed.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::unavailable(
                "the engine is running max_concurrency tasks (timed-out requests' included); retry shortly",
                1,
            ));
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&store)
        })
        .await
        .map_err(join_error)?
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

    /// Runs a collection declaration on the blocking pool. Record writes go on while it builds indexes
    /// (the store holds them off a chunk of records at a time).
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A timed-out request's engine task keeps its permit until it ends: meanwhile engine calls are shed
    /// with 503 and `Retry-After`, and afterwards they run again.
    #[tokio::test]
    async fn engine_tasks_left_by_timeouts_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("data")).unwrap();
        let limits = Limits { max_concurrency: 2, ..Limits::default() };
        let state = AppState::new(store, Tokens::default(), limits, watch::channel(false).1);
        let slow = || {
            state.read(|_| {
                std::thread::sleep(Duration::from_millis(600));
                Ok(())
            })
        };
        for _ in 0..2 {
            assert!(tokio::time::timeout(Duration::from_millis(20), slow()).await.is_err(), "timed out");
        }
        let shed = state.read(|_| Ok(())).await.unwrap_err();
        assert_eq!((shed.status.as_u16(), shed.retry_after), (503, Some(1)));
        assert_eq!(state.metrics.shed.load(Ordering::Relaxed), 1);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(state.read(|_| Ok(())).await.is_ok(), "the permits came back when the slow tasks ended");
    }
}
