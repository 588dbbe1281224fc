//! Cairn: an embedded, log-structured storage engine for the records of compute platforms.
//!
//! Writes go to a checksummed write-ahead log (concurrent committers share one `fdatasync`: group commit)
//! and to an in-memory ordered table; full memtables are flushed in the background to immutable sorted
//! tables (zstd-compressed blocks, bloom filters, read through `mmap`), which a background thread compacts
//! level by level. The live set of tables changes atomically through the manifest. Every byte read back
//! from disk is checked; a bad checksum is a [`StorageError::Corruption`] naming file and offset.
//!
//! ```
//! # fn main() -> Result<(), cairn::Error> {
//! use cairn::{Db, Durability, WriteBatch};
//! let dir = tempfile::tempdir().unwrap();
//! let db = Db::builder().durability(Durability::Immediate).memtable_size(8 << 20).open(dir.path())?;
//! let mut batch = WriteBatch::new();
//! batch.put(b"run/7/status", b"RUNNING").put(b"run/7/node", b"gpu-3");
//! db.write(batch)?;
//! let snapshot = db.snapshot();
//! db.delete(b"run/7/node")?;
//! assert_eq!(snapshot.get(b"run/7/node")?, Some(b"gpu-3".to_vec()));
//! assert_eq!(db.get(b"run/7/node")?, None);
//! for pair in db.range_rev(b"run/".as_slice()..b"run0".as_slice())? {
//!     let (key, value) = pair?;
//!     println!("{} = {}", String::from_utf8_lossy(&key), String::from_utf8_lossy(&value));
//! }
//! # Ok(()) }
//! ```
//!
//! The on-disk formats are specified in `docs/format/`; the design in `docs/design.md`.

mod batch;
mod clock;
mod collection;
mod compaction;
mod db;
mod domain;
mod error;
mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod io;
mod iter;
mod log;
mod manifest;
mod memtable;
mod options;
mod snapshot;
mod stats;
mod table;
mod version;

pub use batch::{Condition, WriteBatch, MAX_BATCH_LEN, MAX_KEY_LEN, MAX_VALUE_LEN};
pub use collection::{
    Change, ChangeOp, Collection, CollectionError, CollectionSpec, Committed, DynCollection, IndexSpec, Op, Page, Plan,
    Query, Record, RecordCacheStats, SnapshotRecords, Store, StoreOptions, StoreSnapshot, Stored, Transaction,
    MAX_PAGE,
};
pub use compaction::{CompactionPolicy, CompactionTask, LevelInfo, LeveledPolicy, TableInfo};
pub use db::{Check, CheckReport, Db, Finding, TornWal};
pub use domain::*;
pub use error::{Error, OpenError, Result, StorageError, WriteError};
pub use io::{CrashMode, FaultKind, FaultOp, FileLock, FsStorage, MappedFile, MemStorage, Storage, WritableFile};
pub use iter::{Iter, KeyValue, KeyValueRef};
pub use options::{Compression, Durability, Options, WriteOptions};
pub use snapshot::Snapshot;
pub use stats::{LevelStats, Stats};
