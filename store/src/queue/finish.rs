//! What a worker does with its job (complete, fail, snooze, heartbeat), what an operator does with any job
//! (cancel, retry, purge), and reads (get, list, counts).

use crate::handle::WRITE_ATTEMPTS;
use crate::txn::Transaction;

use super::counts::{self, Deltas};
use super::enqueue::Effect;
use super::error::QueueError;
use super::index::{entry_job, ready_prefix};
use super::model::{job_key, Job, JobPage, JobState, QueueCounts, UniqueRef};
use super::names::check_queue;
use super::JobQueue;

/// Most jobs a page of [`JobQueue::list`] holds.
const MAX_LIST: usize = 1000;

/// Stages the completion of job `id` under `token` in `tx`.
fn complete_in(
    tx: &mut Transaction<'_>,
    id: u64,
    token: u64,
    now: i64,
    deltas: &mut Deltas,
) -> Result<Job, QueueError> {
    let Some(stored) = tx.get::<Job>(&job_key(id))? else { return Err(QueueError::NotFound(id)) };
    let mut job = stored.doc;
    job.complete(token, now)?;
    tx.update(&job, stored.version)?;
    deltas.moved(&job.queue, Some(JobState::Running), Some(JobState::Completed));
    Ok(job)
}

impl JobQueue {
    /// Applies `change` to job `id` in a transaction (retried on conflicts), keeping counts and waking
    /// claims as the new state asks.
    fn change(
        &self,
        id: u64,
        mut change: impl FnMut(&mut Job, i64) -> Result<(), QueueError>,
    ) -> Result<Job, QueueError> {
        let (job, _) = self.store().commit_with_retry(WRITE_ATTEMPTS, |tx| {
            let now = self.now_ms();
            let Some(stored) = tx.get::<Job>(&job_key(id))? else { return Err(QueueError::NotFound(id)) };
            let before = stored.doc.state;
            let mut job = stored.doc;
            change(&mut job, now)?;
            tx.update(&job, stored.version)?;
            let mut deltas = Deltas::default();
            deltas.moved(&job.queue, Some(before), Some(job.state));
            deltas.stage(tx);
            let mut effect = Effect::default();
            effect.note(&job);
            tx.after_commit(self.on_commit(effect.woke, effect.due));
            Ok::<_, QueueError>(job)
        })?;
        Ok(job)
    }

    /// Marks job `id`, running under `token`, completed. [`QueueError::StaleToken`] if the job was claimed
    /// again since (its lease expired), [`QueueError::InvalidTransition`] if it is not running (rescued,
    /// cancelled, already completed).
    pub fn complete(&self, id: u64, token: u64) -> Result<Job, QueueError> {
        self.change(id, |job, now| job.complete(token, now))
    }

    /// Completes jobs, each `(id, token)` as [`JobQueue::complete`] does, in one commit. A job refused (a
    /// stale token, a job no longer running, one not found) does not stop the others: returns each one's
    /// outcome, in order. Fails whole only on storage errors.
    pub fn complete_batch(&self, jobs: &[(u64, u64)]) -> Result<Vec<Result<Job, QueueError>>, QueueError> {
        let (out, _) = self.store().commit_with_retry(WRITE_ATTEMPTS, |tx| {
            let now = self.now_ms();
            let mut deltas = Deltas::default();
            let mut out = Vec::with_capacity(jobs.len());
            for &(id, token) in jobs {
                match complete_in(tx, id, token, now, &mut deltas) {
                    Err(QueueError::Store(e)) => return Err(QueueError::Store(e)),
                    outcome => out.push(outcome),
                }
            }
            deltas.stage(tx);
            Ok::<_, QueueError>(out)
        })?;
        Ok(out)
    }

    /// Records a failure of job `id`, running under `token`, with `error`: the job becomes retryable after
    /// its queue's backoff, or discarded if that was its last attempt. Refused as [`JobQueue::complete`].
    pub fn fail(&self, id: u64, token: u64, error: &str) -> Result<Job, QueueError> {
        self.change(id, |job, now| {
            let backoff = self.backoff_of(&job.queue);
            job.fail(token, error, backoff, now)
        })
    }

    /// Puts job `id`, running under `token`, back to wait `delay_ms`: it becomes scheduled, and the
    /// attempt does not count (its `attempt` goes back by one). Refused as [`JobQueue::complete`].
    pub fn snooze(&self, id: u64, token: u64, delay_ms: u64) -> Result<Job, QueueError> {
        self.change(id, |job, now| job.snooze(token, delay_ms, now))
    }

    /// Extends the lease of job `id`, running under `token`, to `lease_ms` from now. Refused as
    /// [`JobQueue::complete`] (an expired lease can be extended while nobody claimed the job since and it
    /// was not rescued).
    pub fn heartbeat(&self, id: u64, token: u64, lease_ms: u64) -> Result<Job, QueueError> {
        if lease_ms == 0 {
            return Err(QueueError::Invalid("a lease must last at least 1 ms".into()));
        }
        self.change(id, |job, now| job.heartbeat(token, lease_ms, now))
    }

    /// Cancels job `id` if it is not finished; a running job's worker then finds it cancelled
    /// ([`QueueError::InvalidTransition`] on completion).
    pub fn cancel(&self, id: u64) -> Result<Job, QueueError> {
        self.change(id, |job, now| job.cancel(now))
    }

