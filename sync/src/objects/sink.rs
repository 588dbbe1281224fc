//! Where a restore writes: a store, or (for verification) maps of record and series digests.

use std::collections::BTreeMap;

use cairn_store::artifacts::{portable_document, Artifacts, OBJECTS, PARTS, UPLOADS};
use cairn_store::metrics::Point;
use cairn_store::{CollectionSpec, Store, WriteError};
use serde_json::Value;

use crate::digest::{record_digest_in, Records, SeriesDigester};
use crate::error::SyncError;
use crate::metrics::PointWriter;

/// Store transactions are cut at the first commit boundary after this many operations.
const WRITE_BATCH: usize = 1000;

/// The receiving end of a restore: declarations, record states and commit boundaries, in order.
pub(crate) trait Sink {
    fn declare(&mut self, spec: &CollectionSpec) -> Result<(), SyncError>;
    fn put(&mut self, collection: &str, id: &str, version: u64, doc: Value) -> Result<(), SyncError>;
    fn delete(&mut self, collection: &str, id: &str) -> Result<(), SyncError>;
    /// The end of one source commit (or of a snapshot chunk): a safe place to write what is buffered.
    fn boundary(&mut self) -> Result<(), SyncError>;
    /// The next points of a metric series, in history order: series come one after the other, each
    /// series' points in one or more calls.
    fn metric_points(&mut self, run: &str, key: &str, points: &[Point]) -> Result<(), SyncError>;
    /// Writes everything still buffered.
    fn finish(&mut self) -> Result<(), SyncError>;
}

enum Op {
    Put(String, String, u64, Value),
    Delete(String, String),
}

/// Writes into a store, one transaction per batch of whole source commits. Artifact object records are
/// written with their blob pointers emptied (they name the source's blob files; the restore gives them
/// local ones once their bytes are in); multipart uploads in progress are not written.
pub(crate) struct StoreSink<'a> {
    store: &'a Store,
    ops: Vec<Op>,
    /// Whether artifact objects can be given their bytes after the records (an artifact store was given).
    artifacts: bool,
    metrics: PointWriter,
}

/// Collections of multipart uploads in progress: not restored (their parts' bytes are not exported).
fn unrestored(collection: &str) -> bool {
    collection == UPLOADS || collection == PARTS
}

impl<'a> StoreSink<'a> {
    pub fn new(store: &'a Store, artifacts: bool) -> Self {
        Self { store, ops: Vec::new(), artifacts, metrics: PointWriter::new(store, false) }
    }

    fn write(&mut self) -> Result<(), SyncError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.ops);
        self.store
            .transaction(|tx| {
                for op in ops {
                    match op {
                        Op::Put(c, id, version, doc) => tx.restore_doc(&c, &id, version, doc)?,
                        Op::Delete(c, id) => tx.delete_doc(&c, &id, None)?,
                    }
                }
                Ok(())
            })
            .map_err(|e| match e {
                WriteError::NotFound { collection, id } => SyncError::corrupt(
                    "segments",
                    format!("a change deletes {collection}/{id}, which the restored state does not hold"),
                ),
                other => other.into(),
            })
    }
}

impl Sink for StoreSink<'_> {
    fn declare(&mut self, spec: &CollectionSpec) -> Result<(), SyncError> {
        self.write()?;
        if self.store.collections().iter().any(|s| s == spec) {
            return Ok(());
        }
        self.store.declare(spec.clone())?;
        Ok(())
    }

    fn put(&mut self, collection: &str, id: &str, version: u64, doc: Value) -> Result<(), SyncError> {
        if unrestored(collection) {
            return Ok(());
        }
        let doc = if collection == OBJECTS {
            if !self.artifacts {
                return Err(SyncError::invalid(format!(
                    "the location holds artifact objects ({OBJECTS}/{id}) but the restore was not given an \
                     artifact store to put their bytes in"
                )));
            }
            portable_document(&doc)
        } else {
            doc
        };
        self.ops.push(Op::Put(collection.to_owned(), id.to_owned(), version, doc));
        Ok(())
    }

    fn delete(&mut self, collection: &str, id: &str) -> Result<(), SyncError> {
        if unrestored(collection) {
            return Ok(());
        }
        self.ops.push(Op::Delete(collection.to_owned(), id.to_owned()));
        Ok(())
    }

    fn boundary(&mut self) -> Result<(), SyncError> {
        if self.ops.len() >= WRITE_BATCH {
            self.write()?;
        }
        Ok(())
    }

    fn metric_points(&mut self, run: &str, key: &str, points: &[Point]) -> Result<(), SyncError> {
        for p in points {
            self.metrics.push(run, key, *p)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SyncError> {
        self.write()?;
        self.metrics.flush()
    }
}

/// Keeps `(collection, id) → (version, digest)`: the state a restore would produce, for verification;
/// each artifact object's content: `id → (SHA-256 hex, size)`; and each metric series' digest.
#[derive(Default)]
pub(crate) struct DigestSink {
    pub records: Records,
    pub objects: BTreeMap<String, (String, u64)>,
    pub metrics: SeriesDigester,
}

impl Sink for DigestSink {
    fn declare(&mut self, _spec: &CollectionSpec) -> Result<(), SyncError> {
        Ok(())
    }

    fn put(&mut self, collection: &str, id: &str, version: u64, doc: Value) -> Result<(), SyncError> {
        if collection == OBJECTS {
            let meta = Artifacts::document_meta(&doc, version)
                .map_err(|e| SyncError::corrupt(format!("{OBJECTS}/{id}"), e.to_string()))?;
            self.objects.insert(id.to_owned(), (hex::encode(meta.sha256), meta.size));
        }
        let digest = record_digest_in(collection, version, &doc);
        self.records.insert((collection.to_owned(), id.to_owned()), (version, digest));
        Ok(())
    }

    fn delete(&mut self, collection: &str, id: &str) -> Result<(), SyncError> {
        if collection == OBJECTS {
            self.objects.remove(id);
        }
        match self.records.remove(&(collection.to_owned(), id.to_owned())) {
            Some(_) => Ok(()),
            None => Err(SyncError::corrupt(
                "segments",
                format!("a change deletes {collection}/{id}, which the restored state does not hold"),
            )),
        }
    }

    fn boundary(&mut self) -> Result<(), SyncError> {
        Ok(())
    }

    fn metric_points(&mut self, run: &str, key: &str, points: &[Point]) -> Result<(), SyncError> {
        points.iter().for_each(|p| self.metrics.add(run, key, p));
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SyncError> {
        Ok(())
    }
}
