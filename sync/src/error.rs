//! Errors of export, import and verification.

use cairn_store::artifacts::ArtifactError;
use cairn_store::metrics::MetricsError;
use cairn_store::{ChangesError, ClaimError, CollectionError, DeclareError, ReadError, StoreError, WriteError};

/// Why an export, import, restore or verification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The local store failed.
    #[error("store: {0}")]
    Store(#[from] CollectionError),
    /// The local artifact store failed, or refused what a restore gave it.
    #[error("artifacts: {0}")]
    Artifacts(#[from] ArtifactError),
    /// An artifact object's bytes that an export must ship are no longer in the store (overwritten or
    /// deleted, then garbage collected) and no later version of the object supersedes them.
    #[error("artifact bytes gone: {0}")]
    BytesGone(String),
    /// The local store's metrics failed, or refused points an import gave them.
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
    /// PostgreSQL failed or refused a statement.
    #[error("postgres: {}", pg_detail(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The object store failed (after its retries).
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
    /// An object or row read back is damaged: a checksum mismatch or an undecodable format.
    #[error("corrupt {object}: {reason}")]
    Corrupt {
        /// The object (or table) that is damaged.
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The changes needed to reach the target are not all there (a missing or unchained segment).
    #[error("gap: {0}")]
    Gap(String),
    /// The request itself is wrong (a bad URL, a non-empty destination, a document that is not an object).
    #[error("{0}")]
    Invalid(String),
    /// An I/O error outside the store (a local directory object store, the terminal).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Each operation's error of the store is a [`SyncError::Store`].
macro_rules! store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for SyncError {
            fn from(e: $t) -> Self {
                Self::Store(e.into())
            }
        }
    )*};
}
store_error!(StoreError, ReadError, WriteError, ClaimError, DeclareError, ChangesError);

impl SyncError {
    pub(crate) fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Corrupt { object: object.into(), reason: reason.into() }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
}

/// PostgreSQL's own message (with detail) when the server sent one; the client's error otherwise.
fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => e.to_string(),
    }
}
