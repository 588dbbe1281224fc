//! Errors, layered as in redb: a storage core shared by every operation, one enum per kind of operation
//! saying what can fail there, and a superset [`Error`] for callers who do not care to tell them apart.

use std::io;
use std::path::{Path, PathBuf};

/// A failure of the storage underneath: I/O, or bytes on disk that fail their checks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The operating system reported an error on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Bytes read from `file` at `offset` failed a checksum or did not decode.
    #[error("corruption in {} at offset {offset}: {reason}", file.display())]
    Corruption {
        /// The file holding the bad bytes.
        file: PathBuf,
        /// Byte offset in the file of the record, block or field that failed.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A blob file could not be removed: it is being appended to, or pinned.
    #[error("{} is in use: {reason}", file.display())]
    FileInUse {
        /// The file.
        file: PathBuf,
        /// Why it cannot be removed.
        reason: String,
    },
    /// A read asked for bytes `start..end` of a blob of `len` bytes.
    #[error("range {start}..{end} is not within a blob of {len} bytes")]
    OutOfRange {
        /// Start of the range asked for.
        start: u64,
        /// End of the range asked for.
        end: u64,
        /// The blob's length.
        len: u64,
    },
    /// The database was closed.
    #[error("the database is closed")]
    Closed,
    /// An earlier write, sync or background job failed, and the database has refused commits since
    /// ([`WriteError::Poisoned`]). [`Db::close`](crate::Db::close) reports it: what was written after the
    /// failure may not be durable, even if the syncs made while closing succeeded.
    #[error("the database failed earlier and refused writes since: {cause}")]
    Poisoned {
        /// The first failure.
        cause: String,
    },
}

impl StorageError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn corruption(file: &Path, offset: u64, reason: impl Into<String>) -> Self {
        Self::Corruption { file: file.to_path_buf(), offset, reason: reason.into() }
    }

    /// Whether this is a [`StorageError::Corruption`].
    pub fn is_corruption(&self) -> bool {
        matches!(self, Self::Corruption { .. })
    }
}

/// Why [`Db::open`](crate::Db::open) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Reading or writing the directory failed, or its contents are corrupt.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Another owner (this process or another) has the directory open.
    #[error("{} is locked by another owner", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// No database exists at the path and `create_if_missing` is off.
    #[error("no database at {}", path.display())]
    NotFound {
        /// The directory.
        path: PathBuf,
    },
    /// A database exists at the path and `error_if_exists` is on.
    #[error("a database already exists at {}", path.display())]
    AlreadyExists {
        /// The directory.
        path: PathBuf,
    },
    /// A file was written by a format version this build cannot read.
    #[error("{} has format version {found}; this build reads up to {supported}", file.display())]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version found in it.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOptions(String),
}

/// Why a write (put, delete, batch) failed. A failed write changed nothing that will be visible.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The write-ahead log could not be written or synced. The database now refuses writes until reopened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An earlier write, sync, flush or compaction failed; the database refuses writes until reopened.
    #[error("the database refuses writes after an earlier failure ({cause}); reopen it")]
    Poisoned {
        /// The earlier failure.
        cause: String,
    },
    /// A key was empty or longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    #[error("key of {len} bytes is not allowed (1 to {max} bytes)")]
    InvalidKey {
        /// The key's length.
        len: usize,
        /// The largest key allowed.
        max: usize,
    },
    /// A value was longer than [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN).
    #[error("value of {len} bytes exceeds the maximum of {max}")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The largest value allowed.
        max: usize,
    },
    /// A conditional write ([`Db::write_if`](crate::Db::write_if)) found that `key` was written after the
    /// sequence its condition named. Nothing was written.
    #[error("condition failed: key {} changed since the given sequence", String::from_utf8_lossy(key))]
    ConditionFailed {
        /// The key that changed.
        key: Vec<u8>,
    },
    /// A batch was larger than [`MAX_BATCH_LEN`](crate::MAX_BATCH_LEN) once encoded.
    #[error("batch of {len} bytes exceeds the maximum of {max}")]
    BatchTooLarge {
        /// The encoded length.
        len: usize,
        /// The largest batch allowed.
        max: usize,
    },
}

/// Any Cairn error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`StorageError`].
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// See [`OpenError`].
    #[error(transparent)]
    Open(#[from] OpenError),
    /// See [`WriteError`].
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl Error {
    /// Whether the root cause is corruption on disk.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Storage(e) | Error::Open(OpenError::Storage(e)) | Error::Write(WriteError::Storage(e)) => {
                e.is_corruption()
            }
            _ => false,
        }
    }
}

/// Result of a read.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
