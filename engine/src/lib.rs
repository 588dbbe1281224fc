//! Cairn's key-value engine: an embedded, log-structured store of ordered byte keys and values.
//!
//! Writes go to a checksummed write-ahead log (concurrent committers share one `fdatasync`: group commit)
//! and to an in-memory ordered table; full memtables are flushed in the background to immutable sorted
//! tables (zstd-compressed blocks, bloom filters, read through `mmap`), which a background thread compacts
//! level by level. The live set of tables changes atomically through the manifest. Every byte read back
//! from disk is checked; a bad checksum is a [`StorageError::Corruption`] naming file and offset.
//!
//! What it is not: it knows nothing of documents, JSON, indexes or the network, and depends on no
//! serialization framework or async runtime. Collections, secondary indexes, versions and the change feed
//! are the record store's (crate `cairn-store`), built on this crate's public API alone; its extension
//! points are [`WriteBatch::put_commit_keyed`] and [`WriteBatch::put_commit_prefixed`] (values and keys
//! stamped with their commit's sequence), conditional commits ([`Db::write_if`] with [`Condition`]),
//! snapshots, and [`ClockCache`] (the block cache's eviction policy, for caches of decoded values).
//!
//! ```
//! # fn main() -> Result<(), cairn_engine::Error> {
//! use cairn_engine::{Db, Durability, WriteBatch};
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
mod blob;
mod clock;
mod compaction;
mod db;
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
mod prefetch;
mod snapshot;
mod stats;
mod table;
mod version;
mod wal;

pub use batch::{Condition, WriteBatch, MAX_BATCH_LEN, MAX_KEY_LEN, MAX_VALUE_LEN};
pub use blob::{
    BlobCheckReport, BlobFileInfo, BlobOptions, BlobPin, BlobReader, BlobRef, BlobStore, BlobWriter,
    BLOB_FORMAT_VERSION, BLOB_MAGIC, MAX_BLOB_CHUNK_SIZE, SMALL_BLOB_CHUNKS,
};
pub use clock::{Busy, ClockCache, Probed};
pub use compaction::{CompactionPolicy, CompactionTask, LevelInfo, LeveledPolicy, TableInfo};
pub use db::{Check, CheckReport, CheckpointInfo, Db, Finding, Snapshot, TornWal};
pub use error::{Error, OpenError, Result, StorageError, WriteError};
pub use io::{CrashMode, FaultKind, FaultOp, FileLock, FsStorage, MappedFile, MemStorage, Storage, WritableFile};
pub use iter::{Iter, KeyValue, KeyValueRef};
pub use options::{Durability, Options, WriteOptions};
pub use prefetch::prefetch;
pub use stats::{LevelStats, Stats};
pub use table::Compression;
