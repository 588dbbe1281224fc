//! The artifact store: buckets of objects (datasets, checkpoints, logs) whose bytes live in the engine's
//! blob files ([`cairn_engine::BlobStore`], `docs/format/blob.md`) and whose metadata are records of four
//! system collections of the record store (`_artifact_buckets`, `_artifact_objects`, `_artifact_uploads`,
//! `_artifact_parts`). This is key-value separation: the LSM holds small records that point into
//! append-only blob files. See `docs/artifacts.md`.
//!
//! An upload streams its body into a blob (memory does not grow with the object), syncs it, then commits the
//! object's record; the object is visible only once both are durable. A crash in between leaves bytes no
//! record points to, which garbage collection removes. Bucket statistics (objects, bytes) are kept by the
//! same commits (`stats.rs`). A background thread expires objects past their bucket's retention and
//! collects garbage: blob files no record points to are removed, and live blobs are copied out of files
//! that are mostly garbage (`gc.rs`). Exports and restores of the records carry the objects' bytes through
//! `transfer.rs`.
//!
//! The operations and their errors are those of the S3 API, which the server maps them onto.

mod buckets;
mod digest;
mod error;
mod gc;
mod model;
mod multipart;
mod names;
mod objects;
mod reader;
mod stats;
#[cfg(test)]
mod tests;
mod transfer;
mod uri;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_engine::{BlobOptions, BlobStore};
use parking_lot::{Mutex, RwLock};

use crate::periodic::Periodic;
use crate::record::{CollectionSpec, IndexSpec};
use crate::store::Store;

pub use digest::{multipart_etag, Digested, Digests};
pub use error::ArtifactError;
pub use model::{
    ArtifactCheckReport, BlobHealth, BucketInfo, BucketStats, GcReport, ListPage, ListRequest, ObjectMeta, PartInfo,
    PutOptions, UploadInfo,
};
pub use multipart::{check_part_number, new_upload_id, MAX_PART_NUMBER, MIN_PART_SIZE};
pub use names::{check_bucket, check_key, is_artifact_collection, BUCKETS, MAX_KEY_LEN, OBJECTS, PARTS, UPLOADS};
pub use objects::rolled_up;
pub use reader::ObjectReader;
pub use transfer::portable_document;
pub use uri::ObjectUri;

/// How an artifact store runs. Every setter documents its default.
#[derive(Debug, Clone)]
pub struct ArtifactOptions {
    blob: BlobOptions,
    maintenance_interval: Duration,
    gc_garbage_ratio: f64,
}

impl Default for ArtifactOptions {
    fn default() -> Self {
        Self { blob: BlobOptions::default(), maintenance_interval: Duration::from_secs(60), gc_garbage_ratio: 0.5 }
    }
}

impl ArtifactOptions {
    /// The blob files' options. Default: [`BlobOptions::default`].
    pub fn blob(mut self, blob: BlobOptions) -> Self {
        self.blob = blob;
        self
    }

    /// How often the background thread expires objects and collects garbage; zero runs no thread (call
    /// [`Artifacts::expire`] and [`Artifacts::collect_garbage`] yourself). Default: 60 s.
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = interval;
        self
    }

    /// A blob file whose share of garbage is at least this has its live blobs copied elsewhere and is
    /// removed; a file that is all garbage is always removed. The shared file that small blobs are appended
    /// to is sealed for this once it is an eighth of its full size long (32 MiB by default). Lower
    /// reclaims space sooner and copies more: reclaiming a byte copies up to `(1 - ratio) / ratio` live
    /// bytes. After a collection, blob files hold at most `1 / (1 - ratio)` times the live bytes, plus the
    /// shared file and files still being written or read. Default: 0.5 (at most twice the live bytes, up to
    /// one byte copied per byte reclaimed; each live blob moved costs a sync and a commit of its own).
    pub fn gc_garbage_ratio(mut self, ratio: f64) -> Self {
        self.gc_garbage_ratio = ratio.clamp(0.0, 1.0);
        self
    }
}

/// What the background thread last did, for [`Artifacts::health`].
#[derive(Debug, Default)]
struct Maintenance {
    live_bytes: u64,
    last_gc_ms: Option<i64>,
    last_error: Option<String>,
}

pub(crate) struct Inner {
    store: Store,
    blobs: BlobStore,
    opts: ArtifactOptions,
    /// Held shared by every commit that adds a reference to a blob, exclusively by garbage collection
    /// while it decides which files no record points to and removes them.
    references: RwLock<()>,
    /// Serializes folds of bucket statistics.
    folding: Mutex<()>,
    /// Held by garbage collection for a whole run, and by a checkpoint while it copies: no blob file that
    /// the checkpoint's records point to is removed before it is copied.
    collecting: Mutex<()>,
    maintenance: Mutex<Maintenance>,
}

