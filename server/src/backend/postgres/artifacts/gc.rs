//! Retention and garbage collection.
//!
//! Retention deletes, bucket by bucket, the rows of objects older than the bucket's `retention_days`, and
//! their figures, in one transaction per bucket.
//!
//! Garbage collection is a mark and sweep over the object store, on one server at a time (a session
//! advisory lock; another server's collection in progress makes this one return at once): the paths that
//! object and part rows refer to are read in one statement (one snapshot: a completion moving references
//! from parts to an object is seen before or after, never half-way), then every stored object under
//! `<prefix>/objects/` is listed. One that no row refers to and older than the grace period is marked
//! (`cairn_artifact_garbage`, with the time), and deleted by a collection at least the grace period after
//! it was marked. Bytes of an upload in flight are younger than the grace period, whichever server writes
//! them, so they stay until their row is committed; a read of an object deleted or overwritten meanwhile
//! has at least the grace period to finish before its bytes go.

use std::collections::{HashMap, HashSet};
use std::sync::PoisonError;

use cairn_store::artifacts::{ArtifactError, BlobHealth, GcReport};
use futures_util::TryStreamExt;

use super::super::schema::fnv;
use super::buckets::now_ms;
use super::{os, pg, Inner};

const DAY_MS: i64 = 86_400_000;

impl Inner {
    /// The session advisory lock that one collector holds at a time.
    fn gc_lock(&self) -> i64 {
        fnv(&[self.names.schema.as_bytes(), b"artifact-gc"]) as i64
    }

    pub(crate) fn expire(&self) -> Result<u64, ArtifactError> {
        self.block_on(async {
            let mut client = self.conn().await?;
            let sql =
                format!("SELECT name, retention_days FROM {} WHERE retention_days IS NOT NULL", self.table("buckets"));
            let buckets: Vec<(String, i32)> = client
                .query(&sql, &[])
                .await
                .map_err(pg)?
                .iter()
                .map(|r| Ok((r.try_get(0).map_err(pg)?, r.try_get(1).map_err(pg)?)))
                .collect::<Result<_, ArtifactError>>()?;
            let mut expired = 0u64;
            let now = now_ms();
            for (bucket, days) in buckets {
                let cutoff = now - i64::from(days) * DAY_MS;
                let tx = client.transaction().await.map_err(pg)?;
                match self.lock_bucket(&tx, &bucket).await {
                    Ok(_) => {}
                    Err(ArtifactError::NoSuchBucket(_)) => continue,
                    Err(e) => return Err(e),
                }
                let sql = format!(
                    "WITH gone AS (DELETE FROM {} WHERE bucket = $1 AND modified_ms < $2 RETURNING size)
                     SELECT count(*)::int8, coalesce(sum(size), 0)::int8 FROM gone",
                    self.table("objects")
                );
                let row = tx.query_one(&sql, &[&bucket, &cutoff]).await.map_err(pg)?;
                let (count, bytes): (i64, i64) = (row.try_get(0).map_err(pg)?, row.try_get(1).map_err(pg)?);
                self.add_stats(&tx, &bucket, -count, -bytes).await?;
                tx.commit().await.map_err(pg)?;
                expired += count.max(0) as u64;
            }
            Ok(expired)
        })
    }

    pub(crate) fn collect_garbage(&self) -> Result<GcReport, ArtifactError> {
        self.block_on(async {
            let client = self.conn().await?;
            let locked: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&self.gc_lock()])
                .await
                .map_err(pg)?
                .try_get(0)
                .map_err(pg)?;
            if !locked {
                tracing::debug!("another server is collecting the artifact store's garbage");
                return Ok(GcReport::default());
            }
            let result = self.sweep(&client).await;
            let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&self.gc_lock()]).await.map_err(pg);
            let (report, health) = result?;
            unlocked?;
            let mut m = self.maintenance.lock().unwrap_or_else(PoisonError::into_inner);
            m.health = BlobHealth { last_error: m.health.last_error.take(), ..health };
            Ok(report)
        })
    }

    /// The mark and the sweep, with the lock held.
    async fn sweep(&self, client: &tokio_postgres::Client) -> Result<(GcReport, BlobHealth), ArtifactError> {
        let sql = format!(
            "SELECT unnest(segment_paths) FROM {} UNION SELECT path FROM {}",
            self.table("objects"),
            self.table("parts")
        );
        let referenced: HashSet<String> = client
            .query(&sql, &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.try_get(0).map_err(pg))
            .collect::<Result<_, _>>()?;
        let garbage = self.table("garbage");
        let marked: HashMap<String, i64> = client
            .query(&format!("SELECT path, seen_ms FROM {garbage}"), &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| Ok((r.try_get(0).map_err(pg)?, r.try_get(1).map_err(pg)?)))
            .collect::<Result<_, ArtifactError>>()?;
        let now = now_ms();
        let grace_ms = i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX);
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(self.grace).unwrap_or_else(|_| chrono::Duration::days(365));
        let mut report = GcReport::default();
        let mut health = BlobHealth { last_gc_ms: Some(now), ..BlobHealth::default() };
        let mut listing = self.store.list(Some(&self.objects_prefix));
        let (mut doomed, mut to_mark, mut still_marked) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(meta) = listing.try_next().await.map_err(os)? {
            let (size, path) = (meta.size, meta.location.to_string());
            if referenced.contains(&path) {
                health.live_bytes += size;
            } else if meta.last_modified < cutoff {
                match marked.get(&path) {
                    Some(seen) if *seen <= now.saturating_sub(grace_ms) => {
                        doomed.push((meta.location, size));
                        continue;
                    }
                    Some(_) => still_marked.push(path),
                    None => to_mark.push(path),
                }
            }
            health.files += 1;
            health.disk_bytes += size;
        }
        drop(listing);
        let insert =
            format!("INSERT INTO {garbage} (path, seen_ms) SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING");
        client.execute(&insert, &[&to_mark, &now]).await.map_err(pg)?;
        for (location, size) in doomed {
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    report.files_removed += 1;
                    report.bytes_reclaimed += size;
                }
                Err(e) => return Err(os(e)),
            }
        }
        // Marks of what is gone (deleted above, or by hand), or referenced again (an upload that took longer
        // than the grace period from its first byte to its commit).
        let kept: HashSet<&String> = still_marked.iter().chain(&to_mark).collect();
        let forget: Vec<&String> = marked.keys().filter(|p| !kept.contains(p)).collect();
        client.execute(&format!("DELETE FROM {garbage} WHERE path = ANY($1)"), &[&forget]).await.map_err(pg)?;
        Ok((report, health))
    }
}
