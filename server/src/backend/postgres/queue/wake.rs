//! Wake-ups of claims waiting for a job. A commit that makes a job available (an enqueue, a retry, a
//! promotion) wakes this server's waiting claims at once, and asks the notifier task to send one `NOTIFY`
//! on the schema's queue channel (`cairn_queue:<schema>`), whose payload names this server; the backend's
//! listening connection hears other servers' notifications and wakes the claims waiting here. Requests
//! made while a `NOTIFY` is being sent are folded into one more, so a burst of enqueues sends a few
//! notifications, not one each, and no transaction takes PostgreSQL's notification lock at its commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;

use tokio::sync::{watch, Notify};

use super::Inner;

/// The wake-ups of one server's waiting claims, and its notification requests.
#[derive(Debug)]
pub(crate) struct Wake {
    /// Bumped at every wake-up.
    generation: watch::Sender<u64>,
    /// This server's notifications carry it, so that the listener passes over its own.
    origin: String,
    /// A notification for other servers is wanted.
    pending: Notify,
}

/// Backends opened by this process so far: tells apart the origins of two in one process.
static OPENED: AtomicU64 = AtomicU64::new(0);

impl Default for Wake {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let n = OPENED.fetch_add(1, Ordering::Relaxed);
        Self {
            generation: watch::Sender::new(0),
            origin: format!("{}-{n}-{nanos:x}", std::process::id()),
            pending: Notify::new(),
        }
    }
}

impl Wake {
    /// Wakes this server's waiting claims.
    pub(crate) fn wake_local(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A commit made jobs available: wakes this server's waiting claims, and those of other servers
    /// through the notifier task.
    pub(crate) fn jobs_available(&self) {
        self.wake_local();
        self.pending.notify_one();
    }

    /// A receiver that changes at the next wake-up.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The listening connection heard `payload` on the queue channel: wakes the waiting claims unless this
    /// server sent it.
    pub(crate) fn heard(&self, payload: &str) {
        if payload != self.origin {
            self.wake_local();
        }
    }
}

/// Sends a `NOTIFY` on the queue channel for each (folded) request, until the queue is dropped.
pub(crate) async fn notifier(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let wake = strong.wake.clone();
        drop(strong);
        wake.pending.notified().await;
        let Some(strong) = inner.upgrade() else { return };
        let channel = strong.names.queue_channel();
        let sent = async {
            let mut conn = strong.conn().await?;
            conn.query_cached("SELECT pg_notify($1, $2)", &[&channel, &wake.origin]).await?;
            Ok::<_, super::Fail>(())
        };
        if let Err(e) = sent.await {
            tracing::warn!(error = %super::QueueError::from(e), "cannot notify other servers of new jobs");
        }
    }
}