impl Inner {
    fn new(store: Store, blobs: BlobStore, opts: ArtifactOptions) -> Self {
        Self {
            store,
            blobs,
            opts,
            references: RwLock::new(()),
            folding: Mutex::new(()),
            collecting: Mutex::new(()),
            maintenance: Mutex::new(Maintenance::default()),
        }
    }
}

/// A handle on an artifact store; cheap to clone, safe to share between threads. Every call blocks.
#[derive(Clone)]
pub struct Artifacts {
    inner: Arc<Inner>,
    /// The maintenance thread, stopped when the last handle drops.
    _guard: Option<Arc<Periodic>>,
}

impl std::fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifacts").field("blobs", &self.inner.blobs).finish_non_exhaustive()
    }
}

impl Artifacts {
    /// Opens the artifact store of `store`, its blob files in `blob_dir` (created if missing), declaring its
    /// collections on first use, and starts its maintenance thread.
    pub fn open(store: Store, blob_dir: &Path, options: ArtifactOptions) -> Result<Artifacts, ArtifactError> {
        let blobs = BlobStore::open(store.db().storage(), blob_dir, options.blob.clone())
            .map_err(|e| ArtifactError::Store(e.into()))?;
        for spec in [
            CollectionSpec::new(names::BUCKETS, vec![IndexSpec::new("project", &["project"])]),
            CollectionSpec::new(names::OBJECTS, vec![]),
            CollectionSpec::new(names::UPLOADS, vec![IndexSpec::new("bucket", &["bucket"])]),
            CollectionSpec::new(names::PARTS, vec![]),
        ] {
            if store.collections().iter().all(|c| c.name != spec.name) {
                store.declare(spec)?;
            }
        }
        let interval = options.maintenance_interval;
        let inner = Arc::new(Inner::new(store, blobs, options));
        let guard = if interval.is_zero() {
            None
        } else {
            let thread = Periodic::start("cairn-artifacts", &inner, interval, maintain)
                .map_err(|source| cairn_engine::StorageError::Io { path: blob_dir.to_path_buf(), source })?;
            Some(Arc::new(thread))
        };
        Ok(Artifacts { inner, _guard: guard })
    }

    /// An artifact store for [`check_store`](crate::check_store): nothing declared, no thread started.
    pub(crate) fn open_for_check(store: Store, blob_dir: &Path) -> Result<Artifacts, ArtifactError> {
        let blobs = BlobStore::open(store.db().storage(), blob_dir, BlobOptions::default())
            .map_err(|e| ArtifactError::Store(e.into()))?;
        let inner = Arc::new(Inner::new(store, blobs, ArtifactOptions::default()));
        Ok(Artifacts { inner, _guard: None })
    }

    /// A consistent copy of the store and its artifacts in `dest`, a new or empty directory: the database's
    /// checkpoint ([`Db::checkpoint`](cairn_engine::Db::checkpoint)), then every blob file into
    /// [`blob_dir`]`(dest)`, with garbage collection held off meanwhile, so that every blob the copied
    /// records point to is in the copy. Returns the checkpoint's description and the blob files and bytes
    /// copied.
    /// Fails as [`Db::checkpoint`](cairn_engine::Db::checkpoint) does (`dest` not empty, storage errors).
    pub fn checkpoint(&self, dest: &Path) -> Result<(cairn_engine::CheckpointInfo, u64, u64), cairn_engine::Error> {
        let _no_collection = self.inner.collecting.lock();
        let info = self.inner.store.db().checkpoint(dest)?;
        let (files, bytes) = self.inner.blobs.copy_to(&blob_dir(&info.dir))?;
        Ok((info, files, bytes))
    }

    /// The record store underneath.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The blob files underneath.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// The blob store's state: files, disk and live bytes, the last collection and the last background
    /// error.
    pub fn health(&self) -> BlobHealth {
        let m = self.inner.maintenance.lock();
        let files = self.inner.blobs.files();
        BlobHealth {
            files: files.len() as u64,
            disk_bytes: files.iter().map(|f| f.len).sum(),
            live_bytes: m.live_bytes,
            last_gc_ms: m.last_gc_ms,
            last_error: m.last_error.clone(),
        }
    }
}

/// A round of the maintenance thread: retention, then garbage collection.
fn maintain(inner: Arc<Inner>) {
    let artifacts = Artifacts { inner, _guard: None };
    let result = artifacts.expire().and_then(|_| artifacts.collect_garbage());
    artifacts.inner.maintenance.lock().last_error = result.err().map(|e| e.to_string());
}

/// The directory of a data directory's blob files, where `cairn serve` keeps them.
pub fn blob_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("blobs")
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    crate::clock::now_ms()
}
