//! What each operation does to one job: the steps of the state machine as methods of [`Job`], with the
//! refusals of `docs/queue.md`. [`JobQueue`](super::JobQueue) applies them to the records it reads in a
//! transaction; a queue kept elsewhere (the server's PostgreSQL backend) applies the same ones to the rows
//! it locks, so that both leave a job the same field for field.

use super::backoff::Backoff;
use super::error::QueueError;
use super::model::{AttemptError, Job, JobState, NewJob, Unique, DEFAULT_MAX_ATTEMPTS};
use super::states::check;

/// Longest error message kept per failed attempt, in bytes; longer ones are cut.
pub const MAX_ERROR_LEN: usize = 4096;

/// Keeps at most [`MAX_ERROR_LEN`] bytes of `error`, cut at a character boundary.
fn truncated(error: &str) -> String {
    let mut end = error.len().min(MAX_ERROR_LEN);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error.get(..end).unwrap_or_default().to_owned()
}

/// `now` plus `ms`, saturating.
fn after(now: i64, ms: u64) -> i64 {
    now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}

impl Job {
    /// The job an enqueue of `new` (checked already) adds at `now` with id `id`: available, or scheduled
    /// if its `run_at_ms` is after `now`.
    pub fn enqueued(id: u64, new: &NewJob, now: i64) -> Job {
        let due = new.run_at_ms.filter(|t| *t > now);
        Job {
            id,
            queue: new.queue.clone(),
            kind: new.kind.clone(),
            payload: new.payload.clone(),
            priority: new.priority,
            state: if due.is_some() { JobState::Scheduled } else { JobState::Available },
            attempt: 0,
            max_attempts: new.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            scheduled_at_ms: due.unwrap_or(now),
            due_at_ms: due,
            lease_until_ms: None,
            token: 0,
            worker: None,
            unique_key: new.unique.as_ref().map(|u| u.key.clone()),
            errors: Vec::new(),
            inserted_at_ms: now,
            attempted_at_ms: None,
            finished_at_ms: None,
        }
    }

    /// Whether this job, the latest enqueued with `unique.key` in its queue, holds the key for an enqueue
    /// at `now`: it is in one of `unique.states` and was inserted within `unique.period_ms`. The enqueue
    /// then returns it as a duplicate instead of adding a job.
    pub fn holds_unique(&self, unique: &Unique, now: i64) -> bool {
        let states = unique.states.as_deref().unwrap_or(&JobState::UNFINISHED);
        let recent = unique.period_ms.is_none_or(|p| self.inserted_at_ms >= now - p);
        states.contains(&self.state) && recent
    }

    /// Claims the job for `worker` at `now` with a lease of `lease_ms`, if it is available: it becomes
    /// running, its attempt and token counted. `false` (and nothing changed) if it is not available.
    pub fn claim(&mut self, worker: &str, lease_ms: u64, now: i64) -> bool {
        if self.state != JobState::Available {
            return false;
        }
        self.state = JobState::Running;
        self.attempt += 1;
        self.token += 1;
        self.worker = Some(worker.to_owned());
        self.attempted_at_ms = Some(now);
        self.lease_until_ms = Some(after(now, lease_ms));
        true
    }

    /// `Ok` if the job runs under `token` and may go to `to`.
    fn leased(&self, token: u64, to: JobState) -> Result<(), QueueError> {
        if self.token != token {
            return Err(QueueError::StaleToken { id: self.id, presented: token, current: self.token });
        }
        check(self.id, self.state, to)
    }

    /// Completes the job, running under `token`, at `now`. [`QueueError::StaleToken`] if `token` is not
    /// its current one, [`QueueError::InvalidTransition`] if it is not running.
    pub fn complete(&mut self, token: u64, now: i64) -> Result<(), QueueError> {
        self.leased(token, JobState::Completed)?;
        self.state = JobState::Completed;
        self.lease_until_ms = None;
        self.finished_at_ms = Some(now);
        Ok(())
    }

    /// Records a failure of the job, running under `token`, at `now` with `error` (its first
    /// [`MAX_ERROR_LEN`] bytes): retryable after `backoff`, or discarded if that was its last attempt.
    /// Refused as [`Job::complete`].
    pub fn fail(&mut self, token: u64, error: &str, backoff: &Backoff, now: i64) -> Result<(), QueueError> {
        let to = if self.attempt >= self.max_attempts { JobState::Discarded } else { JobState::Retryable };
        self.leased(token, to)?;
        self.failed(truncated(error), backoff, now);
        Ok(())
    }

