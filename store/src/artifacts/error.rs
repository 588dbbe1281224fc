//! What can go wrong in the artifact store.

use crate::error::{DeclareError, ReadError, StoreError, WriteError};

/// Why an artifact operation failed. Each variant but [`ArtifactError::Store`], [`ArtifactError::Backend`],
/// [`ArtifactError::Internal`] and [`ArtifactError::Read`] is the caller's to fix, and changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// No bucket of this name.
    #[error("no bucket {0}")]
    NoSuchBucket(String),
    /// A bucket of this name exists.
    #[error("bucket {0} already exists")]
    BucketExists(String),
    /// The bucket still holds objects (or unfinished multipart uploads).
    #[error("bucket {0} is not empty")]
    BucketNotEmpty(String),
    /// Not a valid bucket name (S3's rules: 3-63 lowercase letters, digits, '.' and '-').
    #[error("invalid bucket name {0:?}: 3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit")]
    InvalidBucketName(String),
    /// No object with this key.
    #[error("no object {key:?} in bucket {bucket}")]
    NoSuchKey {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Not a valid object key.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A range that starts at or after the end of the object.
    #[error("range not satisfiable: the object has {size} bytes")]
    InvalidRange {
        /// The object's size.
        size: u64,
    },
    /// No multipart upload with this id (for this bucket and key).
    #[error("no multipart upload {0}")]
    NoSuchUpload(String),
    /// A part that was not uploaded, or whose ETag differs, or a part number out of 1..=10000.
    #[error("invalid part: {0}")]
    InvalidPart(String),
    /// The parts of a completion are not in ascending order.
    #[error("the parts must be listed in ascending order of part number")]
    InvalidPartOrder,
    /// A part other than the last is smaller than the minimum part size.
    #[error("part {part} is smaller than the minimum part size of 5 MiB")]
    EntityTooSmall {
        /// The part number.
        part: u32,
    },
    /// A checksum the client sent differs from the bytes received; nothing was stored.
    #[error("bad digest: {0}")]
    BadDigest(String),
    /// An argument is not acceptable.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Reading the request body failed while streaming it.
    #[error("reading the body: {0}")]
    Read(#[source] std::io::Error),
    /// Storage failed, or stored bytes are corrupt (the message names file and offset).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A store outside the data directory failed: the PostgreSQL database or the object store that hold
    /// the artifacts on the server's PostgreSQL backend (the message names which, and what it said).
    #[error("{0}")]
    Backend(String),
    /// The record store refused a write the artifact store made (a conflict that outlasted every retry,
    /// or metadata that does not decode).
    #[error("artifact metadata: {0}")]
    Internal(String),
}

impl From<WriteError> for ArtifactError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Store(s) => Self::Store(s),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<ReadError> for ArtifactError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Store(s) => Self::Store(s),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<DeclareError> for ArtifactError {
    fn from(e: DeclareError) -> Self {
        match e {
            DeclareError::Store(s) => Self::Store(s),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<cairn_engine::StorageError> for ArtifactError {
    fn from(e: cairn_engine::StorageError) -> Self {
        Self::Store(StoreError::Storage(e))
    }
}
