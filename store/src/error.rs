//! Errors of collection operations.

use cairn_engine::{OpenError, StorageError, WriteError};

/// Why a collection operation failed. A failed record write or transaction wrote nothing; maintenance
/// (`declare` re-indexing, change trimming) works in batches and may stop part way, and is safe to repeat.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectionError {
    /// The storage underneath failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The database could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The commit failed (I/O, closed or poisoned database).
    #[error(transparent)]
    Write(WriteError),
    /// No record with this id.
    #[error("{collection}/{id} not found")]
    NotFound {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
    },
    /// `insert` found a record with this id.
    #[error("{collection}/{id} already exists")]
    AlreadyExists {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
    },
    /// The stored version differs from the expected one (`actual` is `None` if the record is gone).
    #[error("{collection}/{id}: expected version {expected}, found {}", actual.map_or("none".to_owned(), |v| v.to_string()))]
    Conflict {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
        /// The version the caller expected.
        expected: u64,
        /// The version stored.
        actual: Option<u64>,
    },
    /// A record a transaction read (or wrote) was changed by another commit after the transaction's
    /// snapshot. Nothing was written; retry the transaction.
    #[error("transaction conflict on {collection}/{id}: changed by a concurrent commit")]
    TxnConflict {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
    },
    /// The collection was never declared.
    #[error("unknown collection {0}")]
    UnknownCollection(String),
    /// A typed collection declares an index whose name is already used for other fields.
    #[error("collection {0} already has an index of that name over other fields")]
    SpecMismatch(String),
    /// A name, id or document is not acceptable.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A query cannot be answered as asked.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// Changes after `requested` were already trimmed (through `trimmed_through`): the reader missed them.
    #[error("changes after {requested} were trimmed (through {trimmed_through})")]
    ChangesTrimmed {
        /// The sequence asked for.
        requested: u64,
        /// The last trimmed sequence.
        trimmed_through: u64,
    },
    /// A stored record or event did not decode, or (from `check_indexes`) an index entry disagrees with the
    /// records.
    #[error("undecodable record at {key}: {reason}")]
    Undecodable {
        /// The engine key, escaped.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

impl From<WriteError> for CollectionError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Storage(s) => CollectionError::Storage(s),
            other => CollectionError::Write(other),
        }
    }
}

impl CollectionError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    pub(crate) fn undecodable(key: &[u8], reason: impl Into<String>) -> Self {
        Self::Undecodable { key: key.escape_ascii().to_string(), reason: reason.into() }
    }

    /// Whether retrying the operation may succeed (a transaction conflict).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::TxnConflict { .. })
    }
}