    /// A running job's failure (or lease expiry) at `now`: retryable after the backoff, or discarded.
    fn failed(&mut self, error: String, backoff: &Backoff, now: i64) {
        self.errors.push(AttemptError { attempt: self.attempt, at_ms: now, error });
        self.lease_until_ms = None;
        if self.attempt >= self.max_attempts {
            self.state = JobState::Discarded;
            self.finished_at_ms = Some(now);
        } else {
            let seed = self.id.rotate_left(17) ^ u64::from(self.attempt) ^ self.token.rotate_left(40);
            let due = now.saturating_add(backoff.delay_ms(self.attempt, seed));
            self.state = JobState::Retryable;
            self.scheduled_at_ms = due;
            self.due_at_ms = Some(due);
        }
    }

    /// Puts the job, running under `token`, back to wait `delay_ms` from `now`: scheduled, its attempt not
    /// counted. Refused as [`Job::complete`].
    pub fn snooze(&mut self, token: u64, delay_ms: u64, now: i64) -> Result<(), QueueError> {
        self.leased(token, JobState::Scheduled)?;
        let due = after(now, delay_ms);
        self.state = JobState::Scheduled;
        self.attempt = self.attempt.saturating_sub(1);
        self.lease_until_ms = None;
        self.scheduled_at_ms = due;
        self.due_at_ms = Some(due);
        Ok(())
    }

    /// Moves the lease's end of the job, running under `token`, to `lease_ms` after `now` (the caller
    /// refuses a lease of 0 ms). [`QueueError::StaleToken`], or [`QueueError::InvalidTransition`] (to
    /// running) if it is not running.
    pub fn heartbeat(&mut self, token: u64, lease_ms: u64, now: i64) -> Result<(), QueueError> {
        if self.token != token {
            return Err(QueueError::StaleToken { id: self.id, presented: token, current: self.token });
        }
        if self.state != JobState::Running {
            return Err(QueueError::InvalidTransition { id: self.id, from: self.state, to: JobState::Running });
        }
        self.lease_until_ms = Some(after(now, lease_ms));
        Ok(())
    }

    /// Cancels the job at `now` if it is not finished.
    pub fn cancel(&mut self, now: i64) -> Result<(), QueueError> {
        check(self.id, self.state, JobState::Cancelled)?;
        self.state = JobState::Cancelled;
        self.lease_until_ms = None;
        self.due_at_ms = None;
        self.finished_at_ms = Some(now);
        Ok(())
    }

    /// Makes the finished job available again at `now`, with one more attempt allowed if it had used them
    /// all.
    pub fn retry(&mut self, now: i64) -> Result<(), QueueError> {
        check(self.id, self.state, JobState::Available)?;
        if !self.state.is_finished() {
            return Err(QueueError::InvalidTransition { id: self.id, from: self.state, to: JobState::Available });
        }
        self.state = JobState::Available;
        self.max_attempts = self.max_attempts.max(self.attempt + 1);
        self.finished_at_ms = None;
        self.scheduled_at_ms = now;
        Ok(())
    }

    /// Makes the job available if it is scheduled or retryable and due by `now`; `false` (and nothing
    /// changed) otherwise.
    pub fn promote(&mut self, now: i64) -> bool {
        let waiting = matches!(self.state, JobState::Scheduled | JobState::Retryable);
        if !waiting || self.due_at_ms.is_none_or(|d| d > now) {
            return false;
        }
        self.state = JobState::Available;
        self.due_at_ms = None;
        true
    }

    /// Rescues the job if it is running and its lease expired by `now`: the attempt counts as failed
    /// ("lease expired at … (worker …)"), so it becomes retryable after `backoff`, or discarded if that was
    /// its last attempt. `false` (and nothing changed) otherwise.
    pub fn rescue(&mut self, backoff: &Backoff, now: i64) -> bool {
        if self.state != JobState::Running || self.lease_until_ms.is_none_or(|l| l > now) {
            return false;
        }
        let until = self.lease_until_ms.unwrap_or(now);
        let error = format!("lease expired at {until} ms (worker {:?})", self.worker);
        self.failed(error, backoff, now);
        true
    }
}
