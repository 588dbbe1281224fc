//! The artifact store on the PostgreSQL backend: buckets, objects, multipart uploads and parts are rows of
//! four tables of the backend's schema (`schema.rs`), and the objects' bytes are objects of an object store
//! (S3 or any S3-compatible server, a local directory) under a configured prefix, each under a unique name
//! written once and never overwritten (`bytes.rs`). Several servers on one database serve the same buckets.
//!
//! A write streams its body into a new stored object, computing and checking its digests, then commits its
//! row and the change of its bucket's statistics in one transaction: an object is visible only once both
//! are durable. Bytes no row refers to any more (deleted, overwritten, aborted, or written by a server
//! that failed before committing) are removed by garbage collection (`gc.rs`), a mark and sweep that
//! leaves alone anything younger than a grace period, so that an upload in flight on any server is never
//! collected, deletes what it marked only a grace period later, so that a read in flight finishes, and runs
//! on one server at a time (a PostgreSQL advisory lock). See `docs/artifacts.md`.
//!
//! Every method of [`ArtifactApi`] blocks: it drives the asynchronous PostgreSQL and object-store clients
//! on the runtime the store was opened on ([`tokio::runtime::Handle::block_on`]), and must be called from
//! a thread outside it (tokio's blocking pool), as the server does.

mod buckets;
mod bytes;
mod gc;
mod multipart;
mod objects;
mod schema;

pub(crate) use schema::TABLES;

use std::future::Future;
use std::io::Read;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use cairn_store::artifacts::{
    ArtifactError, BlobHealth, BucketInfo, BucketStats, GcReport, ListPage, ListRequest, ObjectMeta, PartInfo,
    PutOptions, UploadInfo,
};
use object_store::path::Path;
use object_store::ObjectStore;

use super::pool::{Pool, Pooled};
use super::schema::Names;
use crate::backend::{ArtifactApi, ObjectRead};

/// How the PostgreSQL backend's artifact store runs. Every field documents its default.
#[derive(Debug, Clone)]
pub struct PostgresArtifactOptions {
    /// `postgres://user@host:port/database`: the backend's database.
    pub url: String,
    /// The schema of the backend's tables, where the artifact tables go too. Default: `public`.
    pub schema: String,
    /// Connections kept for the artifact store (apart from the records'). Default: 8.
    pub pool_size: usize,
    /// Stored bytes younger than this are never collected, referenced or not (longer than any upload takes
    /// from its first byte to its commit), and unreferenced bytes are deleted this long after a collection
    /// first found them so (longer than any read). Default: 1 hour.
    pub gc_grace: Duration,
    /// How often a background task expires objects past their bucket's retention and collects garbage;
    /// zero runs none. Default: 60 s.
    pub maintenance_interval: Duration,
}

impl PostgresArtifactOptions {
    /// The defaults for the database `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            schema: "public".to_owned(),
            pool_size: 8,
            gc_grace: Duration::from_secs(3600),
            maintenance_interval: Duration::from_secs(60),
        }
    }
}

/// What the last collection found, for [`ArtifactApi::health`] (this server's collections only).
#[derive(Debug, Default)]
struct Maintenance {
    health: BlobHealth,
}

/// What the store's calls share.
pub(crate) struct Inner {
    pool: Pool,
    names: Names,
    store: Arc<dyn ObjectStore>,
    /// Every stored object's path starts with this (`<prefix>/objects/`).
    objects_prefix: Path,
    grace: Duration,
    runtime: tokio::runtime::Handle,
    maintenance: Mutex<Maintenance>,
}

/// The artifact store of the PostgreSQL backend. Cheap to clone; the background maintenance ends when the
/// last clone is dropped.
#[derive(Clone)]
pub struct PostgresArtifacts {
    inner: Arc<Inner>,
    _guard: Option<Arc<AbortOnDrop>>,
}

impl std::fmt::Debug for PostgresArtifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresArtifacts")
            .field("schema", &self.inner.names.schema)
            .field("store", &self.inner.store.to_string())
            .field("prefix", &self.inner.objects_prefix)
            .finish_non_exhaustive()
    }
}

/// Aborts the maintenance task when the last handle drops.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PostgresArtifacts {
    /// Connects, creates the artifact tables if missing (once at a time across servers), and starts the
    /// maintenance task, all on the current tokio runtime, which then runs the store's calls. `store` and
    /// `prefix` are where the bytes go (an opened [`cairn_sync::ObjectLocation`] gives both).
    pub async fn open(
        opts: PostgresArtifactOptions,
        store: Arc<dyn ObjectStore>,
        prefix: Path,
    ) -> Result<PostgresArtifacts, String> {
        let names = Names::new(&opts.schema);
        let pool = Pool::new(&opts.url, opts.pool_size);
        schema::setup(&pool, &names).await.map_err(|e| e.to_string())?;
        let objects_prefix = prefix.child("objects");
        let inner = Arc::new(Inner {
            pool,
            names,
            store,
            objects_prefix,
            grace: opts.gc_grace,
            runtime: tokio::runtime::Handle::current(),
            maintenance: Mutex::new(Maintenance::default()),
        });
        let guard = (!opts.maintenance_interval.is_zero()).then(|| {
            let task = tokio::spawn(maintain(Arc::downgrade(&inner), opts.maintenance_interval));
            Arc::new(AbortOnDrop(task.abort_handle()))
        });
        Ok(PostgresArtifacts { inner, _guard: guard })
    }

    /// Where the bytes live: the object store, and the prefix every stored object's path starts with
    /// (`<prefix>/objects`).
    pub fn object_store(&self) -> (Arc<dyn ObjectStore>, Path) {
        (self.inner.store.clone(), self.inner.objects_prefix.clone())
    }
}

