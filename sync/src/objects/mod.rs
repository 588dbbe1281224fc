//! Object stores (S3 and S3-compatible servers, local directories, anything `object_store` reaches):
//! checksummed snapshots with a manifest, change segments chained by hash, and restores to a sequence
//! number or a time; artifact objects' bytes by content address beside them. The layout is in `layout.rs`
//! and `docs/sync.md`.

mod blobs;
mod export;
mod layout;
mod location;
mod restore;
mod sink;

pub use export::{export_objects, ObjectExport, ObjectExportOptions};
pub use location::ObjectLocation;
pub use restore::{restore_objects, RestoreReport, RestoreTarget};

pub(crate) use blobs::{list_blobs, remote_sha256};
pub(crate) use layout::blob_name;
pub(crate) use restore::replay;
pub(crate) use sink::DigestSink;
