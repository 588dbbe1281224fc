//! Multipart uploads: parts uploaded separately (each its own blob), assembled at completion into one
//! object whose segments are the parts' blobs, in order (no byte is copied).

use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::keys;
use crate::query::Query;

use super::buckets::{bucket_in, decode, encode};
use super::digest::{digest_of, multipart_etag, store_body};
use super::model::{ObjectDoc, ObjectMeta, PartDoc, PartInfo, PutOptions, Segment, UploadDoc, UploadInfo};
use super::names::{check_key, part_id, PARTS, UPLOADS};
use super::reader::ObjectReader;
use super::{now_ms, ArtifactError, Artifacts};

/// Smallest size of a part other than the last, as S3's.
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Highest part number, as S3's.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// Checks a part number: 1 to [`MAX_PART_NUMBER`], else [`ArtifactError::InvalidPart`].
pub fn check_part_number(part_number: u32) -> Result<(), ArtifactError> {
    if (1..=MAX_PART_NUMBER).contains(&part_number) {
        Ok(())
    } else {
        Err(ArtifactError::InvalidPart(format!("part number {part_number} is not in 1..={MAX_PART_NUMBER}")))
    }
}

/// A new upload id (also a name for bytes that must never collide): 128 bits from the process's random
/// hasher keys, the time and a counter, in 32 hex digits.
pub fn new_upload_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_i64(now_ms());
        h.finish()
    };
    format!("{:016x}{:016x}", word(1), word(2))
}

impl Artifacts {
    /// Starts a multipart upload of `key`; returns its id.
    pub fn create_multipart(&self, bucket: &str, key: &str, opts: PutOptions) -> Result<String, ArtifactError> {
        check_key(key)?;
        let id = new_upload_id();
        let initiated_ms = now_ms();
        self.commit(|tx| {
            let (b, _) = bucket_in(tx, bucket)?;
            let doc = UploadDoc {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                project: b.project,
                content_type: opts.content_type.clone(),
                metadata: opts.metadata.clone(),
                initiated_ms,
            };
            tx.insert_doc(UPLOADS, &id, encode(&doc)?)?;
            Ok(())
        })?;
        Ok(id)
    }

    /// The upload `upload_id` of `bucket`/`key`.
    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadDoc, ArtifactError> {
        let missing = || ArtifactError::NoSuchUpload(upload_id.to_owned());
        if upload_id.is_empty() || upload_id.len() > 64 {
            return Err(missing());
        }
        let stored = self.inner.store.collection_dyn(UPLOADS)?.get(upload_id)?.ok_or_else(missing)?;
        let doc: UploadDoc = decode(stored.doc, upload_id)?;
        if doc.bucket != bucket || doc.key != key {
            return Err(missing());
        }
        Ok(doc)
    }

