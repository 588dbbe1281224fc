//! Errors of the record store, one enum per family of operations (as redb does), so that a signature says
//! what can fail, and one superset, [`CollectionError`], that every one of them converts into.
//!
//! - [`StoreError`]: what any operation can meet underneath (storage, commit, undecodable data); alone from
//!   `Store::open`, `Store::with_db`, `Store::check_indexes`, `Store::consumers`, `Store::trim_changes`.
//! - [`ReadError`]: `get`, `query`, `query_each`, `count`, `explain`, `DynCollection::spec`,
//!   `Store::collection_dyn`, `StoreSnapshot::records` and `get`.
//! - [`WriteError`]: `insert`, `upsert`, `update`, `delete`, `DynCollection::write_one`, every
//!   [`Transaction`](crate::Transaction) method and its commit, `Store::transaction`, `transaction_with_retry`,
//!   `commit_with_retry`.
//! - [`ClaimError`]: `DynCollection::claim`, `Collection::claim`.
//! - [`DeclareError`]: `Store::declare`, `Store::collection`.
//! - [`ChangesError`]: `Store::changes_since`, `register_consumer`, `remove_consumer`, `ack`.
//!
//! A failed record write or transaction wrote nothing; maintenance (index builds, change trimming)
//! works in batches and may stop part way: an index build is finished at the next open, trimming is safe
//! to repeat.

use cairn_engine::{OpenError, StorageError};

/// The engine's commit error (the store's own [`WriteError`] is about record writes).
type CommitError = cairn_engine::WriteError;

/// What can fail underneath any operation of the store: the storage, a commit, or stored data that does not
/// decode. Returned alone by operations with nothing else to refuse (`Store::open`, `Store::with_db`,
/// `Store::check_indexes`, `Store::consumers`, `Store::trim_changes`); every other error enum holds it as its
/// `Store` variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage underneath failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The database could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The commit failed (I/O, closed or poisoned database, a key, value or batch over the engine's limits).
    #[error(transparent)]
    Write(CommitError),
    /// A stored record or event did not decode, or (from `check_indexes`, and queries meeting an index entry
    /// without its record) an index entry disagrees with the records.
    #[error("undecodable record at {key}: {reason}")]
    Undecodable {
        /// The engine key, escaped.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

impl From<CommitError> for StoreError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Storage(s) => StoreError::Storage(s),
            other => StoreError::Write(other),
        }
    }
}

impl StoreError {
    pub(crate) fn undecodable(key: &[u8], reason: impl Into<String>) -> Self {
        Self::Undecodable { key: key.escape_ascii().to_string(), reason: reason.into() }
    }
}

/// Why a read failed: `get`, `query`, `query_each`, `count` and `explain` of [`DynCollection`](crate::DynCollection)
/// and [`Collection`](crate::Collection), `DynCollection::spec`, `Store::collection_dyn`, and the reads of a
/// [`StoreSnapshot`](crate::StoreSnapshot).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Storage, or a stored record that does not decode.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The collection was never declared.
    #[error("unknown collection {0}")]
    UnknownCollection(String),
    /// A name or id is not acceptable.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A query cannot be answered as asked (no index serves it, a bad limit or cursor).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
}

/// Why a record write failed; nothing was written. Returned by `insert`, `upsert`, `update`, `delete` and
/// `DynCollection::write_one`, by every method of a [`Transaction`](crate::Transaction) (its reads
/// included) and its commit, and by `Store::transaction`, `transaction_with_retry` and `commit_with_retry`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Storage, the commit, or a stored record that does not decode.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The collection was never declared.
    #[error("unknown collection {0}")]
    UnknownCollection(String),
    /// An id or document is not acceptable.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// No record with this id (`update`, `delete`).
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
    /// A record the transaction read (or wrote) was changed by another commit after its snapshot, or an
    /// index build replaced its collection's declaration meanwhile. Nothing was written; retry the transaction.
    #[error("transaction conflict on {collection}/{id}: changed by a concurrent commit")]
    TxnConflict {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
    },
    /// A typed write declares its type's indexes first, and the collection has an index of one of their
    /// names over other fields.
    #[error("collection {0} already has an index of that name over other fields")]
    SpecMismatch(String),
}

impl WriteError {
    /// Whether retrying the operation may succeed (a transaction conflict).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::TxnConflict { .. })
    }
}

/// Why a claim failed (`DynCollection::claim`, `Collection::claim`). Losing a race is not an error: the
/// claim moves on to the next candidate; only losing every race of every round is ([`Contended`]).
///
/// [`Contended`]: ClaimError::Contended
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// Candidates matched, but concurrent writers changed each one the claim tried, round after round.
    /// Nothing was claimed; the claim may succeed if retried.
    #[error("claims on {collection} kept losing races to concurrent writers; retry")]
    Contended {
        /// The collection.
        collection: String,
    },
    /// Storage, the commit, or a stored record that does not decode.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The collection was never declared.
    #[error("unknown collection {0}")]
    UnknownCollection(String),
    /// The document `change` made is not acceptable.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A query cannot be answered as asked.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
}

impl ClaimError {
    /// Whether retrying the claim may succeed (it lost its races).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Contended { .. })
    }
}

/// Why a declaration failed (`Store::declare`, `Store::collection`). An index build cut short is finished
/// when the store is next opened, or by the next declaration of the collection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeclareError {
    /// Storage, a commit, or a stored record that does not decode.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A name or index is not acceptable.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A typed collection declares an index whose name is already used for other fields.
    #[error("collection {0} already has an index of that name over other fields")]
    SpecMismatch(String),
}

