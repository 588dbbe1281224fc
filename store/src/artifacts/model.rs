//! The artifact store's public types, and the documents it keeps in its collections.

use std::collections::BTreeMap;

use cairn_engine::BlobRef;
use serde::{Deserialize, Serialize};

/// What an upload may set and what it is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// The media type returned on reads (`Content-Type`).
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`), names without the prefix.
    pub metadata: BTreeMap<String, String>,
    /// The MD5 the client computed (`Content-MD5`); a mismatch is [`ArtifactError::BadDigest`].
    ///
    /// [`ArtifactError::BadDigest`]: super::ArtifactError::BadDigest
    pub expected_md5: Option<[u8; 16]>,
    /// The SHA-256 the client computed (`x-amz-checksum-sha256`).
    pub expected_sha256: Option<[u8; 32]>,
    /// The CRC32C the client computed (`x-amz-checksum-crc32c`); when given, the object keeps its CRC32C.
    pub expected_crc32c: Option<u32>,
    /// The body's SHA-256 as the body's reader verifies it: the reader fails instead of ending if the bytes
    /// it gave differ (as the S3 server's check of a signed payload's `x-amz-content-sha256` does). The
    /// store then takes it as the object's SHA-256 instead of computing it again. Give it only for such a
    /// reader: a wrong value becomes the object's content address.
    pub verified_sha256: Option<[u8; 32]>,
}

/// Objects and bytes of a bucket (or of all buckets), kept on every write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketStats {
    /// Number of objects.
    pub objects: u64,
    /// Sum of their sizes.
    pub bytes: u64,
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    /// Its name.
    pub name: String,
    /// The project that owns it (set when a project-scoped token created it).
    pub project: Option<String>,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Objects older than this many days are deleted by retention.
    pub retention_days: Option<u32>,
    /// Its objects and bytes.
    pub stats: BucketStats,
}

/// An object's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// Its length in bytes.
    pub size: u64,
    /// The ETag, without quotes: the hex MD5 of the body, or for a multipart upload the hex MD5 of the
    /// parts' binary MD5s followed by `-` and the number of parts (as S3 computes them).
    pub etag: String,
    /// The media type given at upload.
    pub content_type: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// SHA-256 of the whole body.
    pub sha256: [u8; 32],
    /// CRC32C of the whole body, when the upload sent one.
    pub crc32c: Option<u32>,
    /// When it was written, in milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    /// Its record's version: 1 when first written, +1 on every overwrite.
    pub version: u64,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// Only keys that start with this.
    pub prefix: String,
    /// Keys that contain this after the prefix are rolled up into one common prefix.
    pub delimiter: Option<String>,
    /// Only keys (and common prefixes) after this one.
    pub start_after: Option<String>,
    /// At most this many keys and common prefixes together (1 to 1,000).
    pub max_keys: usize,
}

/// A page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects, in key order.
    pub objects: Vec<ObjectMeta>,
    /// Common prefixes (each ending with the delimiter), in order.
    pub common_prefixes: Vec<String>,
    /// Whether more follow.
    pub truncated: bool,
    /// Where the next page starts (its `start_after`), when truncated.
    pub next_start_after: Option<String>,
}

/// An uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// 1 to 10,000.
    pub part_number: u32,
    /// Hex MD5 of the part, without quotes.
    pub etag: String,
    /// Its length.
    pub size: u64,
    /// When it was uploaded.
    pub last_modified_ms: i64,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    /// Its id.
    pub upload_id: String,
    /// The key it will write.
    pub key: String,
    /// When it was created.
    pub initiated_ms: i64,
}

/// What a garbage collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blob files removed.
    pub files_removed: u64,
    /// Live blobs copied out of files that were mostly garbage.
    pub blobs_moved: u64,
    /// Disk bytes given back.
    pub bytes_reclaimed: u64,
}

/// The blob store's state, for `/healthz` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobHealth {
    /// Blob files.
    pub files: u64,
    /// Their bytes on disk.
    pub disk_bytes: u64,
    /// Bytes referenced by objects and parts, as of the last garbage collection.
    pub live_bytes: u64,
    /// When garbage was last collected.
    pub last_gc_ms: Option<i64>,
    /// The last background error (garbage collection or retention), if the last run failed.
    pub last_error: Option<String>,
}

/// What [`Artifacts::check`](super::Artifacts::check) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactCheckReport {
    /// Objects and parts checked.
    pub objects: u64,
    /// Blobs read.
    pub blobs: u64,
    /// Bytes read and verified.
    pub bytes: u64,
    /// What is wrong, each naming the object or the file and offset.
    pub problems: Vec<String>,
}

/// A run of bytes in a blob: `[file, offset, len]` in the stored documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Segment(pub u64, pub u64, pub u64);

impl Segment {
    pub fn of(blob: BlobRef) -> Self {
        Segment(blob.file, blob.offset, blob.len)
    }

    pub fn blob(self) -> BlobRef {
        BlobRef { file: self.0, offset: self.1, len: self.2 }
    }
}

/// A bucket's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BucketDoc {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Set while a deletion checks that the bucket is empty: writes into it are refused meanwhile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

/// An object's record. Its bytes are the concatenation of its segments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ObjectDoc {
    pub bucket: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub size: u64,
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Hex SHA-256 of the body: the object's content address.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<u32>,
    pub modified_ms: i64,
    pub segments: Vec<Segment>,
}

/// A multipart upload's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UploadDoc {
    pub bucket: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    pub initiated_ms: i64,
}

/// An uploaded part's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartDoc {
    pub upload_id: String,
    pub part_number: u32,
    /// Hex MD5 of the part.
    pub etag: String,
    pub size: u64,
    pub modified_ms: i64,
    pub segment: Segment,
}

impl ObjectDoc {
    pub fn meta(&self, version: u64) -> ObjectMeta {
        let mut sha256 = [0u8; 32];
        let _ = hex::decode_to_slice(&self.sha256, &mut sha256);
        ObjectMeta {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            size: self.size,
            etag: self.etag.clone(),
            content_type: self.content_type.clone(),
            metadata: self.metadata.clone(),
            sha256,
            crc32c: self.crc32c,
            last_modified_ms: self.modified_ms,
            version,
        }
    }
}

impl PartDoc {
    pub fn info(&self) -> PartInfo {
        PartInfo {
            part_number: self.part_number,
            etag: self.etag.clone(),
            size: self.size,
            last_modified_ms: self.modified_ms,
        }
    }
}