    /// Uploads part `part_number` (1 to 10,000) of an upload; a part uploaded again replaces the earlier one.
    pub fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &mut dyn Read,
    ) -> Result<PartInfo, ArtifactError> {
        check_part_number(part_number)?;
        self.upload(bucket, key, upload_id)?;
        let stored = store_body(&self.inner.blobs, body, &PutOptions::default())?;
        let doc = PartDoc {
            upload_id: upload_id.to_owned(),
            part_number,
            etag: hex::encode(stored.md5),
            size: stored.blob.len,
            modified_ms: now_ms(),
            segment: Segment::of(stored.blob),
        };
        let id = part_id(upload_id, part_number);
        self.commit_referencing(|tx| {
            // Read, so that an abort or completion meanwhile makes this commit conflict and find it gone.
            tx.get_doc(UPLOADS, upload_id)?.ok_or_else(|| ArtifactError::NoSuchUpload(upload_id.to_owned()))?;
            tx.upsert_doc(PARTS, &id, encode(&doc)?)?;
            Ok(())
        })?;
        drop(stored.pin);
        Ok(doc.info())
    }

    fn parts(&self, upload_id: &str) -> Result<Vec<PartDoc>, ArtifactError> {
        let snap = self.inner.store.db().snapshot();
        let mut out = Vec::new();
        for pair in snap.prefix(keys::record_key(PARTS, &format!("{upload_id}/")))? {
            let (k, v) = pair?;
            out.push(crate::envelope::decode_as::<PartDoc>(&k, &v)?.doc);
        }
        Ok(out)
    }

    /// The parts uploaded so far, by part number.
    pub fn list_parts(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<PartInfo>, ArtifactError> {
        self.upload(bucket, key, upload_id)?;
        Ok(self.parts(upload_id)?.iter().map(PartDoc::info).collect())
    }

    /// Assembles the listed parts, `(part number, ETag)` in ascending order, into the object; the upload and
    /// every part not listed are discarded. Each part but the last must be at least [`MIN_PART_SIZE`].
    pub fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<ObjectMeta, ArtifactError> {
        let upload = self.upload(bucket, key, upload_id)?;
        if parts.is_empty() {
            return Err(ArtifactError::InvalidPart("a completion lists at least one part".into()));
        }
        if parts.windows(2).any(|w| matches!(w, [a, b] if a.0 >= b.0)) {
            return Err(ArtifactError::InvalidPartOrder);
        }
        let uploaded = self.parts(upload_id)?;
        let mut chosen = Vec::with_capacity(parts.len());
        for (number, etag) in parts {
            let etag = etag.trim_matches('"');
            let part = uploaded.iter().find(|p| p.part_number == *number && p.etag == etag).ok_or_else(|| {
                ArtifactError::InvalidPart(format!("part {number} with ETag {etag:?} was not uploaded"))
            })?;
            chosen.push(part.clone());
        }
        if let Some(small) = chosen.iter().rev().skip(1).find(|p| p.size < MIN_PART_SIZE) {
            return Err(ArtifactError::EntityTooSmall { part: small.part_number });
        }
        let segments: Vec<Segment> = chosen.iter().map(|p| p.segment).collect();
        let size = segments.iter().map(|s| s.2).sum();
        let md5s: Vec<[u8; 16]> = chosen
            .iter()
            .map(|p| {
                let mut m = [0u8; 16];
                hex::decode_to_slice(&p.etag, &mut m).map(|()| m)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| ArtifactError::Internal(format!("a part's ETag: {e}")))?;
        // The whole body's SHA-256, read back through the checksummed blobs (the parts stay pinned by the
        // reader until the object's record points to them).
        let mut reader = ObjectReader::new(&self.inner.blobs, &segments, 0, size)
            .ok_or_else(|| ArtifactError::Internal("a part's blob file is gone".into()))?;
        let sha256 = digest_of(&mut reader)?;
        let mut doc = ObjectDoc {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            project: upload.project,
            size,
            etag: multipart_etag(&md5s),
            content_type: upload.content_type,
            metadata: upload.metadata,
            sha256: hex::encode(sha256),
            crc32c: None,
            modified_ms: now_ms(),
            segments,
        };
        let id = super::names::object_id(bucket, key);
        let all_parts: Vec<String> = uploaded.iter().map(|p| part_id(upload_id, p.part_number)).collect();
        let version = self.commit_referencing(|tx| {
            let (b, _) = bucket_in(tx, bucket)?;
            doc.project = b.project;
            tx.get_doc(UPLOADS, upload_id)?.ok_or_else(|| ArtifactError::NoSuchUpload(upload_id.to_owned()))?;
            for (p, part_key) in chosen.iter().zip(parts) {
                // Unchanged since read: a part uploaded again meanwhile makes this conflict and start over.
                let now = tx.get_doc(PARTS, &part_id(upload_id, part_key.0))?;
                let same = now
                    .map(|n| decode::<PartDoc>(n.doc, upload_id))
                    .transpose()?
                    .is_some_and(|n| n.segment == p.segment);
                if !same {
                    return Err(ArtifactError::InvalidPart(format!("part {} changed during completion", part_key.0)));
                }
            }
            let (objects, old_bytes) = match tx.get_doc(super::names::OBJECTS, &id)? {
                Some(o) => (0, decode::<ObjectDoc>(o.doc, &id)?.size),
                None => (1, 0),
            };
            super::stats::add(tx, bucket, objects, doc.size as i64 - old_bytes as i64);
            tx.delete_doc(UPLOADS, upload_id, None)?;
            for part in &all_parts {
                tx.delete_doc(PARTS, part, None)?;
            }
            Ok(tx.upsert_doc(super::names::OBJECTS, &id, encode(&doc)?)?)
        })?;
        drop(reader);
        Ok(doc.meta(version))
    }

    /// Discards an upload and its parts.
    pub fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), ArtifactError> {
        self.upload(bucket, key, upload_id)?;
        let parts: Vec<String> = self.parts(upload_id)?.iter().map(|p| part_id(upload_id, p.part_number)).collect();
        self.commit(|tx| {
            tx.get_doc(UPLOADS, upload_id)?.ok_or_else(|| ArtifactError::NoSuchUpload(upload_id.to_owned()))?;
            tx.delete_doc(UPLOADS, upload_id, None)?;
            for part in &parts {
                if tx.get_doc(PARTS, part)?.is_some() {
                    tx.delete_doc(PARTS, part, None)?;
                }
            }
            Ok(())
        })
    }

    /// The multipart uploads in progress in a bucket, by upload id.
    pub fn list_uploads(&self, bucket: &str) -> Result<Vec<UploadInfo>, ArtifactError> {
        let uploads = self.inner.store.collection_dyn(UPLOADS)?;
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = uploads.query(&Query::new().eq("bucket", bucket).limit(1000).after(cursor))?;
            for r in page.records {
                let doc: UploadDoc = decode(r.doc, &r.id)?;
                out.push(UploadInfo { upload_id: r.id, key: doc.key, initiated_ms: doc.initiated_ms });
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        out.sort_by(|a, b| a.upload_id.cmp(&b.upload_id));
        Ok(out)
    }
}
