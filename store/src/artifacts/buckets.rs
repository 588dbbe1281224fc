//! Buckets: create, delete (only when empty), list, retention, statistics.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::handle::WRITE_ATTEMPTS;
use crate::txn::Transaction;

use super::model::{BucketDoc, BucketInfo, BucketStats, ObjectDoc};
use super::names::{self, check_bucket, BUCKETS, OBJECTS};
use super::{now_ms, stats, ArtifactError, Artifacts};

/// A bucket's record read in a transaction (marked read, so a concurrent deletion conflicts); `NoSuchBucket`
/// if absent or being deleted.
pub(crate) fn bucket_in(tx: &mut Transaction<'_>, name: &str) -> Result<(BucketDoc, u64), ArtifactError> {
    check_bucket(name)?;
    let stored = tx.get_doc(BUCKETS, name)?.ok_or_else(|| ArtifactError::NoSuchBucket(name.to_owned()))?;
    let doc: BucketDoc = decode(stored.doc, name)?;
    if doc.deleting {
        return Err(ArtifactError::NoSuchBucket(name.to_owned()));
    }
    Ok((doc, stored.version))
}

pub(crate) fn decode<D: serde::de::DeserializeOwned>(doc: Value, id: &str) -> Result<D, ArtifactError> {
    serde_json::from_value(doc).map_err(|e| ArtifactError::Internal(format!("record {id}: {e}")))
}

pub(crate) fn encode<D: serde::Serialize>(doc: &D) -> Result<Value, ArtifactError> {
    serde_json::to_value(doc).map_err(|e| ArtifactError::Internal(e.to_string()))
}

impl Artifacts {
    /// Creates a bucket, owned by `project` if given.
    pub fn create_bucket(&self, name: &str, project: Option<&str>) -> Result<BucketInfo, ArtifactError> {
        check_bucket(name)?;
        let doc = BucketDoc {
            name: name.to_owned(),
            project: project.map(str::to_owned),
            created_ms: now_ms(),
            retention_days: None,
            deleting: false,
        };
        let value = encode(&doc)?;
        self.commit(|tx| {
            if tx.get_doc(BUCKETS, name)?.is_some() {
                return Err(ArtifactError::BucketExists(name.to_owned()));
            }
            tx.insert_doc(BUCKETS, name, value.clone())?;
            Ok(())
        })?;
        // A bucket of the same name deleted earlier may have left statistics behind.
        stats::clear(&self.inner.store, name)?;
        self.info(doc)
    }

    /// Deletes an empty bucket: one with no objects and no unfinished multipart uploads.
    pub fn delete_bucket(&self, name: &str) -> Result<(), ArtifactError> {
        // Mark it first: writes that read the bucket before the mark conflict with it and retry, and see it
        // gone; writes committed before the mark are seen by the emptiness check after it.
        let (doc, _) = self.commit(|tx| {
            let (mut doc, version) = bucket_in(tx, name)?;
            doc.deleting = true;
            tx.update_doc(BUCKETS, name, version, encode(&doc)?)?;
            Ok((doc, version))
        })?;
        let empty = self.is_empty(name);
        let result = match empty {
            Ok(true) => self
                .commit(|tx| {
                    tx.delete_doc(BUCKETS, name, None)?;
                    Ok(())
                })
                .and_then(|()| Ok(stats::clear(&self.inner.store, name)?)),
            Ok(false) => Err(ArtifactError::BucketNotEmpty(name.to_owned())),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let mut restored = doc;
            restored.deleting = false;
            let value = encode(&restored)?;
            self.commit(|tx| {
                tx.upsert_doc(BUCKETS, name, value.clone())?;
                Ok(())
            })?;
        }
        result
    }

    fn is_empty(&self, name: &str) -> Result<bool, ArtifactError> {
        let snap = self.inner.store.db().snapshot();
        let prefix = crate::keys::record_key(OBJECTS, &names::object_id(name, ""));
        if snap.prefix(&prefix)?.next().is_some() {
            return Ok(false);
        }
        Ok(self.list_uploads(name)?.is_empty())
    }

    /// A bucket and its statistics.
    pub fn bucket(&self, name: &str) -> Result<BucketInfo, ArtifactError> {
        let doc = self.bucket_record(name)?;
        self.info(doc)
    }

