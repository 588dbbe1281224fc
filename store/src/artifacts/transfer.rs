//! Objects' bytes moved out of and into the store whole, for exports and restores of the records
//! (`cairn export s3`, `cairn import s3`; see `docs/sync.md`).
//!
//! An exported `_artifact_objects` record names its bytes twice: by content (`sha256`, the same on every
//! machine) and by place (`segments`, blobs in this machine's blob files, meaningless elsewhere). An export
//! reads the bytes a record document names ([`Artifacts::read_document`]) and ships them under their
//! content address; a restore writes the records back with their places emptied
//! ([`portable_document`]), then streams each object's bytes into a new local blob and points the record at
//! it ([`Artifacts::restore_object_bytes`], or [`Artifacts::share_object_bytes`] for an object whose bytes
//! another restored object already holds), and finally recomputes the buckets' statistics
//! ([`Artifacts::rebuild_stats`]).

use std::io::Read;

use serde_json::Value;

use super::buckets::{decode, encode};
use super::digest::store_body;
use super::model::{ObjectDoc, ObjectMeta, PutOptions, Segment};
use super::names::{object_id, OBJECTS};
use super::reader::ObjectReader;
use super::{ArtifactError, Artifacts};

/// Opening the bytes of a record whose blobs garbage collection keeps moving is tried this many times.
const OPEN_ATTEMPTS: usize = 8;

/// An object record's document (an `_artifact_objects` record as exported) with its local blob pointers
/// (`segments`) emptied: what the record means on another machine. Restores write object records in
/// this form until their bytes are in place, and verification compares object records in this form.
/// Documents that are not object records are returned unchanged.
pub fn portable_document(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(segments) = doc.as_object_mut().and_then(|d| d.get_mut("segments")) {
        *segments = Value::Array(Vec::new());
    }
    doc
}

/// The binary SHA-256 of an object's record.
fn sha256_of(doc: &ObjectDoc) -> Result<[u8; 32], ArtifactError> {
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(&doc.sha256, &mut sha256).map_err(|_| {
        ArtifactError::Internal(format!("{}/{}: sha256 {:?} is not 64 hex digits", doc.bucket, doc.key, doc.sha256))
    })?;
    Ok(sha256)
}

impl Artifacts {
    /// The metadata of an object record's document (an `_artifact_objects` record as exported, at
    /// `version`): bucket, key, size, SHA-256 and the rest. Fails with [`ArtifactError::Internal`] if the
    /// document is not an object record.
    pub fn document_meta(doc: &Value, version: u64) -> Result<ObjectMeta, ArtifactError> {
        let parsed: ObjectDoc = decode(doc.clone(), "of an exported object")?;
        sha256_of(&parsed)?;
        Ok(parsed.meta(version))
    }

    /// A reader of the bytes an object record's document names (an `_artifact_objects` record as read from
    /// a snapshot or the change feed, possibly older than the record now stored), verified chunk by chunk
    /// through the blobs' checksums as it is read; the blob files it reads stay on disk until it is
    /// dropped. If garbage collection moved the bytes meanwhile (the record now stored has the same
    /// SHA-256), they are read where they are now. `Ok(None)` if the bytes are gone: the object was
    /// overwritten or deleted and its blobs collected.
    pub fn read_document(&self, doc: &Value) -> Result<Option<ObjectReader>, ArtifactError> {
        let wanted: ObjectDoc = decode(doc.clone(), "of an exported object")?;
        if let Some(reader) = ObjectReader::new(&self.inner.blobs, &wanted.segments, 0, wanted.size) {
            return Ok(Some(reader));
        }
        let id = object_id(&wanted.bucket, &wanted.key);
        for _ in 0..OPEN_ATTEMPTS {
            let Some(stored) = self.inner.store.collection_dyn(OBJECTS)?.get(&id)? else { return Ok(None) };
            let now: ObjectDoc = decode(stored.doc, &id)?;
            if now.sha256 != wanted.sha256 || now.size != wanted.size {
                return Ok(None);
            }
            if let Some(reader) = ObjectReader::new(&self.inner.blobs, &now.segments, 0, now.size) {
                return Ok(Some(reader));
            }
        }
        Err(ArtifactError::Internal(format!("{id}: its blobs kept moving while being opened")))
    }

    /// Gives the restored record of object `key` of `bucket` its bytes: streams `body` into a new blob
    /// (memory holds at most one chunk of it) while computing its SHA-256 (and its CRC32C if the record has
    /// one), then points the record at the blob, keeping its version (the content did not change). A body
    /// whose SHA-256, CRC32C or length differs from the record's is [`ArtifactError::BadDigest`] and
    /// changes nothing. The bucket's statistics are not touched: see [`Artifacts::rebuild_stats`].
    pub fn restore_object_bytes(
        &self,
        bucket: &str,
        key: &str,
        body: &mut dyn Read,
    ) -> Result<ObjectMeta, ArtifactError> {
        let (doc, _) = self.object(bucket, key)?;
        let opts = PutOptions {
            expected_sha256: Some(sha256_of(&doc)?),
            expected_crc32c: doc.crc32c,
            ..PutOptions::default()
        };
        let stored = store_body(&self.inner.blobs, body, &opts)?;
        if stored.blob.len != doc.size {
            return Err(ArtifactError::BadDigest(format!(
                "{bucket}/{key}: {} bytes, the record says {}",
                stored.blob.len, doc.size
            )));
        }
        let meta = self.repoint_whole(bucket, key, &doc.sha256, vec![Segment::of(stored.blob)])?;
        drop(stored.pin);
        Ok(meta)
    }

    /// Points the restored record of object `key` of `bucket` at the bytes of object `from_key` of
    /// `from_bucket`, which must have the same SHA-256 (a copy, or the same content uploaded twice): no byte
    /// is copied, as with [`Artifacts::copy_object`]. Keeps the record's version.
    pub fn share_object_bytes(
        &self,
        bucket: &str,
        key: &str,
        from_bucket: &str,
        from_key: &str,
    ) -> Result<ObjectMeta, ArtifactError> {
        let (from, _) = self.object(from_bucket, from_key)?;
        let (doc, _) = self.object(bucket, key)?;
        if from.sha256 != doc.sha256 || from.size != doc.size {
            return Err(ArtifactError::Invalid(format!(
                "{bucket}/{key} (sha256 {}) and {from_bucket}/{from_key} (sha256 {}) differ",
                doc.sha256, from.sha256
            )));
        }
        self.repoint_whole(bucket, key, &doc.sha256, from.segments)
    }

    /// Replaces the segments of an object whose SHA-256 is still `sha256`, keeping its version.
    fn repoint_whole(
        &self,
        bucket: &str,
        key: &str,
        sha256: &str,
        segments: Vec<Segment>,
    ) -> Result<ObjectMeta, ArtifactError> {
        let id = object_id(bucket, key);
        self.commit_referencing(|tx| {
            let stored = tx
                .get_doc(OBJECTS, &id)?
                .ok_or_else(|| ArtifactError::NoSuchKey { bucket: bucket.to_owned(), key: key.to_owned() })?;
            let mut doc: ObjectDoc = decode(stored.doc, &id)?;
            if doc.sha256 != sha256 {
                return Err(ArtifactError::Invalid(format!("{id} was overwritten while its bytes were restored")));
            }
            doc.segments = segments.clone();
            tx.restore_doc(OBJECTS, &id, stored.version, encode(&doc)?)?;
            Ok(doc.meta(stored.version))
        })
    }
}
