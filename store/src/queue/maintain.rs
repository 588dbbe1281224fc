//! Maintenance: promotion of due jobs, rescue of expired leases, pruning of old finished jobs, folding of
//! count entries. The maintenance thread runs [`JobQueue::maintain`] at the interval of
//! [`QueueOptions::maintenance_interval`](super::QueueOptions::maintenance_interval).

use crate::handle::WRITE_ATTEMPTS;

use super::counts::{self, Deltas};
use super::enqueue::Effect;
use super::error::QueueError;
use super::index;
use super::model::{job_key, Job, JobState, MaintenanceReport};
use super::JobQueue;

/// Jobs rescued or pruned per commit.
const BATCH: usize = 1000;

impl JobQueue {
    /// One pass of maintenance at the queue's clock's now: promotes due jobs, rescues expired leases,
    /// prunes old finished jobs, folds count entries.
    pub fn maintain(&self) -> Result<MaintenanceReport, QueueError> {
        let now = self.now_ms();
        let promoted = {
            let _promoting = self.inner.promoting.lock();
            self.promote(now)?
        };
        let _maintaining = self.inner.maintaining.lock();
        let rescued = self.rescue(now)?;
        let pruned = self.prune(now)?;
        for queue in counts::queues(self.store())? {
            counts::fold(self.store(), &self.inner.folding, &queue)?;
        }
        Ok(MaintenanceReport { promoted, rescued, pruned })
    }

    /// Rescues every running job whose lease expired by `now`: the attempt counts as failed ("lease
    /// expired"), so the job becomes retryable after its backoff, or discarded if it was its last attempt.
    /// Its worker's token stays the job's until the next claim, but the job is no longer running, so the
    /// worker can no longer complete or fail it.
    fn rescue(&self, now: i64) -> Result<u64, QueueError> {
        let mut rescued = 0;
        loop {
            let (ids, _) = index::until(self.store(), index::LEASE, &[], now, BATCH)?;
            if ids.is_empty() {
                return Ok(rescued);
            }
            let (n, _) = self.store().commit_with_retry(WRITE_ATTEMPTS, |tx| {
                let (mut deltas, mut effect) = (Deltas::default(), Effect::default());
                let mut n = 0;
                for id in &ids {
                    let Some(stored) = tx.get::<Job>(&job_key(*id))? else { continue };
                    let mut job = stored.doc;
                    if !job.rescue(self.backoff_of(&job.queue), now) {
                        continue;
                    }
                    deltas.moved(&job.queue, Some(JobState::Running), Some(job.state));
                    effect.note(&job);
                    tx.update(&job, stored.version)?;
                    n += 1;
                }
                deltas.stage(tx);
                tx.after_commit(self.on_commit(effect.woke, effect.due));
                Ok::<_, QueueError>(n)
            })?;
            rescued += n;
            if ids.len() < BATCH {
                return Ok(rescued);
            }
        }
    }

    /// Rescues every running job whose lease has expired (what the maintenance thread does at each pass);
    /// returns how many.
    pub fn rescue_expired(&self) -> Result<u64, QueueError> {
        let _maintaining = self.inner.maintaining.lock();
        self.rescue(self.now_ms())
    }

    /// Deletes completed jobs finished longer ago than the completed retention, and discarded and
    /// cancelled jobs finished longer ago than theirs: at most `prune_batch` jobs.
    fn prune(&self, now: i64) -> Result<u64, QueueError> {
        let opts = &self.inner.opts;
        let mut left = opts.prune_batch;
        let mut pruned = 0;
        for (state, retention) in [
            (JobState::Completed, opts.completed_retention),
            (JobState::Discarded, opts.discarded_retention),
            (JobState::Cancelled, opts.discarded_retention),
        ] {
            let cutoff = now.saturating_sub(retention.as_millis() as i64);
            while left > 0 {
                let prefix = [serde_json::Value::from(state.as_str())];
                let (ids, _) = index::until(self.store(), index::FINISHED, &prefix, cutoff, BATCH.min(left))?;
                if ids.is_empty() {
                    break;
                }
                let n = self.delete_finished(&ids, |job| job.finished_at_ms.is_some_and(|f| f <= cutoff))?;
                pruned += n;
                left = left.saturating_sub(ids.len());
                if ids.len() < BATCH || n == 0 {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    /// Prunes old finished jobs now (what the maintenance thread does at each pass); returns how many.
    pub fn prune_finished(&self) -> Result<u64, QueueError> {
        let _maintaining = self.inner.maintaining.lock();
        self.prune(self.now_ms())
    }

    /// Promotes every due scheduled or retryable job now (claims and the maintenance thread do it too);
    /// returns how many.
    pub fn promote_due(&self) -> Result<u64, QueueError> {
        let _promoting = self.inner.promoting.lock();
        self.promote(self.now_ms())
    }
}
