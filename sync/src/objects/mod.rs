//! Object stores (S3 and S3-compatible servers, local directories, anything `object_store` reaches):
//! checksummed snapshots with a manifest, change segments chained by hash, and restores to a sequence
//! number or a time. The layout is in `layout.rs` and `docs/sync.md`.

mod export;
mod layout;
mod location;
mod restore;
mod sink;

pub use export::{export_objects, ObjectExport, ObjectExportOptions};
pub use location::ObjectLocation;
pub use restore::{restore_objects, RestoreReport, RestoreTarget};

pub(crate) use restore::replay;
pub(crate) use sink::DigestSink;
