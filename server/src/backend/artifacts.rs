//! The artifact store as the S3 API, the `/v1/artifacts` routes, `/healthz` and `/metrics` call it: the
//! [`ArtifactApi`] trait, with two implementations, the embedded store of a data directory
//! ([`cairn_store::artifacts::Artifacts`], bytes in its blob files) and the PostgreSQL backend's
//! ([`PostgresArtifacts`](super::PostgresArtifacts), metadata in PostgreSQL, bytes in an object store).
//! Both answer with the store's model types and [`ArtifactError`], so that one mapping turns failures into
//! S3 error codes and problem documents.
//!
//! Every method blocks: callers run them on tokio's blocking pool. Bodies are streamed both ways: a write
//! reads its body through `&mut dyn Read`, a read returns an [`ObjectRead`] of a known length.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use cairn_store::artifacts::{
    ArtifactError, Artifacts, BlobHealth, BucketInfo, BucketStats, GcReport, ListPage, ListRequest, ObjectMeta,
    ObjectReader, PartInfo, PutOptions, UploadInfo,
};

/// The bytes of an object (or of a range of it) being read, with their number known in advance (the
/// response's `Content-Length`).
pub trait ObjectRead: Read + Send {
    /// The number of bytes the reader yields in all.
    fn len(&self) -> u64;

    /// Whether it yields none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ObjectRead for ObjectReader {
    fn len(&self) -> u64 {
        ObjectReader::len(self)
    }
}

/// The operations of an artifact store, as [`Artifacts`]' methods of the same names (see them for what each
/// does and how it fails).
pub trait ArtifactApi: Send + Sync + 'static {
    /// Creates a bucket, owned by `project` if given.
    fn create_bucket(&self, name: &str, project: Option<&str>) -> Result<BucketInfo, ArtifactError>;
    /// Deletes an empty bucket.
    fn delete_bucket(&self, name: &str) -> Result<(), ArtifactError>;
    /// A bucket and its statistics.
    fn bucket(&self, name: &str) -> Result<BucketInfo, ArtifactError>;
    /// Every bucket, by name, with its statistics.
    fn list_buckets(&self) -> Result<Vec<BucketInfo>, ArtifactError>;
    /// Sets (or clears) a bucket's retention in days.
    fn set_retention(&self, name: &str, days: Option<u32>) -> Result<BucketInfo, ArtifactError>;
    /// Objects and bytes of every bucket together.
    fn totals(&self) -> Result<BucketStats, ArtifactError>;
    /// Stores `body` as an object, visible once durable.
    fn put_object(
        &self,
        bucket: &str,
        key: &str,
        opts: PutOptions,
        body: &mut dyn Read,
    ) -> Result<ObjectMeta, ArtifactError>;
    /// An object's metadata.
    fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectMeta, ArtifactError>;
    /// An object's metadata and a reader of its bytes, or of `range` of them.
    fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, Box<dyn ObjectRead>), ArtifactError>;
    /// Deletes an object; `Ok(false)` if there was none.
    fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, ArtifactError>;
    /// Copies an object, sharing its bytes.
    fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
        replace: Option<PutOptions>,
    ) -> Result<ObjectMeta, ArtifactError>;
    /// One page of a bucket's objects in key order.
    fn list_objects(&self, bucket: &str, req: &ListRequest) -> Result<ListPage, ArtifactError>;
    /// Starts a multipart upload; returns its id.
    fn create_multipart(&self, bucket: &str, key: &str, opts: PutOptions) -> Result<String, ArtifactError>;
    /// Uploads one part of a multipart upload.
    fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &mut dyn Read,
    ) -> Result<PartInfo, ArtifactError>;
    /// The parts uploaded so far, by part number.
    fn list_parts(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<PartInfo>, ArtifactError>;
    /// Assembles the listed parts into the object.
    fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<ObjectMeta, ArtifactError>;
    /// Discards an upload and its parts.
    fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), ArtifactError>;
    /// The multipart uploads in progress in a bucket, by upload id.
    fn list_uploads(&self, bucket: &str) -> Result<Vec<UploadInfo>, ArtifactError>;
    /// Deletes the objects older than their bucket's retention; returns how many.
    fn expire(&self) -> Result<u64, ArtifactError>;
    /// Reclaims the bytes no object or part refers to any more.
    fn collect_garbage(&self) -> Result<GcReport, ArtifactError>;
    /// The state of the stored bytes and of the last collection, kept in memory (no I/O).
    fn health(&self) -> BlobHealth;
}

