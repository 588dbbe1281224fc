//! The change feed in `cairn_changes`: reading it in commit order, a commit never split across pages, and
//! trimming it by age and size in the background (`[changes]`), the highest trimmed sequence kept in
//! `cairn_meta` (`trimmed_through`) so that a reader asking for older changes gets 410.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn_store::{Change, ChangeOp, ChangesError, FeedStats};
use serde_json::Value;

use super::schema::{CHANGES, META};
use super::{db_error, Inner};
use crate::http::ChangeRetention;
use crate::problem::ApiError;

impl Inner {
    /// Up to `limit` changes after `since` (more when the last commit has more events; at least one commit
    /// when any), or 410 if the feed was trimmed past `since`. The trim marker and the events are read by
    /// one statement, at one snapshot.
    pub(crate) async fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Change>, ApiError> {
        let mut client = self.pool.get().await?;
        let changes = self.names.table(CHANGES);
        let sql = format!(
            "WITH m AS (SELECT coalesce((SELECT value FROM {meta} WHERE name = 'trimmed_through'), 0) AS trimmed),
                  last AS (SELECT seq FROM {changes} WHERE seq > $1 ORDER BY seq, idx OFFSET $2 LIMIT 1)
             SELECT m.trimmed, c.seq, c.collection, c.id, c.op, c.version, c.at_ms, c.doc, c.prev_project
             FROM m LEFT JOIN LATERAL (
                 SELECT * FROM {changes}
                 WHERE seq > $1 AND seq <= coalesce((SELECT seq FROM last), 9223372036854775807)
                 ORDER BY seq, idx
             ) c ON true",
            meta = self.names.table(META),
        );
        let since_i = i64::try_from(since).unwrap_or(i64::MAX);
        let skip = limit.max(1) as i64 - 1;
        let rows = client.query_cached(&sql, &[&since_i, &skip]).await.map_err(db_error)?;
        let trimmed: i64 = rows.first().map(|r| r.try_get(0)).transpose().map_err(db_error)?.unwrap_or(0);
        let trimmed = trimmed.max(0) as u64;
        if since < trimmed {
            return Err(ChangesError::ChangesTrimmed { requested: since, trimmed_through: trimmed }.into());
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(seq) = row.try_get::<_, Option<i64>>(1).map_err(db_error)? else { continue };
            let op: String = row.try_get(4).map_err(db_error)?;
            let version: i64 = row.try_get(5).map_err(db_error)?;
            out.push(Change {
                seq: seq.max(0) as u64,
                collection: row.try_get(2).map_err(db_error)?,
                id: row.try_get(3).map_err(db_error)?,
                op: match op.as_str() {
                    "insert" => ChangeOp::Insert,
                    "update" => ChangeOp::Update,
                    _ => ChangeOp::Delete,
                },
                version: version.max(0) as u64,
                at_ms: row.try_get(6).map_err(db_error)?,
                doc: row.try_get::<_, Option<Value>>(7).map_err(db_error)?,
                prev_project: row.try_get::<_, Option<Value>>(8).map_err(db_error)?,
            });
        }
        // Within a page a commit is never split: the limit cut ends at the last event of its commit.
        Ok(out)
    }

    /// Trims the feed once: commits older than `retention_secs`, then the oldest commits while the feed holds
    /// more than `retention_bytes`. Returns the events removed.
    pub(crate) async fn trim_once(&self, retention: &ChangeRetention) -> Result<u64, ApiError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let changes = self.names.table(CHANGES);
        let oldest_kept_ms =
            super::write::now_ms() - (retention.retention_secs.min(i64::MAX as u64 / 1000) as i64) * 1000;
        let bytes = i64::try_from(retention.retention_bytes).unwrap_or(i64::MAX);
        // The highest sequence to trim: the newest commit older than the retention period, or the newest
        // commit past which the newer events exceed the size bound.
        let sql = format!(
            "SELECT greatest(
                 (SELECT max(seq) FROM {changes} WHERE at_ms < $1),
                 (SELECT max(seq) FROM (
                     SELECT seq, sum(bytes) OVER (ORDER BY seq DESC, idx DESC) AS newer FROM {changes}
                 ) sized WHERE newer > $2::int8)
             )"
        );
        let through: Option<i64> =
            tx.query_one(&sql, &[&oldest_kept_ms, &bytes]).await.map_err(db_error)?.try_get(0).map_err(db_error)?;
        let Some(through) = through else { return Ok(0) };
        let removed =
            tx.execute(&format!("DELETE FROM {changes} WHERE seq <= $1"), &[&through]).await.map_err(db_error)?;
        tx.execute(
            &format!(
                "INSERT INTO {} (name, value) VALUES ('trimmed_through', $1)
                 ON CONFLICT (name) DO UPDATE SET value = greatest({0}.value, EXCLUDED.value)",
                self.names.table(META)
            ),
            &[&through],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(removed)
    }

    /// The feed's figures (the counters of this server's trims; no consumers on this backend).
    pub(crate) async fn feed_stats(&self) -> Result<FeedStats, ApiError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT (SELECT coalesce(sum(bytes), 0)::int8 FROM {c}),
                            coalesce((SELECT value FROM {m} WHERE name = 'trimmed_through'), 0),
                            coalesce((SELECT max(seq) FROM {c}), 0)",
                    c = self.names.table(CHANGES),
                    m = self.names.table(META)
                ),
                &[],
            )
            .await
            .map_err(db_error)?;
        let get = |i: usize| row.try_get::<_, i64>(i).map(|v| v.max(0) as u64).map_err(db_error);
        Ok(FeedStats {
            bytes: get(0)?,
            trimmed_through: get(1)?,
            last_change: get(2)?,
            trimmed_events: self.trimmed_events.load(Ordering::Relaxed),
            trims: self.trims.load(Ordering::Relaxed),
            trim_errors: self.trim_errors.load(Ordering::Relaxed),
            consumers: Vec::new(),
        })
    }
}

/// Trims the feed every `trim_interval_ms` until the backend is dropped.
pub(crate) fn spawn_trimmer(inner: &Arc<Inner>, retention: ChangeRetention) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let every = Duration::from_millis(retention.trim_interval_ms.max(1));
        loop {
            tokio::time::sleep(every).await;
            let Some(inner) = weak.upgrade() else { return };
            match inner.trim_once(&retention).await {
                Ok(n) => {
                    inner.trims.fetch_add(1, Ordering::Relaxed);
                    inner.trimmed_events.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    inner.trim_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e.detail, "trimming the change feed failed");
                }
            }
        }
    });
}
