//! Objects: put (streamed), head, get (with a range), delete, copy (sharing the bytes), list.

use std::io::Read;
use std::ops::Range;

use crate::keys;

use super::buckets::{bucket_in, decode, encode};
use super::digest::store_body;
use super::model::{ListPage, ListRequest, ObjectDoc, ObjectMeta, PutOptions, Segment};
use super::names::{check_bucket, check_key, object_id, OBJECTS};
use super::reader::ObjectReader;
use super::{now_ms, stats, ArtifactError, Artifacts};

/// Reads of an object whose bytes garbage collection moved meanwhile are retried this many times.
const READ_ATTEMPTS: usize = 8;

impl Artifacts {
    /// Stores `body` as object `key` of `bucket`, replacing any object of that key. The bytes are streamed
    /// into a blob and synced, then the object's record is committed: when this returns, the object is
    /// durable and visible; if it fails, nothing is visible.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        opts: PutOptions,
        body: &mut dyn Read,
    ) -> Result<ObjectMeta, ArtifactError> {
        check_key(key)?;
        self.bucket_record(bucket)?;
        let stored = store_body(&self.inner.blobs, body, &opts)?;
        let doc = ObjectDoc {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            project: None,
            size: stored.blob.len,
            etag: hex::encode(stored.md5),
            content_type: opts.content_type,
            metadata: opts.metadata,
            sha256: hex::encode(stored.sha256),
            crc32c: stored.crc32c,
            modified_ms: now_ms(),
            segments: vec![Segment::of(stored.blob)],
        };
        let meta = self.write_object(doc)?;
        drop(stored.pin);
        Ok(meta)
    }

    /// Commits an object's record (replacing any of its key) and the change of its bucket's statistics.
    pub(crate) fn write_object(&self, mut doc: ObjectDoc) -> Result<ObjectMeta, ArtifactError> {
        let id = object_id(&doc.bucket, &doc.key);
        let version = self.commit_referencing(|tx| {
            let (bucket, _) = bucket_in(tx, &doc.bucket)?;
            doc.project = bucket.project;
            let old = tx.get_doc(OBJECTS, &id)?;
            let (objects, old_bytes) = match &old {
                Some(o) => (0, decode::<ObjectDoc>(o.doc.clone(), &id)?.size),
                None => (1, 0),
            };
            stats::add(tx, &doc.bucket, objects, doc.size as i64 - old_bytes as i64);
            Ok(tx.upsert_doc(OBJECTS, &id, encode(&doc)?)?)
        })?;
        Ok(doc.meta(version))
    }

    /// An object's metadata.
    pub fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectMeta, ArtifactError> {
        self.object(bucket, key).map(|(doc, version)| doc.meta(version))
    }

    pub(crate) fn object(&self, bucket: &str, key: &str) -> Result<(ObjectDoc, u64), ArtifactError> {
        check_bucket(bucket)?;
        check_key(key)?;
        let id = object_id(bucket, key);
        match self.inner.store.collection_dyn(OBJECTS)?.get(&id)? {
            Some(stored) => Ok((decode(stored.doc, &id)?, stored.version)),
            None => {
                self.bucket_record(bucket)?;
                Err(ArtifactError::NoSuchKey { bucket: bucket.to_owned(), key: key.to_owned() })
            }
        }
    }

    /// An object's metadata and a reader of its bytes, or of `range` of them (end exclusive, clamped to the
    /// size). A range starting at or past the end of a non-empty object is [`ArtifactError::InvalidRange`].
    pub fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ObjectReader), ArtifactError> {
        for _ in 0..READ_ATTEMPTS {
            let (doc, version) = self.object(bucket, key)?;
            let (start, end) = match &range {
                None => (0, doc.size),
                Some(r) if r.start >= doc.size && doc.size > 0 || r.start > r.end => {
                    return Err(ArtifactError::InvalidRange { size: doc.size })
                }
                Some(r) => (r.start.min(doc.size), r.end.min(doc.size)),
            };
            if let Some(reader) = ObjectReader::new(&self.inner.blobs, &doc.segments, start, end) {
                return Ok((doc.meta(version), reader));
            }
        }
        Err(ArtifactError::Internal(format!("{bucket}/{key}: its blobs kept moving while being opened")))
    }

    /// Deletes an object; `Ok(false)` if there was none.
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, ArtifactError> {
        check_key(key)?;
        let id = object_id(bucket, key);
        self.commit(|tx| {
            bucket_in(tx, bucket)?;
            let Some(old) = tx.get_doc(OBJECTS, &id)? else { return Ok(false) };
            let old: ObjectDoc = decode(old.doc, &id)?;
            tx.delete_doc(OBJECTS, &id, None)?;
            stats::add(tx, bucket, -1, -(old.size as i64));
            Ok(true)
        })
    }

    /// Copies an object, sharing its bytes (no byte is copied); `replace` gives the copy its own content
    /// type and metadata, else it keeps the source's.
    pub fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
        replace: Option<PutOptions>,
    ) -> Result<ObjectMeta, ArtifactError> {
        check_key(src_key)?;
        check_key(dst_key)?;
        let (src_id, dst_id) = (object_id(src_bucket, src_key), object_id(dst_bucket, dst_key));
        let now = now_ms();
        let (doc, version) = self.commit_referencing(|tx| {
            bucket_in(tx, src_bucket)?;
            let (dst, _) = bucket_in(tx, dst_bucket)?;
            let src = tx
                .get_doc(OBJECTS, &src_id)?
                .ok_or_else(|| ArtifactError::NoSuchKey { bucket: src_bucket.to_owned(), key: src_key.to_owned() })?;
            let mut doc: ObjectDoc = decode(src.doc, &src_id)?;
            doc.bucket = dst_bucket.to_owned();
            doc.key = dst_key.to_owned();
            doc.project = dst.project;
            doc.modified_ms = now;
            if let Some(r) = &replace {
                doc.content_type = r.content_type.clone();
                doc.metadata = r.metadata.clone();
            }
            let (objects, old_bytes) = match tx.get_doc(OBJECTS, &dst_id)? {
                Some(o) => (0, decode::<ObjectDoc>(o.doc, &dst_id)?.size),
                None => (1, 0),
            };
            stats::add(tx, dst_bucket, objects, doc.size as i64 - old_bytes as i64);
            let version = tx.upsert_doc(OBJECTS, &dst_id, encode(&doc)?)?;
            Ok((doc, version))
        })?;
        Ok(doc.meta(version))
    }

    /// One page of a bucket's objects in key order (byte order of UTF-8), S3's ListObjectsV2: keys under
    /// `prefix`, those holding `delimiter` after it rolled up into common prefixes, after `start_after`.
    pub fn list_objects(&self, bucket: &str, req: &ListRequest) -> Result<ListPage, ArtifactError> {
        self.bucket_record(bucket)?;
        let max = req.max_keys.min(1000);
        let mut page = ListPage::default();
        if max == 0 {
            return Ok(page);
        }
        let delimiter = req.delimiter.as_deref().filter(|d| !d.is_empty());
        let base = keys::record_key(OBJECTS, &object_id(bucket, ""));
        let scope = [base.as_slice(), req.prefix.as_bytes()].concat();
        // The first key to look at: the prefix, or just after `start_after` (past its whole common prefix
        // when it is one).
        let mut from = scope.clone();
        if let Some(after) = req.start_after.as_deref().filter(|a| a.as_bytes() >= req.prefix.as_bytes()) {
            from = match delimiter.and_then(|d| rolled_up(after, &req.prefix, d)) {
                Some(common) => past(&[base.as_slice(), common.as_bytes()].concat()),
                None => [base.as_slice(), after.as_bytes(), b"\x00"].concat(),
            };
        }
        let snap = self.inner.store.db().snapshot();
        let mut last: Option<String> = None;
        'seek: loop {
            for pair in snap.range(from.as_slice()..)? {
                let (k, value) = pair?;
                if !k.starts_with(&scope) {
                    break 'seek;
                }
                let object_key = String::from_utf8_lossy(k.get(base.len()..).unwrap_or_default()).into_owned();
                if page.objects.len() + page.common_prefixes.len() == max {
                    page.truncated = true;
                    page.next_start_after = last;
                    return Ok(page);
                }
                if let Some(common) = delimiter.and_then(|d| rolled_up(&object_key, &req.prefix, d)) {
                    // Everything under it is one entry: seek past it.
                    from = past(&[base.as_slice(), common.as_bytes()].concat());
                    page.common_prefixes.push(common.clone());
                    last = Some(common);
                    continue 'seek;
                }
                let envelope = crate::envelope::decode_as::<ObjectDoc>(&k, &value)?;
                page.objects.push(envelope.doc.meta(envelope.version));
                last = Some(object_key);
            }
            break;
        }
        Ok(page)
    }
}

/// The first key after every key that starts with `prefix` (an object record key: it starts with a byte
/// below 0xff, so there is one).
fn past(prefix: &[u8]) -> Vec<u8> {
    keys::after_prefix(prefix).unwrap_or_else(|| vec![0xff])
}

/// The common prefix `key` rolls up into in a listing of `prefix` with `delimiter` (S3's `CommonPrefixes`):
/// the prefix and everything after it up to and including the first `delimiter`, if it holds one. Shared
/// with the server's other artifact stores, so that every store lists alike.
pub fn rolled_up(key: &str, prefix: &str, delimiter: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?;
    rest.find(delimiter).map(|at| format!("{prefix}{}", rest.get(..at + delimiter.len()).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::rolled_up;

    #[test]
    fn keys_roll_up_at_the_first_delimiter_after_the_prefix() {
        assert_eq!(rolled_up("a/b/c", "", "/").as_deref(), Some("a/"));
        assert_eq!(rolled_up("a/b/c", "a/", "/").as_deref(), Some("a/b/"));
        assert_eq!(rolled_up("a/b", "a/b", "/"), None);
        assert_eq!(rolled_up("x", "a/", "/"), None);
    }
}