impl ArtifactApi for Artifacts {
    fn create_bucket(&self, name: &str, project: Option<&str>) -> Result<BucketInfo, ArtifactError> {
        Artifacts::create_bucket(self, name, project)
    }

    fn delete_bucket(&self, name: &str) -> Result<(), ArtifactError> {
        Artifacts::delete_bucket(self, name)
    }

    fn bucket(&self, name: &str) -> Result<BucketInfo, ArtifactError> {
        Artifacts::bucket(self, name)
    }

    fn list_buckets(&self) -> Result<Vec<BucketInfo>, ArtifactError> {
        Artifacts::list_buckets(self)
    }

    fn set_retention(&self, name: &str, days: Option<u32>) -> Result<BucketInfo, ArtifactError> {
        Artifacts::set_retention(self, name, days)
    }

    fn totals(&self) -> Result<BucketStats, ArtifactError> {
        Artifacts::totals(self)
    }

    fn put_object(
        &self,
        bucket: &str,
        key: &str,
        opts: PutOptions,
        body: &mut dyn Read,
    ) -> Result<ObjectMeta, ArtifactError> {
        Artifacts::put_object(self, bucket, key, opts, body)
    }

    fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectMeta, ArtifactError> {
        Artifacts::head_object(self, bucket, key)
    }

    fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, Box<dyn ObjectRead>), ArtifactError> {
        let (meta, reader) = Artifacts::get_object(self, bucket, key, range)?;
        Ok((meta, Box::new(reader)))
    }

    fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, ArtifactError> {
        Artifacts::delete_object(self, bucket, key)
    }

    fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
        replace: Option<PutOptions>,
    ) -> Result<ObjectMeta, ArtifactError> {
        Artifacts::copy_object(self, src_bucket, src_key, dst_bucket, dst_key, replace)
    }

    fn list_objects(&self, bucket: &str, req: &ListRequest) -> Result<ListPage, ArtifactError> {
        Artifacts::list_objects(self, bucket, req)
    }

    fn create_multipart(&self, bucket: &str, key: &str, opts: PutOptions) -> Result<String, ArtifactError> {
        Artifacts::create_multipart(self, bucket, key, opts)
    }

    fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &mut dyn Read,
    ) -> Result<PartInfo, ArtifactError> {
        Artifacts::upload_part(self, bucket, key, upload_id, part_number, body)
    }

    fn list_parts(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<PartInfo>, ArtifactError> {
        Artifacts::list_parts(self, bucket, key, upload_id)
    }

    fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<ObjectMeta, ArtifactError> {
        Artifacts::complete_multipart(self, bucket, key, upload_id, parts)
    }

    fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), ArtifactError> {
        Artifacts::abort_multipart(self, bucket, key, upload_id)
    }

    fn list_uploads(&self, bucket: &str) -> Result<Vec<UploadInfo>, ArtifactError> {
        Artifacts::list_uploads(self, bucket)
    }

    fn expire(&self) -> Result<u64, ArtifactError> {
        Artifacts::expire(self)
    }

    fn collect_garbage(&self) -> Result<GcReport, ArtifactError> {
        Artifacts::collect_garbage(self)
    }

    fn health(&self) -> BlobHealth {
        Artifacts::health(self)
    }
}

/// A shared handle on an artifact store of either kind, as the server holds it. Cheap to clone; derefs to
/// [`ArtifactApi`]. Made from an embedded [`Artifacts`] or a
/// [`PostgresArtifacts`](super::PostgresArtifacts) with `From`.
#[derive(Clone)]
pub struct ArtifactStore(Arc<dyn ArtifactApi>);

impl ArtifactStore {
    /// A handle on `store`.
    pub fn new(store: impl ArtifactApi) -> Self {
        Self(Arc::new(store))
    }
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore").finish_non_exhaustive()
    }
}

impl std::ops::Deref for ArtifactStore {
    type Target = dyn ArtifactApi;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl From<Artifacts> for ArtifactStore {
    fn from(artifacts: Artifacts) -> Self {
        Self::new(artifacts)
    }
}
