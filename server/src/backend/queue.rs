//! The job queue as the `/v1/queue` routes and `/metrics` call it: the [`QueueApi`] trait, with two
//! implementations, the embedded store's [`JobQueue`] (jobs as records of the data directory's store) and
//! the PostgreSQL backend's [`PostgresQueue`](super::PostgresQueue) (jobs as rows claimed with
//! `FOR UPDATE SKIP LOCKED`). Both answer with the store's model types and [`QueueError`], so that one
//! mapping turns failures into problem documents, and one conformance suite (`server/tests/queue.rs`)
//! holds both to the semantics of `docs/queue.md`.
//!
//! Every method blocks (a claim with `wait_ms` for up to that long): callers run them on tokio's blocking
//! pool.

use std::sync::Arc;

use cairn_store::queue::{
    ClaimRequest, Enqueued, Job, JobPage, JobQueue, JobState, MaintenanceReport, NewJob, QueueCounts, QueueError,
};

/// The operations of a job queue, as [`JobQueue`]'s methods of the same names (see them for what each does
/// and how it fails).
pub trait QueueApi: Send + Sync + 'static {
    /// Adds a job, or returns the job holding its unique key.
    fn enqueue(&self, job: &NewJob) -> Result<Enqueued, QueueError>;
    /// Adds jobs in one commit; all or none.
    fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, QueueError>;
    /// Claims up to `request.limit` jobs in one commit, waiting up to `request.wait_ms` for one.
    fn claim_batch(&self, request: &ClaimRequest) -> Result<Vec<Job>, QueueError>;
    /// Completes a running job whose token is `token`.
    fn complete(&self, id: u64, token: u64) -> Result<Job, QueueError>;
    /// Completes jobs in one commit, each refused or not on its own.
    fn complete_batch(&self, jobs: &[(u64, u64)]) -> Result<Vec<Result<Job, QueueError>>, QueueError>;
    /// Records a failed attempt: retryable after a backoff, or discarded after the last attempt.
    fn fail(&self, id: u64, token: u64, error: &str) -> Result<Job, QueueError>;
    /// Puts a running job back, scheduled `delay_ms` from now; the attempt does not count.
    fn snooze(&self, id: u64, token: u64, delay_ms: u64) -> Result<Job, QueueError>;
    /// Extends a running job's lease to `lease_ms` from now.
    fn heartbeat(&self, id: u64, token: u64, lease_ms: u64) -> Result<Job, QueueError>;
    /// Cancels an unfinished job.
    fn cancel(&self, id: u64) -> Result<Job, QueueError>;
    /// Makes a finished job available again.
    fn retry(&self, id: u64) -> Result<Job, QueueError>;
    /// Deletes a finished job.
    fn purge(&self, id: u64) -> Result<(), QueueError>;
    /// Deletes every discarded job of a queue; returns how many.
    fn purge_discarded(&self, queue: &str) -> Result<u64, QueueError>;
    /// A job by id.
    fn get(&self, id: u64) -> Result<Option<Job>, QueueError>;
    /// A page of a queue's jobs in one state, in claim order.
    fn list(&self, queue: &str, state: JobState, after: Option<&str>, limit: usize) -> Result<JobPage, QueueError>;
    /// A queue's jobs in each state, kept on write.
    fn counts(&self, queue: &str) -> Result<QueueCounts, QueueError>;
    /// Every queue a job was enqueued to, by name.
    fn queues(&self) -> Result<Vec<String>, QueueError>;
    /// One pass of maintenance: promotes due jobs, rescues expired leases, prunes old finished jobs.
    fn maintain(&self) -> Result<MaintenanceReport, QueueError>;
}

impl QueueApi for JobQueue {
    fn enqueue(&self, job: &NewJob) -> Result<Enqueued, QueueError> {
        JobQueue::enqueue(self, job)
    }
    fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, QueueError> {
        JobQueue::enqueue_batch(self, jobs)
    }
    fn claim_batch(&self, request: &ClaimRequest) -> Result<Vec<Job>, QueueError> {
        JobQueue::claim_batch(self, request)
    }
    fn complete(&self, id: u64, token: u64) -> Result<Job, QueueError> {
        JobQueue::complete(self, id, token)
    }
    fn complete_batch(&self, jobs: &[(u64, u64)]) -> Result<Vec<Result<Job, QueueError>>, QueueError> {
        JobQueue::complete_batch(self, jobs)
    }
    fn fail(&self, id: u64, token: u64, error: &str) -> Result<Job, QueueError> {
        JobQueue::fail(self, id, token, error)
    }
    fn snooze(&self, id: u64, token: u64, delay_ms: u64) -> Result<Job, QueueError> {
        JobQueue::snooze(self, id, token, delay_ms)
    }
    fn heartbeat(&self, id: u64, token: u64, lease_ms: u64) -> Result<Job, QueueError> {
        JobQueue::heartbeat(self, id, token, lease_ms)
    }
    fn cancel(&self, id: u64) -> Result<Job, QueueError> {
        JobQueue::cancel(self, id)
    }
    fn retry(&self, id: u64) -> Result<Job, QueueError> {
        JobQueue::retry(self, id)
    }
    fn purge(&self, id: u64) -> Result<(), QueueError> {
        JobQueue::purge(self, id)
    }
    fn purge_discarded(&self, queue: &str) -> Result<u64, QueueError> {
        JobQueue::purge_discarded(self, queue)
    }
    fn get(&self, id: u64) -> Result<Option<Job>, QueueError> {
        JobQueue::get(self, id)
    }
    fn list(&self, queue: &str, state: JobState, after: Option<&str>, limit: usize) -> Result<JobPage, QueueError> {
        JobQueue::list(self, queue, state, after, limit)
    }
    fn counts(&self, queue: &str) -> Result<QueueCounts, QueueError> {
        JobQueue::counts(self, queue)
    }
    fn queues(&self) -> Result<Vec<String>, QueueError> {
        JobQueue::queues(self)
    }
    fn maintain(&self) -> Result<MaintenanceReport, QueueError> {
        JobQueue::maintain(self)
    }
}

/// A job queue as the server holds it. Cheap to clone.
pub type QueueStore = Arc<dyn QueueApi>;
