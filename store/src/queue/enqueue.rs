//! Enqueues: single, in batches, and inside a transaction of the caller's; unique keys.

use crate::handle::WRITE_ATTEMPTS;
use crate::txn::Transaction;

use super::counts::Deltas;
use super::error::QueueError;
use super::model::{job_key, Enqueued, Job, JobState, NewJob, UniqueRef};
use super::names::check_new_job;
use super::JobQueue;

/// What the jobs a transaction stages mean for waiting claims once it commits.
#[derive(Debug, Default)]
pub(crate) struct Effect {
    /// A job became available: wake waiting claims.
    pub(crate) woke: bool,
    /// The earliest time a job staged to wait becomes due.
    pub(crate) due: Option<i64>,
}

impl Effect {
    pub(crate) fn note(&mut self, job: &Job) {
        if job.state == JobState::Available {
            self.woke = true;
        }
        if let Some(due) = job.due_at_ms {
            self.due = Some(self.due.map_or(due, |d| d.min(due)));
        }
    }
}

impl JobQueue {
    /// Enqueues a job (or, if its unique key is held, returns the job holding it), durably.
    pub fn enqueue(&self, job: &NewJob) -> Result<Enqueued, QueueError> {
        let mut out = self.enqueue_batch(std::slice::from_ref(job))?;
        out.pop().ok_or_else(|| QueueError::Invalid("nothing enqueued".into()))
    }

    /// Enqueues jobs in one atomic commit, returning what each enqueue did, in order. Two jobs of the
    /// batch with the same unique key: the second returns the first. Refused whole if any job is invalid.
    pub fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, QueueError> {
        for job in jobs {
            check_new_job(job)?;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let (out, _) = self.store().commit_with_retry(WRITE_ATTEMPTS, |tx| {
            let now = self.now_ms();
            let (mut deltas, mut effect) = (Deltas::default(), Effect::default());
            let out = jobs
                .iter()
                .map(|job| self.stage_new(tx, job, now, &mut deltas, &mut effect))
                .collect::<Result<Vec<_>, _>>()?;
            deltas.stage(tx);
            tx.after_commit(self.on_commit(effect.woke, effect.due));
            Ok::<_, QueueError>(out)
        })?;
        Ok(out)
    }

    /// Adds the enqueue of `job` to the caller's transaction `tx` of this queue's store: the job commits
    /// with the transaction's other writes, or not at all. Waiting claims are woken once it commits. A
    /// concurrent enqueue of the same unique key makes the commit fail with
    /// [`WriteError::TxnConflict`](crate::WriteError::TxnConflict) (retry the transaction: it then finds
    /// the other job).
    pub fn enqueue_in(&self, tx: &mut Transaction<'_>, job: &NewJob) -> Result<Enqueued, QueueError> {
        check_new_job(job)?;
        let now = self.now_ms();
        let (mut deltas, mut effect) = (Deltas::default(), Effect::default());
        let out = self.stage_new(tx, job, now, &mut deltas, &mut effect)?;
        deltas.stage(tx);
        tx.after_commit(self.on_commit(effect.woke, effect.due));
        Ok(out)
    }

    /// Stages one enqueue (checked already).
    fn stage_new(
        &self,
        tx: &mut Transaction<'_>,
        new: &NewJob,
        now: i64,
        deltas: &mut Deltas,
        effect: &mut Effect,
    ) -> Result<Enqueued, QueueError> {
        let id = self.allocate_id();
        if let Some(unique) = &new.unique {
            // The unique key's record is read, and written: of two enqueues of one key at once, the second
            // to commit fails its check and, retried, finds the first's job.
            let ref_id = UniqueRef::record_id(&new.queue, &unique.key);
            if let Some(held) = tx.get::<UniqueRef>(&ref_id)? {
                if let Some(existing) = tx.get::<Job>(&job_key(held.doc.job))? {
                    if existing.doc.holds_unique(unique, now) {
                        return Ok(Enqueued { job: existing.doc, duplicate: true });
                    }
                }
            }
            tx.upsert(&UniqueRef { queue: new.queue.clone(), key: unique.key.clone(), job: id })?;
        }
        let job = Job::enqueued(id, new, now);
        tx.insert(&job)?;
        deltas.moved(&job.queue, None, Some(job.state));
        effect.note(&job);
        Ok(Enqueued { job, duplicate: false })
    }
}