    /// A bucket's record, without its statistics; `NoSuchBucket` if absent or being deleted.
    pub(crate) fn bucket_record(&self, name: &str) -> Result<BucketDoc, ArtifactError> {
        check_bucket(name)?;
        let c = self.inner.store.collection_dyn(BUCKETS)?;
        let stored = c.get(name)?.ok_or_else(|| ArtifactError::NoSuchBucket(name.to_owned()))?;
        let doc: BucketDoc = decode(stored.doc, name)?;
        if doc.deleting {
            return Err(ArtifactError::NoSuchBucket(name.to_owned()));
        }
        Ok(doc)
    }

    /// Every bucket, by name, with its statistics.
    pub fn list_buckets(&self) -> Result<Vec<BucketInfo>, ArtifactError> {
        let snap = self.inner.store.db().snapshot();
        let mut out = Vec::new();
        for pair in snap.prefix(crate::keys::record_prefix(BUCKETS))? {
            let (key, value) = pair?;
            let envelope = crate::envelope::decode_as::<BucketDoc>(&key, &value)?;
            if !envelope.doc.deleting {
                out.push(self.info(envelope.doc)?);
            }
        }
        Ok(out)
    }

    /// Sets (or with `None` clears) the number of days after which a bucket's objects are deleted.
    pub fn set_retention(&self, name: &str, days: Option<u32>) -> Result<BucketInfo, ArtifactError> {
        if days == Some(0) {
            return Err(ArtifactError::Invalid("retention is at least 1 day".into()));
        }
        let doc = self.commit(|tx| {
            let (mut doc, version) = bucket_in(tx, name)?;
            doc.retention_days = days;
            tx.update_doc(BUCKETS, name, version, encode(&doc)?)?;
            Ok(doc)
        })?;
        self.info(doc)
    }

    /// Objects and bytes of every bucket together.
    pub fn totals(&self) -> Result<BucketStats, ArtifactError> {
        let mut total = BucketStats::default();
        for b in self.list_buckets()? {
            total.objects += b.stats.objects;
            total.bytes += b.stats.bytes;
        }
        Ok(total)
    }

    /// Recomputes every bucket's statistics from its objects, replacing the entries kept on write, and
    /// returns the totals of all buckets. For a store whose object records were written without them: a
    /// restore writes the records as they were exported (`docs/sync.md`), and calls this once they are all
    /// in. Safe while objects are written: their commits' entries add to the recomputed ones.
    pub fn rebuild_stats(&self) -> Result<BucketStats, ArtifactError> {
        let _folding = self.inner.folding.lock();
        let snap = self.inner.store.db().snapshot();
        let mut totals: BTreeMap<String, BucketStats> = BTreeMap::new();
        for pair in snap.prefix(crate::keys::record_prefix(BUCKETS))? {
            let (key, value) = pair?;
            totals.entry(crate::envelope::decode_as::<BucketDoc>(&key, &value)?.doc.name).or_default();
        }
        for pair in snap.prefix(crate::keys::record_prefix(OBJECTS))? {
            let (key, value) = pair?;
            let doc = crate::envelope::decode_as::<ObjectDoc>(&key, &value)?.doc;
            let stats = totals.entry(doc.bucket).or_default();
            stats.objects += 1;
            stats.bytes += doc.size;
        }
        stats::replace_all(&self.inner.store, &snap, &totals)?;
        Ok(totals.values().fold(BucketStats::default(), |all, b| BucketStats {
            objects: all.objects + b.objects,
            bytes: all.bytes + b.bytes,
        }))
    }

    fn info(&self, doc: BucketDoc) -> Result<BucketInfo, ArtifactError> {
        let (stats, entries) = stats::sum_at(&self.inner.store.db().snapshot(), &doc.name)?;
        if stats::wants_fold(entries) {
            stats::fold(&self.inner.store, &self.inner.folding, &doc.name)?;
        }
        Ok(BucketInfo {
            name: doc.name,
            project: doc.project,
            created_ms: doc.created_ms,
            retention_days: doc.retention_days,
            stats,
        })
    }

    /// Runs `f` in a transaction and commits it, retrying on conflicts.
    pub(crate) fn commit<R>(
        &self,
        f: impl FnMut(&mut Transaction<'_>) -> Result<R, ArtifactError>,
    ) -> Result<R, ArtifactError> {
        Ok(self.inner.store.commit_with_retry(WRITE_ATTEMPTS, f)?.0)
    }

    /// Like [`Artifacts::commit`], for a commit that adds references to blobs: garbage collection does not
    /// decide which blob files are unreferenced while it runs.
    pub(crate) fn commit_referencing<R>(
        &self,
        f: impl FnMut(&mut Transaction<'_>) -> Result<R, ArtifactError>,
    ) -> Result<R, ArtifactError> {
        let _references = self.inner.references.read();
        self.commit(f)
    }
}
