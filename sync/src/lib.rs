//! Export and import of Cairn collections and metrics with PostgreSQL and object stores (S3, S3-compatible
//! servers, local directories).
//!
//! * **PostgreSQL** ([`export_postgres`], [`import_postgres`], [`import_postgres_table`]): one table per
//!   collection, loaded in bulk through binary `COPY` and kept up to date from the change feed, with the
//!   resume cursor stored in PostgreSQL in the same transaction as the changes it covers; the metrics in a
//!   table of points, kept up to date series by series.
//! * **Object stores** ([`export_objects`], [`restore_objects`]): checksummed snapshots (records and
//!   metrics) with a manifest, then change segments chained by hash; a restore replays them to any sequence
//!   number or time and fails on any gap or checksum mismatch.
//! * **Artifacts**: the bytes of the artifact store's objects travel with their records, by content
//!   address, uploaded once per content; a restore streams them back and checks their SHA-256.
//! * **Verification** ([`verify_postgres`], [`verify_objects`]): counts and per-record and per-series hashes
//!   compared, and the artifact objects' bytes looked up at an object store location.
//!
//! Layouts and guarantees: `docs/sync.md`. Built on the record store (`cairn-store`) alone; the engine and
//! the store stay synchronous, this crate runs on tokio. What it is not: no server (the `cairn export`,
//! `import` and `verify` commands of `cairn-server` call it) and no replication protocol of its own.

mod digest;
mod error;
mod follow;
mod metrics;
mod objects;
mod pg;
mod progress;
mod verify;

pub use digest::{record_digest, record_digest_in, Digest};
pub use error::SyncError;
pub use objects::{
    export_objects, restore_objects, ObjectExport, ObjectExportOptions, ObjectLocation, RestoreReport, RestoreTarget,
};
pub use pg::{
    export_postgres, import_postgres, import_postgres_table, PgExportOptions, PgExportReport, PgImportReport,
    TableMapping,
};
pub use progress::Progress;
pub use verify::{verify_objects, verify_postgres, BlobCheck, Difference, SeriesDifference, VerifyReport};

/// A flag that asks a `follow` loop to stop after its current step: set it from a signal handler.
pub type StopFlag = tokio::sync::watch::Receiver<bool>;

/// The collections an export, a replica and `verify` carry: every one but the job queue's (`_queue_*`),
/// whose records are working state rewritten at every step of a job and written without change events
/// (`docs/queue.md`). `cairn backup` copies them with the rest of the data directory.
pub(crate) fn exported(specs: Vec<cairn_store::CollectionSpec>) -> Vec<cairn_store::CollectionSpec> {
    specs.into_iter().filter(|s| !cairn_store::queue::is_queue_collection(&s.name)).collect()
}