/// Why reading the change feed or moving a consumer failed (`Store::changes_since`, `register_consumer`,
/// `remove_consumer`, `ack`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangesError {
    /// Storage, a commit, or a stored event that does not decode.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A consumer name is not acceptable, or the consumer is not registered.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Changes after `requested` were already trimmed (through `trimmed_through`): the reader missed them.
    #[error("changes after {requested} were trimmed (through {trimmed_through})")]
    ChangesTrimmed {
        /// The sequence asked for.
        requested: u64,
        /// The last trimmed sequence.
        trimmed_through: u64,
    },
}

/// Any error of the record store: the union of the enums above, each of which converts into it, so that `?`
/// works in code that returns it whatever the operations it calls. Its variants are those of the enums;
/// `Store`'s are flattened (`Storage`, `Open`, `Write`, `Undecodable`).
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
    Write(CommitError),
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
    /// A claim found candidates but lost the race for each (see [`ClaimError::Contended`]).
    #[error("claims on {collection} kept losing races to concurrent writers; retry")]
    Contended {
        /// The collection.
        collection: String,
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

impl From<CommitError> for CollectionError {
    fn from(e: CommitError) -> Self {
        StoreError::from(e).into()
    }
}

impl CollectionError {
    /// Whether retrying the operation may succeed (a transaction conflict).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::TxnConflict { .. })
    }
}

impl From<StoreError> for CollectionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Storage(e) => Self::Storage(e),
            StoreError::Open(e) => Self::Open(e),
            StoreError::Write(e) => Self::Write(e),
            StoreError::Undecodable { key, reason } => Self::Undecodable { key, reason },
        }
    }
}

impl From<ReadError> for CollectionError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Store(e) => e.into(),
            ReadError::UnknownCollection(c) => Self::UnknownCollection(c),
            ReadError::Invalid(m) => Self::Invalid(m),
            ReadError::InvalidQuery(m) => Self::InvalidQuery(m),
        }
    }
}

impl From<WriteError> for CollectionError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Store(e) => e.into(),
            WriteError::UnknownCollection(c) => Self::UnknownCollection(c),
            WriteError::Invalid(m) => Self::Invalid(m),
            WriteError::NotFound { collection, id } => Self::NotFound { collection, id },
            WriteError::AlreadyExists { collection, id } => Self::AlreadyExists { collection, id },
            WriteError::Conflict { collection, id, expected, actual } => {
                Self::Conflict { collection, id, expected, actual }
            }
            WriteError::TxnConflict { collection, id } => Self::TxnConflict { collection, id },
            WriteError::SpecMismatch(c) => Self::SpecMismatch(c),
        }
    }
}

impl From<ClaimError> for CollectionError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Store(e) => e.into(),
            ClaimError::Contended { collection } => Self::Contended { collection },
            ClaimError::UnknownCollection(c) => Self::UnknownCollection(c),
            ClaimError::Invalid(m) => Self::Invalid(m),
            ClaimError::InvalidQuery(m) => Self::InvalidQuery(m),
        }
    }
}

impl From<DeclareError> for CollectionError {
    fn from(e: DeclareError) -> Self {
        match e {
            DeclareError::Store(e) => e.into(),
            DeclareError::Invalid(m) => Self::Invalid(m),
            DeclareError::SpecMismatch(c) => Self::SpecMismatch(c),
        }
    }
}

impl From<ChangesError> for CollectionError {
    fn from(e: ChangesError) -> Self {
        match e {
            ChangesError::Store(e) => e.into(),
            ChangesError::Invalid(m) => Self::Invalid(m),
            ChangesError::ChangesTrimmed { requested, trimmed_through } => {
                Self::ChangesTrimmed { requested, trimmed_through }
            }
        }
    }
}

/// Errors every per-operation enum takes from the engine, through [`StoreError`].
macro_rules! from_engine {
    ($($t:ty),*) => {$(
        impl From<StorageError> for $t {
            fn from(e: StorageError) -> Self {
                Self::Store(e.into())
            }
        }
        impl From<CommitError> for $t {
            fn from(e: CommitError) -> Self {
                Self::Store(e.into())
            }
        }
    )*};
}
from_engine!(ReadError, WriteError, ClaimError, DeclareError, ChangesError);

/// A name, id or document that is not acceptable: becomes the `Invalid` variant of the operation's error.
#[derive(Debug)]
pub(crate) struct Invalid(pub(crate) String);

/// A collection that was never declared: becomes the `UnknownCollection` variant of the operation's error.
#[derive(Debug)]
pub(crate) struct UnknownCollection(pub(crate) String);

macro_rules! from_refusal {
    ($refusal:ident => $($t:ident),*) => {$(
        impl From<$refusal> for $t {
            fn from(e: $refusal) -> Self {
                Self::$refusal(e.0)
            }
        }
    )*};
}
from_refusal!(Invalid => ReadError, WriteError, ClaimError, DeclareError, ChangesError, CollectionError);
from_refusal!(UnknownCollection => ReadError, WriteError, ClaimError, CollectionError);

impl From<DeclareError> for WriteError {
    /// A typed write declares its type's indexes first.
    fn from(e: DeclareError) -> Self {
        match e {
            DeclareError::Store(e) => Self::Store(e),
            DeclareError::Invalid(m) => Self::Invalid(m),
            DeclareError::SpecMismatch(c) => Self::SpecMismatch(c),
        }
    }
}

impl From<ReadError> for ClaimError {
    /// A claim queries for its candidates.
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Store(e) => Self::Store(e),
            ReadError::UnknownCollection(c) => Self::UnknownCollection(c),
            ReadError::Invalid(m) => Self::Invalid(m),
            ReadError::InvalidQuery(m) => Self::InvalidQuery(m),
        }
    }
}
