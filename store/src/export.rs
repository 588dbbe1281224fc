//! Reading every collection at one commit sequence ([`StoreSnapshot`]): what export tools use to copy a
//! store consistently while it keeps taking writes. The metrics of the same snapshot are read through
//! [`StoreSnapshot::metric_series`] and [`StoreSnapshot::metric_points`] (`metrics/export.rs`).

use std::ops::Bound;

use serde_json::Value;

use cairn_engine::Iter;
use cairn_engine::Snapshot;

use crate::envelope::{self, stored};
use crate::error::{ReadError, StoreError};
use crate::keys;
use crate::record::{CollectionSpec, Stored};
use crate::store::Store;
use crate::validate::{validate_id, validate_name};

/// The whole store as of one commit sequence: the catalog, every record and every metric series, unchanged
/// by later commits. Made by [`Store::snapshot`]. Pair it with [`Store::changes_since`]`(snapshot.sequence(), ..)` to follow
/// on from exactly where the snapshot ends.
pub struct StoreSnapshot {
    snap: Snapshot,
}

impl std::fmt::Debug for StoreSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSnapshot").field("seq", &self.snap.sequence()).finish()
    }
}

impl Store {
    /// A consistent view of every collection at the current commit sequence.
    pub fn snapshot(&self) -> StoreSnapshot {
        StoreSnapshot { snap: self.db().snapshot() }
    }
}

impl StoreSnapshot {
    /// The commit sequence the snapshot reads at: it holds every commit up to and including it.
    pub fn sequence(&self) -> u64 {
        self.snap.sequence()
    }

    /// The engine snapshot underneath (the metrics store reads its series through it).
    pub(crate) fn engine(&self) -> &Snapshot {
        &self.snap
    }

