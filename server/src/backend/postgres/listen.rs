//! The listening connection: `LISTEN` on the schema's commit, declaration and job-queue channels, so that
//! a server learns of other servers' commits (waking its change-feed waiters), declarations (dropping its
//! cached specs) and new jobs (waking its waiting claims). Reconnects after a failure, then reads the
//! counter and wakes the waiting claims, since notifications sent meanwhile are lost.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use super::schema::{quote_ident, META};
use super::Inner;

/// The `application_name` of the listening connection (as `pg_stat_activity` shows it).
pub const LISTENER_NAME: &str = "cairn-listen";

/// Listens until the backend is dropped.
pub(crate) fn spawn_listener(inner: &Arc<Inner>, url: String) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let channels = Channels {
                feed: inner.names.feed_channel(),
                catalog: inner.names.catalog_channel(),
                queue: inner.names.queue_channel(),
            };
            let meta = inner.names.table(META);
            drop(inner);
            if let Err(e) = listen_once(&weak, &url, &channels, &meta).await {
                tracing::warn!(error = %e, "the postgres listening connection failed; reconnecting");
            }
            if weak.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// The channels listened on.
struct Channels {
    feed: String,
    catalog: String,
    queue: String,
}

async fn listen_once(
    weak: &std::sync::Weak<Inner>,
    url: &str,
    channels: &Channels,
    meta: &str,
) -> Result<(), tokio_postgres::Error> {
    let Channels { feed, catalog, queue } = channels;
    let mut config: tokio_postgres::Config = url.parse()?;
    config.application_name(LISTENER_NAME);
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(Ok((n.channel().to_owned(), n.payload().to_owned()))).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN {}; LISTEN {}; LISTEN {}",
            quote_ident(feed),
            quote_ident(catalog),
            quote_ident(queue)
        ))
        .await?;
    // Commits, declarations and new jobs made while not listening.
    let row = client.query_opt(&format!("SELECT value FROM {meta} WHERE name = 'seq'"), &[]).await?;
    {
        let Some(inner) = weak.upgrade() else { return Ok(()) };
        inner.clear_specs();
        inner.queue_wake.wake_local();
        if let Some(seq) = row.map(|r| r.try_get::<_, i64>(0)).transpose()? {
            inner.note_sequence(seq.max(0) as u64);
        }
    }
    let result = loop {
        // Wakes now and then to end when the backend is gone.
        let next = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
        let Some(inner) = weak.upgrade() else { break Ok(()) };
        match next {
            Err(_) => {
                if client.is_closed() {
                    break Ok(());
                }
            }
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(e),
            Ok(Some(Ok((channel, payload)))) => {
                if channel == *feed {
                    if let Ok(seq) = payload.parse::<u64>() {
                        inner.note_sequence(seq);
                    }
                } else if channel == *queue {
                    inner.queue_wake.heard(&payload);
                } else {
                    inner.clear_specs();
                }
            }
        }
    };
    driver.abort();
    result
}