/// The maintenance task: every `interval`, retention then garbage collection, on the blocking pool.
async fn maintain(inner: Weak<Inner>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(strong) = inner.upgrade() else { return };
        let run = tokio::task::spawn_blocking(move || {
            let result = strong.expire().and_then(|_| strong.collect_garbage());
            if let Err(e) = &result {
                tracing::warn!(error = %e, "artifact maintenance failed");
            }
            strong.maintenance.lock().unwrap_or_else(PoisonError::into_inner).health.last_error =
                result.err().map(|e| e.to_string());
        });
        if run.await.is_err() {
            return;
        }
    }
}

/// A PostgreSQL error as an artifact error.
pub(crate) fn pg(e: tokio_postgres::Error) -> ArtifactError {
    let detail = e.as_db_error().map_or_else(|| e.to_string(), |d| d.to_string());
    ArtifactError::Backend(format!("postgres: {detail}"))
}

/// An object-store error as an artifact error.
pub(crate) fn os(e: object_store::Error) -> ArtifactError {
    ArtifactError::Backend(format!("object store: {e}"))
}

impl Inner {
    /// Runs `f` to completion on the store's runtime, from a thread outside it.
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// A pooled connection.
    pub(crate) async fn conn(&self) -> Result<Pooled<'_>, ArtifactError> {
        self.pool.get().await.map_err(|e| ArtifactError::Backend(e.detail))
    }

    /// `"schema"."cairn_artifact_<what>"`.
    pub(crate) fn table(&self, what: &str) -> String {
        self.names.table(&format!("cairn_artifact_{what}"))
    }
}

impl From<PostgresArtifacts> for crate::backend::ArtifactStore {
    fn from(artifacts: PostgresArtifacts) -> Self {
        Self::new(artifacts)
    }
}

impl ArtifactApi for PostgresArtifacts {
    fn create_bucket(&self, name: &str, project: Option<&str>) -> Result<BucketInfo, ArtifactError> {
        self.inner.create_bucket(name, project)
    }

    fn delete_bucket(&self, name: &str) -> Result<(), ArtifactError> {
        self.inner.delete_bucket(name)
    }

    fn bucket(&self, name: &str) -> Result<BucketInfo, ArtifactError> {
        self.inner.bucket(name)
    }

    fn list_buckets(&self) -> Result<Vec<BucketInfo>, ArtifactError> {
        self.inner.list_buckets()
    }

    fn set_retention(&self, name: &str, days: Option<u32>) -> Result<BucketInfo, ArtifactError> {
        self.inner.set_retention(name, days)
    }

    fn totals(&self) -> Result<BucketStats, ArtifactError> {
        self.inner.totals()
    }

    fn put_object(
        &self,
        bucket: &str,
        key: &str,
        opts: PutOptions,
        body: &mut dyn Read,
    ) -> Result<ObjectMeta, ArtifactError> {
        self.inner.put_object(bucket, key, opts, body)
    }

    fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectMeta, ArtifactError> {
        self.inner.head_object(bucket, key)
    }

    fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, Box<dyn ObjectRead>), ArtifactError> {
        self.inner.get_object(bucket, key, range)
    }

    fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, ArtifactError> {
        self.inner.delete_object(bucket, key)
    }

    fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
        replace: Option<PutOptions>,
    ) -> Result<ObjectMeta, ArtifactError> {
        self.inner.copy_object(src_bucket, src_key, dst_bucket, dst_key, replace)
    }

    fn list_objects(&self, bucket: &str, req: &ListRequest) -> Result<ListPage, ArtifactError> {
        self.inner.list_objects(bucket, req)
    }

    fn create_multipart(&self, bucket: &str, key: &str, opts: PutOptions) -> Result<String, ArtifactError> {
        self.inner.create_multipart(bucket, key, opts)
    }

    fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &mut dyn Read,
    ) -> Result<PartInfo, ArtifactError> {
        self.inner.upload_part(bucket, key, upload_id, part_number, body)
    }

    fn list_parts(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<PartInfo>, ArtifactError> {
        self.inner.list_parts(bucket, key, upload_id)
    }

    fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<ObjectMeta, ArtifactError> {
        self.inner.complete_multipart(bucket, key, upload_id, parts)
    }

    fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), ArtifactError> {
        self.inner.abort_multipart(bucket, key, upload_id)
    }

    fn list_uploads(&self, bucket: &str) -> Result<Vec<UploadInfo>, ArtifactError> {
        self.inner.list_uploads(bucket)
    }

    fn expire(&self) -> Result<u64, ArtifactError> {
        self.inner.expire()
    }

    fn collect_garbage(&self) -> Result<GcReport, ArtifactError> {
        self.inner.collect_garbage()
    }

    fn health(&self) -> BlobHealth {
        self.inner.maintenance.lock().unwrap_or_else(PoisonError::into_inner).health.clone()
    }
}