    /// The collections declared as of the snapshot, sorted by name.
    pub fn collections(&self) -> Result<Vec<CollectionSpec>, StoreError> {
        let mut out = Vec::new();
        for pair in self.snap.prefix(keys::CATALOG)? {
            let (key, value) = pair?;
            let spec: CollectionSpec =
                serde_json::from_slice(&value).map_err(|e| StoreError::undecodable(&key, e.to_string()))?;
            out.push(spec);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The records of `collection` in id order (byte order of the UTF-8 ids), starting after id `after`
    /// when given (to resume an interrupted copy). A collection with no records (or not declared) yields
    /// nothing.
    pub fn records(&self, collection: &str, after: Option<&str>) -> Result<SnapshotRecords, ReadError> {
        validate_name("collection", collection)?;
        let prefix = keys::record_prefix(collection);
        let lower = match after {
            Some(id) => Bound::Excluded(keys::record_key(collection, id)),
            None => Bound::Included(prefix.clone()),
        };
        let upper = keys::after_prefix(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        Ok(SnapshotRecords { iter: self.snap.range((lower, upper))? })
    }

    /// The record `id` of `collection` as of the snapshot.
    pub fn get(&self, collection: &str, id: &str) -> Result<Option<Stored<Value>>, ReadError> {
        validate_name("collection", collection)?;
        validate_id(id)?;
        let key = keys::record_key(collection, id);
        let Some(bytes) = self.snap.get(&key)? else { return Ok(None) };
        Ok(Some(stored(id, envelope::decode(&key, &bytes)?)))
    }
}

/// Iterator over one collection's records in a [`StoreSnapshot`], in id order.
pub struct SnapshotRecords {
    iter: Iter,
}

impl std::fmt::Debug for SnapshotRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotRecords").finish_non_exhaustive()
    }
}

impl Iterator for SnapshotRecords {
    type Item = Result<Stored<Value>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let pair = self.iter.next()?;
        Some(pair.map_err(StoreError::from).and_then(|(key, value)| {
            let (_, id) = keys::parse_record_key(&key).ok_or_else(|| StoreError::undecodable(&key, "record key"))?;
            Ok(stored(id, envelope::decode(&key, &value)?))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CollectionSpec, IndexSpec};
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.declare(CollectionSpec::new("jobs", vec![IndexSpec::new("status", &["status"])])).unwrap();
        store.declare(CollectionSpec::new("runs", vec![])).unwrap();
        (dir, store)
    }

    #[test]
    fn snapshot_reads_every_collection_at_one_sequence() {
        let (_dir, store) = store();
        let jobs = store.collection_dyn("jobs").unwrap();
        for i in 0..5 {
            jobs.insert(&format!("j{i}"), json!({"status": "PENDING", "n": i})).unwrap();
        }
        store.collection_dyn("runs").unwrap().insert("r1", json!({"a": 1})).unwrap();
        let snap = store.snapshot();
        assert_eq!(snap.sequence(), store.db().last_sequence());
        // Later commits are invisible to the snapshot.
        jobs.update("j0", 1, json!({"status": "RUNNING"})).unwrap();
        jobs.delete("j1", None).unwrap();
        jobs.insert("j9", json!({"status": "NEW"})).unwrap();
        store.declare(CollectionSpec::new("later", vec![])).unwrap();

        let names: Vec<_> = snap.collections().unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["jobs", "runs"]);
        let all: Vec<_> = snap.records("jobs", None).unwrap().map(Result::unwrap).collect();
        assert_eq!(all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["j0", "j1", "j2", "j3", "j4"]);
        assert_eq!(all[0].doc, json!({"status": "PENDING", "n": 0}));
        assert_eq!(all[0].version, 1);
        let rest: Vec<_> = snap.records("jobs", Some("j2")).unwrap().map(|r| r.unwrap().id).collect();
        assert_eq!(rest, ["j3", "j4"]);
        assert_eq!(snap.records("runs", None).unwrap().count(), 1);
        assert_eq!(snap.records("nothing", None).unwrap().count(), 0);
        assert!(snap.get("jobs", "j9").unwrap().is_none());
        assert_eq!(snap.get("jobs", "j1").unwrap().unwrap().version, 1);
        assert!(snap.records("bad name", None).is_err());
        // Changes after the snapshot's sequence are exactly the later commits.
        let later = store.changes_since(snap.sequence(), 100).unwrap();
        assert_eq!(later.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["j0", "j1", "j9"]);
    }

    #[test]
    fn restore_doc_writes_the_given_version_and_indexes_it() {
        let (_dir, store) = store();
        let jobs = store.collection_dyn("jobs").unwrap();
        jobs.insert("a", json!({"status": "OLD"})).unwrap();
        store
            .transaction(|tx| {
                tx.restore_doc("jobs", "a", 7, json!({"status": "DONE"}))?;
                tx.restore_doc("jobs", "b", 3, json!({"status": "DONE"}))
            })
            .unwrap();
        assert_eq!(jobs.get("a").unwrap().unwrap().version, 7);
        assert_eq!(jobs.get("b").unwrap().unwrap().version, 3);
        // A lower version than stored is written as given, too.
        store.transaction(|tx| tx.restore_doc("jobs", "a", 2, json!({"status": "DONE"}))).unwrap();
        assert_eq!(jobs.get("a").unwrap().unwrap().version, 2);
        let q = crate::Query::new().eq("status", "DONE");
        assert_eq!(jobs.count(&q).unwrap(), 2);
        store.check_indexes().unwrap();
        let events = store.changes_since(0, 100).unwrap();
        assert_eq!(events.last().map(|c| c.version), Some(2));
        let zero = store.transaction(|tx| tx.restore_doc("jobs", "c", 0, json!({})));
        assert!(matches!(zero, Err(crate::WriteError::Invalid(_))));
        let not_object = store.transaction(|tx| tx.restore_doc("jobs", "c", 1, json!(5)));
        assert!(matches!(not_object, Err(crate::WriteError::Invalid(_))));
        assert!(jobs.get("c").unwrap().is_none());
    }
}