    /// Makes finished job `id` (discarded, cancelled or completed) available again at once, with one more
    /// attempt allowed if it had used them all.
    pub fn retry(&self, id: u64) -> Result<Job, QueueError> {
        self.change(id, |job, now| job.retry(now))
    }

    /// Deletes finished job `id` now, whatever its age; [`QueueError::NotFinished`] if it is not finished.
    pub fn purge(&self, id: u64) -> Result<(), QueueError> {
        self.store().commit_with_retry(WRITE_ATTEMPTS, |tx| {
            let Some(stored) = tx.get::<Job>(&job_key(id))? else { return Err(QueueError::NotFound(id)) };
            if !stored.doc.state.is_finished() {
                return Err(QueueError::NotFinished { id, state: stored.doc.state });
            }
            let mut deltas = Deltas::default();
            stage_delete(tx, &stored.doc, stored.version, &mut deltas)?;
            deltas.stage(tx);
            Ok::<_, QueueError>(())
        })?;
        Ok(())
    }

    /// Deletes every discarded job of `queue` (in commits of 1,000); returns how many.
    pub fn purge_discarded(&self, queue: &str) -> Result<u64, QueueError> {
        check_queue(queue)?;
        let mut purged = 0;
        loop {
            let page = self.list(queue, JobState::Discarded, None, MAX_LIST)?;
            if page.jobs.is_empty() {
                return Ok(purged);
            }
            purged += self.delete_finished(&page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), |_| true)?;
        }
    }

    /// Deletes the jobs of `ids` that are finished and that `keep_going` accepts, in one commit; returns
    /// how many.
    pub(crate) fn delete_finished(&self, ids: &[u64], keep_going: impl Fn(&Job) -> bool) -> Result<u64, QueueError> {
        let (n, _) = self.store().commit_with_retry(WRITE_ATTEMPTS, |tx| {
            let mut deltas = Deltas::default();
            let mut n = 0;
            for id in ids {
                let Some(stored) = tx.get::<Job>(&job_key(*id))? else { continue };
                if stored.doc.state.is_finished() && keep_going(&stored.doc) {
                    stage_delete(tx, &stored.doc, stored.version, &mut deltas)?;
                    n += 1;
                }
            }
            deltas.stage(tx);
            Ok::<_, QueueError>(n)
        })?;
        Ok(n)
    }

    /// The job with this id.
    pub fn get(&self, id: u64) -> Result<Option<Job>, QueueError> {
        Ok(self.store().collection::<Job>()?.get(&job_key(id))?.map(|s| s.doc))
    }

    /// Up to `limit` (at most 1,000) jobs of `queue` in `state`, in claim order (priority, then id),
    /// starting after cursor `after` (the `next` of the previous page).
    pub fn list(&self, queue: &str, state: JobState, after: Option<&str>, limit: usize) -> Result<JobPage, QueueError> {
        check_queue(queue)?;
        let limit = limit.clamp(1, MAX_LIST);
        let prefix = ready_prefix(queue, state);
        let start = match after {
            Some(cursor) => {
                let suffix = hex::decode(cursor).map_err(|_| QueueError::Invalid(format!("bad cursor {cursor:?}")))?;
                // Just past the entry the cursor names.
                [prefix.as_slice(), &suffix, &[0]].concat()
            }
            None => prefix.clone(),
        };
        let end = crate::keys::after_prefix(&prefix).unwrap_or_default();
        let jobs_handle = self.store().collection::<Job>()?;
        let snap = self.store().db().snapshot();
        let (mut jobs, mut last) = (Vec::new(), None);
        for pair in snap.range(start..end)? {
            let (key, value) = pair?;
            if jobs.len() == limit {
                let next = last.map(|k: Vec<u8>| hex::encode(k.get(prefix.len()..).unwrap_or_default()));
                return Ok(JobPage { jobs, next });
            }
            if let Some(job) = jobs_handle.get(&job_key(entry_job(&key, &value)?))? {
                jobs.push(job.doc);
            }
            last = Some(key);
        }
        Ok(JobPage { jobs, next: None })
    }

    /// The jobs of `queue` in each state, kept by every write: a read of a few entries.
    pub fn counts(&self, queue: &str) -> Result<QueueCounts, QueueError> {
        check_queue(queue)?;
        let (sum, entries) = counts::sum_at(&self.store().db().snapshot(), queue)?;
        if counts::wants_fold(entries) {
            counts::fold(self.store(), &self.inner.folding, queue)?;
        }
        Ok(QueueCounts::from_array(sum))
    }

    /// Every queue a job was ever enqueued to, by name.
    pub fn queues(&self) -> Result<Vec<String>, QueueError> {
        Ok(counts::queues(self.store())?)
    }
}

/// Stages the deletion of `job` (at `version`) and of its unique key's record if that names it.
pub(crate) fn stage_delete(
    tx: &mut Transaction<'_>,
    job: &Job,
    version: u64,
    deltas: &mut Deltas,
) -> Result<(), QueueError> {
    tx.delete::<Job>(&job_key(job.id), Some(version))?;
    if let Some(key) = &job.unique_key {
        let ref_id = UniqueRef::record_id(&job.queue, key);
        if let Some(held) = tx.get::<UniqueRef>(&ref_id)? {
            if held.doc.job == job.id {
                tx.delete::<UniqueRef>(&ref_id, Some(held.version))?;
            }
        }
    }
    deltas.moved(&job.queue, Some(job.state), None);
    Ok(())
}
