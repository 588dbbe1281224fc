//! Maintenance: promotion of due jobs, rescue of expired leases, pruning of old finished jobs.
//!
//! A pass runs on one server at a time: it holds a session advisory lock of the schema's queue on its
//! connection, and does all its work on that connection. The background task tries the lock every
//! `maintenance_interval` and, when another server holds it, leaves the pass to that one; an explicit
//! [`QueueApi::maintain`](crate::backend::QueueApi::maintain) waits for it. Each part also locks its jobs
//! with `FOR UPDATE SKIP LOCKED` and checks them again under the lock (a rescue only takes a job still
//! running with its lease expired), so that a job is rescued or pruned once even if passes overlapped.

use std::sync::Weak;
use std::time::Duration;

use cairn_store::queue::{Job, JobState, MaintenanceReport, QueueError};

use super::super::pool::Pooled;
use super::super::schema::fnv;
use super::counts::Deltas;
use super::finish::DELETE_BATCH;
use super::rows::{self, COLUMNS};
use super::schema::JOBS;
use super::{Fail, Inner, Tx};

/// Leases rescued per transaction.
const RESCUE_BATCH: i64 = 1000;

/// The background task: a pass every `period`, unless another server is running one.
pub(crate) async fn task(inner: Weak<Inner>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        let Some(strong) = inner.upgrade() else { return };
        if let Err(e) = strong.pass(false).await {
            tracing::warn!(error = %e, "job queue maintenance failed; the next pass retries");
        }
    }
}

impl Inner {
    /// The session advisory lock a maintenance pass holds.
    fn maintenance_lock(&self) -> i64 {
        fnv(&[self.names.schema.as_bytes(), b"queue-maintain"]) as i64
    }

    /// One pass now, after any pass running on another server.
    pub(crate) fn maintain(&self) -> Result<MaintenanceReport, QueueError> {
        self.block_on(self.pass(true)).map(Option::unwrap_or_default)
    }

    /// One pass under the maintenance lock: waiting for the lock if `wait`, else `None` at once when
    /// another pass holds it.
    async fn pass(&self, wait: bool) -> Result<Option<MaintenanceReport>, QueueError> {
        let mut conn = self.conn().await?;
        let lock = self.maintenance_lock();
        if wait {
            conn.query_cached("SELECT pg_advisory_lock($1)", &[&lock]).await.map_err(super::pg)?;
        } else {
            let rows = conn.query_cached("SELECT pg_try_advisory_lock($1)", &[&lock]).await.map_err(super::pg)?;
            if !rows.first().map(|r| r.try_get::<_, bool>(0)).transpose().map_err(super::pg)?.unwrap_or(false) {
                return Ok(None);
            }
        }
        let result = self.work(&mut conn).await;
        let unlocked = conn.query_cached("SELECT pg_advisory_unlock($1)", &[&lock]).await.map_err(super::pg);
        let report = result?;
        unlocked?;
        Ok(Some(report))
    }

    /// The pass's parts, on `conn`.
    async fn work(&self, conn: &mut Pooled<'_>) -> Result<MaintenanceReport, Fail> {
        let now = self.opts.now_ms();
        let promoted = self.promote_all(conn, now).await?;
        let rescued = self.rescue(conn, now).await?;
        let pruned = self.prune(conn, now).await?;
        Ok(MaintenanceReport { promoted, rescued, pruned })
    }

    /// Rescues every running job whose lease expired by `now` ([`Job::rescue`]): retryable after its
    /// backoff, or discarded.
    async fn rescue(&self, conn: &mut Pooled<'_>, now: i64) -> Result<u64, Fail> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE state = 'running' AND lease_until_ms <= $1
             ORDER BY lease_until_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
            self.table(JOBS)
        );
        let mut rescued = 0;
        loop {
            let mut tx = Tx::begin(conn).await?;
            let found = tx.query(&sql, &[&now, &RESCUE_BATCH]).await?;
            let mut deltas = Deltas::default();
            let mut jobs = Vec::with_capacity(found.len());
            for row in &found {
                let mut job: Job = rows::job(row)?;
                if job.rescue(self.opts.backoff_of(&job.queue), now) {
                    deltas.moved(&job.queue, Some(JobState::Running), Some(job.state));
                    jobs.push(job);
                }
            }
            let writes: Vec<(&Job, bool)> = jobs.iter().map(|j| (j, true)).collect();
            self.write_jobs(&mut tx, &writes).await?;
            deltas.stage(self, &mut tx).await?;
            tx.commit().await?;
            rescued += jobs.len() as u64;
            if (found.len() as i64) < RESCUE_BATCH {
                return Ok(rescued);
            }
        }
    }

    /// Deletes completed jobs finished longer ago than the completed retention, and discarded and
    /// cancelled ones finished longer ago than theirs: at most the options' `prune_batch` jobs.
    async fn prune(&self, conn: &mut Pooled<'_>, now: i64) -> Result<u64, Fail> {
        let mut left = i64::try_from(self.opts.prune_limit()).unwrap_or(i64::MAX);
        let mut pruned = 0;
        for state in [JobState::Completed, JobState::Discarded, JobState::Cancelled] {
            let retention = self.opts.retention_of(state).unwrap_or(Duration::MAX);
            let cutoff = now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
            // The state is in the text, so that the planner picks the partial index that holds it.
            let sql = format!(
                "DELETE FROM {jobs} WHERE id IN (
                     SELECT id FROM {jobs} WHERE state = '{state}' AND finished_at_ms <= $1
                     ORDER BY finished_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED
                 ) RETURNING id, queue, state, unique_key",
                jobs = self.table(JOBS),
                state = state.as_str(),
            );
            while left > 0 {
                let batch = DELETE_BATCH.min(left);
                let n = self.delete_on(conn, &sql, &[&cutoff, &batch]).await?;
                pruned += n;
                left -= n as i64;
                if (n as i64) < batch {
                    break;
                }
            }
        }
        Ok(pruned)
    }
}
