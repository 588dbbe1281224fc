//! The state machine: which transitions exist. `docs/queue.md` has the same table.

use super::error::QueueError;
use super::model::JobState::{self, *};

/// Every allowed transition.
pub const TRANSITIONS: [(JobState, JobState); 14] = [
    // Promotion at `run_at`.
    (Scheduled, Available),
    (Retryable, Available),
    // Claim.
    (Available, Running),
    // Completion, failure with attempts left, failure of the last attempt, snooze (and the same
    // outcomes of a rescue of an expired lease: retryable or discarded).
    (Running, Completed),
    (Running, Retryable),
    (Running, Discarded),
    (Running, Scheduled),
    // Cancellation of any unfinished job.
    (Scheduled, Cancelled),
    (Available, Cancelled),
    (Running, Cancelled),
    (Retryable, Cancelled),
    // Retry of a finished job.
    (Completed, Available),
    (Discarded, Available),
    (Cancelled, Available),
];

/// Whether the state machine allows `from` → `to`.
pub fn allowed(from: JobState, to: JobState) -> bool {
    TRANSITIONS.contains(&(from, to))
}

/// `Ok` if job `id` may go from `from` to `to`, else [`QueueError::InvalidTransition`].
pub(crate) fn check(id: u64, from: JobState, to: JobState) -> Result<(), QueueError> {
    if allowed(from, to) {
        Ok(())
    } else {
        Err(QueueError::InvalidTransition { id, from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_jobs_only_go_back_to_available_and_nothing_skips_running() {
        for from in JobState::ALL {
            assert!(!allowed(from, from), "{from} to itself");
            if from.is_finished() {
                for to in JobState::ALL {
                    assert_eq!(allowed(from, to), to == Available, "{from} to {to}");
                }
            }
            for to in [Completed, Retryable, Discarded] {
                assert_eq!(allowed(from, to), from == Running, "{from} to {to}");
            }
        }
        assert!(matches!(check(7, Completed, Running), Err(QueueError::InvalidTransition { id: 7, .. })));
    }
}
