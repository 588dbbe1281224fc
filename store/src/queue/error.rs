//! The queue's errors.

use crate::error::{DeclareError, StoreError, WriteError};

use super::model::JobState;

/// What a queue operation can fail with. A refused operation changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A request the queue cannot take (a bad queue name, priority, attempt count, unique key...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No job has this id (never enqueued, or pruned or purged).
    #[error("job {0} not found")]
    NotFound(u64),
    /// The fencing token presented is not the job's current one: its lease expired and the job was claimed
    /// again since.
    #[error("job {id}: token {presented} is stale (the job's token is {current})")]
    StaleToken {
        /// The job.
        id: u64,
        /// The token the caller presented.
        presented: u64,
        /// The job's current token.
        current: u64,
    },
    /// The state machine does not allow this transition (`docs/queue.md`): completing a job that is not
    /// running, retrying one that is not finished...
    #[error("job {id}: no transition from {from} to {to}")]
    InvalidTransition {
        /// The job.
        id: u64,
        /// Its state.
        from: JobState,
        /// The state asked for.
        to: JobState,
    },
    /// Only a finished job (completed, discarded or cancelled) can be purged.
    #[error("job {id} is {state}: only finished jobs can be purged")]
    NotFinished {
        /// The job.
        id: u64,
        /// Its state.
        state: JobState,
    },
    /// Concurrent writers kept changing the job(s) between read and commit, attempt after attempt.
    #[error("contended: {0}")]
    Contended(String),
    /// Storage failure, or corrupt data.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A queue kept elsewhere than in the record store (the server's PostgreSQL backend) failed: its
    /// database could not be reached or refused the statement.
    #[error("queue backend: {0}")]
    Backend(String),
}

impl From<WriteError> for QueueError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Store(e) => QueueError::Store(e),
            WriteError::TxnConflict { .. } | WriteError::Conflict { .. } => QueueError::Contended(e.to_string()),
            other => QueueError::Invalid(other.to_string()),
        }
    }
}

impl From<cairn_engine::StorageError> for QueueError {
    fn from(e: cairn_engine::StorageError) -> Self {
        QueueError::Store(e.into())
    }
}

impl From<DeclareError> for QueueError {
    fn from(e: DeclareError) -> Self {
        match e {
            DeclareError::Store(e) => QueueError::Store(e),
            other => QueueError::Invalid(other.to_string()),
        }
    }
}

impl From<crate::error::ReadError> for QueueError {
    fn from(e: crate::error::ReadError) -> Self {
        match e {
            crate::error::ReadError::Store(e) => QueueError::Store(e),
            other => QueueError::Invalid(other.to_string()),
        }
    }
}
