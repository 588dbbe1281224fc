//! The queue's collections and what names and keys it accepts.

use crate::validate::{validate_id, validate_name};

use super::error::QueueError;
use super::model::{ClaimRequest, NewJob, MAX_CLAIM_BATCH, MAX_PRIORITY};

/// The collection of jobs (id: the job id in 16 hex digits).
pub const JOBS: &str = "_queue_jobs";
/// The collection of unique keys (id: `queue/key`), each naming the job that holds it.
pub const UNIQUE: &str = "_queue_unique";

/// Longest unique key.
pub const MAX_UNIQUE_KEY_LEN: usize = 400;

/// Whether `collection` is one of the job queue's own, whose records only the queue writes.
pub fn is_queue_collection(collection: &str) -> bool {
    collection == JOBS || collection == UNIQUE
}

/// Checks a queue name: 1 to 64 ASCII letters, digits, `_` or `-`.
pub fn check_queue(queue: &str) -> Result<(), QueueError> {
    validate_name("queue", queue).map_err(|e| QueueError::Invalid(e.0))
}

/// Kinds and worker names: 1 to 256 bytes without control characters.
pub fn check_label(what: &str, s: &str) -> Result<(), QueueError> {
    if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
        return Err(QueueError::Invalid(format!("{what} {s:?} must be 1-256 bytes without control characters")));
    }
    Ok(())
}

/// Checks a job to enqueue: its queue, kind, priority, attempts and unique key.
pub fn check_new_job(job: &NewJob) -> Result<(), QueueError> {
    check_queue(&job.queue)?;
    check_label("kind", &job.kind)?;
    if job.priority > MAX_PRIORITY {
        return Err(QueueError::Invalid(format!("priority {} is over {MAX_PRIORITY}", job.priority)));
    }
    if job.max_attempts == Some(0) {
        return Err(QueueError::Invalid("max_attempts must be at least 1".into()));
    }
    if let Some(u) = &job.unique {
        if u.key.len() > MAX_UNIQUE_KEY_LEN {
            return Err(QueueError::Invalid(format!("a unique key has at most {MAX_UNIQUE_KEY_LEN} bytes")));
        }
        validate_id(&u.key).map_err(|e| QueueError::Invalid(format!("unique key: {}", e.0)))?;
        if u.period_ms.is_some_and(|p| p <= 0) {
            return Err(QueueError::Invalid("a unique period must be positive".into()));
        }
        if u.states.as_ref().is_some_and(Vec::is_empty) {
            return Err(QueueError::Invalid("a unique key needs at least one state".into()));
        }
    }
    Ok(())
}

/// Checks a claim: at least one queue, valid queue and worker names, a lease of at least 1 ms.
pub fn check_claim(request: &ClaimRequest) -> Result<(), QueueError> {
    if request.queues.is_empty() {
        return Err(QueueError::Invalid("a claim needs at least one queue".into()));
    }
    for q in &request.queues {
        check_queue(q)?;
    }
    check_label("worker", &request.worker)?;
    if request.lease_ms == 0 {
        return Err(QueueError::Invalid("a lease must last at least 1 ms".into()));
    }
    Ok(())
}

/// Checks a batch claim: a `limit` of 1 to [`MAX_CLAIM_BATCH`], then as [`check_claim`].
pub fn check_claim_batch(request: &ClaimRequest) -> Result<(), QueueError> {
    if request.limit == 0 || request.limit > MAX_CLAIM_BATCH {
        return Err(QueueError::Invalid(format!("a claim takes 1 to {MAX_CLAIM_BATCH} jobs")));
    }
    check_claim(request)
}
