//! Errors of the metrics store.

use crate::error::StoreError;

/// Why a metrics operation failed. A failed [`Metrics::log`](super::Metrics::log),
/// [`Metrics::delete_run`](super::Metrics::delete_run) or [`Metrics::expire_before`](super::Metrics::expire_before)
/// wrote nothing of what failed (each series is expired in a commit of its own).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The request is not acceptable (a name, a bound, a page size, a cursor); nothing was read or written.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A stored block or series entry failed its checksum or did not decode: no value is returned from it.
    #[error("corrupt metrics entry at key {key}, offset {offset}: {reason}")]
    Corruption {
        /// The engine key of the entry, escaped.
        key: String,
        /// Byte offset in the entry's value of the field that failed.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// Concurrent writers kept changing the same series; nothing was written.
    #[error("gave up after {attempts} attempts: concurrent writes to the same series")]
    Contention {
        /// Attempts made.
        attempts: usize,
    },
    /// The storage or a commit failed underneath.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Metrics kept elsewhere than in the record store (the server's PostgreSQL backend) failed: the
    /// database could not be reached or refused the statement.
    #[error("metrics backend: {0}")]
    Backend(String),
}

impl From<cairn_engine::StorageError> for MetricsError {
    fn from(e: cairn_engine::StorageError) -> Self {
        Self::Store(e.into())
    }
}

impl From<cairn_engine::WriteError> for MetricsError {
    fn from(e: cairn_engine::WriteError) -> Self {
        Self::Store(e.into())
    }
}

impl MetricsError {
    pub(crate) fn corruption(key: &[u8], offset: u64, reason: impl Into<String>) -> Self {
        Self::Corruption { key: key.escape_ascii().to_string(), offset, reason: reason.into() }
    }

    /// Whether this is a [`MetricsError::Corruption`].
    pub fn is_corruption(&self) -> bool {
        matches!(self, Self::Corruption { .. })
    }
}
