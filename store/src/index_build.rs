//! Online index builds: a declaration that adds or changes indexes of a collection that already has records
//! builds them while commits go on, as PostgreSQL's `CREATE INDEX CONCURRENTLY` does.
//!
//! 1. **Start.** Each index to build gets a fresh key (`name@N`, see `catalog`) and joins the catalog as
//!    *building*, with the declaration being made: from this commit on every record write maintains it,
//!    while queries use only complete indexes (an index that changes fields under its name keeps serving
//!    queries in its old form).
//! 2. **Backfill.** The collection's records are read in key order, [`BUILD_CHUNK`] at a time, and their
//!    entries in the new indexes written. Each chunk is read and written with record writes held off (the
//!    store's write lock, held exclusively for one chunk, under a millisecond), so an entry is always
//!    computed from the record as it is: a write before the chunk is seen by it, a write after it maintains
//!    the entry itself. Writers wait at most a chunk, never the whole build.
//! 3. **Switch.** One catalog commit makes the new declaration complete: its indexes ready, dropped and
//!    replaced indexes retired.
//! 4. **Clean-up.** Entries of retired keys are deleted in batches (nothing writes or reads them any more),
//!    then the catalog forgets the keys.
//!
//! Steps 1 and 3 replace the declaration with record writes held off, so a transaction that staged writes
//! under the previous one fails with a conflict rather than commit entries of the wrong indexes. A build
//! cut short (a crash, a failed write) is finished when the store is next opened, and a declaration made
//! meanwhile starts over: the building indexes it finds are retired and built again under fresh keys.

use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_engine::{Durability, WriteBatch, WriteOptions};
use parking_lot::RwLockWriteGuard;

use crate::catalog::{Declared, StoredIndex};
use crate::envelope;
use crate::error::{DeclareError, StoreError};
use crate::keys;
use crate::record::CollectionSpec;
use crate::store::Store;

/// Records indexed per exclusive hold of the write lock.
pub(crate) const BUILD_CHUNK: usize = 100;
/// Longest a build waits between two chunks for the commits waiting to write records.
const YIELD_TO_WRITES: Duration = Duration::from_millis(1);
/// Entries deleted per batch when a retired index is cleaned up.
const CLEAN_BATCH: usize = 1000;

/// Backfill and clean-up batches are not synced one by one: the catalog commit after them is written with
/// the database's durability, and recovery keeps a prefix of the commits, so once that commit is durable
/// the batches before it are too. A crash that loses some of them loses the catalog commit with them,
/// and the build is finished (or the clean-up done) again at the next open.
fn unsynced() -> WriteOptions {
    WriteOptions::durability(Durability::None)
}

impl Store {
    /// [`Store::declare`] once validated, with the declare lock held. Returns the declaration now in the
    /// catalog.
    pub(crate) fn declare_locked(&self, spec: CollectionSpec) -> Result<Arc<Declared>, DeclareError> {
        let old = self.catalog().read().get(&spec.name).cloned();
        let Some(old) = old else {
            // No records yet: nothing to build.
            let declared = Arc::new(Declared::new(spec));
            self.put_declared(&declared)?;
            self.catalog().write().insert(declared.name().to_owned(), declared.clone());
            if self.options().maintain {
                self.ensure_count(declared.name())?;
            }
            return Ok(declared);
        };
        if *old.spec == spec && !old.unfinished() {
            return Ok(old);
        }
        Ok(self.build(&old, spec)?)
    }

    /// Finishes what index builds a crash or a failed write left unfinished. Runs at open, before any
    /// other use of the store.
    pub(crate) fn finish_index_builds(&self) -> Result<(), StoreError> {
        let unfinished: Vec<Arc<Declared>> =
            self.catalog().read().values().filter(|d| d.unfinished()).cloned().collect();
        let _guard = self.declare_lock();
        for old in unfinished {
            let target = old.target.clone().unwrap_or_else(|| (*old.spec).clone());
            self.build(&old, target)?;
        }
        Ok(())
    }

    /// Makes `target` the declaration of `old`'s collection, building the indexes it adds or changes.
    fn build(&self, old: &Declared, target: CollectionSpec) -> Result<Arc<Declared>, StoreError> {
        // 1. Start: the indexes to build get fresh keys, and commits maintain them from now on.
        let mut start = old.clone();
        for left in start.indexes.iter().filter(|i| !i.ready) {
            start.retired.push(left.key.clone());
        }
        start.indexes.retain(|i| i.ready);
        for index in &target.indexes {
            if start.indexes.iter().any(|i| i.spec == *index) {
                continue;
            }
            // A build by an earlier version of the store keyed entries by the bare name; if one was cut
            // short, entries may remain under it.
            if !start.indexes.iter().any(|i| i.key == index.name) && !start.retired.contains(&index.name) {
                start.retired.push(index.name.clone());
            }
            let key = format!("{}@{}", index.name, start.next_key);
            start.next_key += 1;
            start.indexes.push(StoredIndex { spec: index.clone(), key, ready: false });
        }
        start.target = Some(target.clone());
        let start = Arc::new(start);
        self.replace_declared(&start)?;

        // 2. Backfill.
        let building: Vec<&StoredIndex> = start.indexes.iter().filter(|i| !i.ready).collect();
        self.backfill(start.name(), &building)?;

        // 3. Switch: the target's indexes, each under the key it was maintained by.
        let indexes: Vec<StoredIndex> = target
            .indexes
            .iter()
            .filter_map(|spec| start.indexes.iter().find(|i| i.spec == *spec))
            .map(|i| StoredIndex { ready: true, ..i.clone() })
            .collect();
        let mut retired = start.retired.clone();
        retired.extend(start.indexes.iter().filter(|i| !indexes.iter().any(|k| k.key == i.key)).map(|i| i.key.clone()));
        let done =
            Arc::new(Declared { spec: Arc::new(target), indexes, target: None, retired, next_key: start.next_key });
        self.replace_declared(&done)?;

        // 4. Clean-up.
        if done.retired.is_empty() {
            return Ok(done);
        }
        for key in &done.retired {
            self.delete_entries(done.name(), key)?;
        }
        let clean = Arc::new(Declared { retired: Vec::new(), ..(*done).clone() });
        // The indexes commits maintain are unchanged: no write lock needed, no transaction conflicts.
        self.put_declared(&clean)?;
        self.catalog().write().insert(clean.name().to_owned(), clean.clone());
        Ok(clean)
    }

    /// Writes the entries of `building` for every record of `collection`, a chunk at a time with record
    /// writes held off.
    fn backfill(&self, collection: &str, building: &[&StoredIndex]) -> Result<(), StoreError> {
        if building.is_empty() {
            return Ok(());
        }
        let prefix = keys::record_prefix(collection);
        let end = keys::after_prefix(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        let mut from = Bound::Included(prefix);
        loop {
            let writes = self.exclusive_writes();
            let mut batch = WriteBatch::new();
            let mut last = None;
            let mut records = 0;
            for pair in self.db().range((from.clone(), end.clone()))? {
                let (key, value) = pair?;
                let e = envelope::decode(&key, &value)?;
                let id = keys::parse_record_key(&key).map(|k| k.1).unwrap_or_default();
                for index in building {
                    batch.put(keys::index_key(collection, &index.key, &index.spec.fields, &e.doc, id), id.as_bytes());
                }
                last = Some(key);
                records += 1;
                if records == BUILD_CHUNK {
                    break;
                }
            }
            if !batch.is_empty() {
                self.db().write_with(batch, unsynced())?;
            }
            // Commits waiting for the lock get it before the next chunk (for a millisecond at most, should
            // new ones keep coming).
            RwLockWriteGuard::unlock_fair(writes);
            let until = Instant::now() + YIELD_TO_WRITES;
            while self.writes_waiting() && Instant::now() < until {
                std::thread::yield_now();
            }
            match last {
                Some(key) if records == BUILD_CHUNK => from = Bound::Excluded(key),
                _ => return Ok(()),
            }
        }
    }

    /// Deletes every entry of the index keyed `key`.
    fn delete_entries(&self, collection: &str, key: &str) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        for pair in self.db().prefix(keys::index_prefix(collection, key))? {
            batch.delete(pair?.0);
            if batch.len() >= CLEAN_BATCH {
                self.db().write_with(std::mem::take(&mut batch), unsynced())?;
            }
        }
        if !batch.is_empty() {
            self.db().write_with(batch, unsynced())?;
        }
        Ok(())
    }

    /// Persists `declared` and makes it the collection's declaration, with record writes held off so that
    /// no commit straddles the change.
    fn replace_declared(&self, declared: &Arc<Declared>) -> Result<(), StoreError> {
        let _exclusive = self.exclusive_writes();
        self.put_declared(declared)?;
        self.catalog().write().insert(declared.name().to_owned(), declared.clone());
        // Index scans remember where live entries start; entries written outside transactions (the
        // backfill) are not registered with them, so none may outlive a change of indexes.
        self.hints().reset();
        Ok(())
    }

    /// Persists `declared` in the catalog.
    fn put_declared(&self, declared: &Declared) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.put(keys::catalog_key(declared.name()), declared.encode());
        self.db().write(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use serde_json::json;

    use super::*;
    use crate::{IndexSpec, Query, StoreOptions};

    fn with_records(dir: &std::path::Path, spec: &CollectionSpec, n: usize) -> Store {
        let store = Store::open(dir).unwrap();
        store.declare(spec.clone()).unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let mut tx = store.begin();
            for i in chunk {
                tx.insert_doc(&spec.name, &format!("r{i:06}"), json!({"a": i % 5, "b": i % 3})).unwrap();
            }
            tx.commit().unwrap();
        }
        store
    }

    /// Entries under the index key `key` of collection `c`.
    fn entries(store: &Store, key: &str) -> usize {
        store.db().prefix(keys::index_prefix("c", key)).unwrap().count()
    }

    /// Regression: a declaration that built an index held every record write off until it was done.
    #[test]
    fn commits_go_on_while_an_index_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let only_a = CollectionSpec::new("c", vec![IndexSpec::new("a", &["a"])]);
        let store = with_records(dir.path(), &only_a, 100 * BUILD_CHUNK);
        let c = store.collection_dyn("c").unwrap();
        let (building, stop, during) = (AtomicBool::new(false), AtomicBool::new(false), AtomicU64::new(0));
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    c.upsert(&format!("r{:06}", n * 7919 % 10_000), json!({"a": n % 5, "b": n})).unwrap();
                    if building.load(Ordering::Acquire) {
                        during.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            building.store(true, Ordering::Release);
            store
                .declare(CollectionSpec::new("c", vec![IndexSpec::new("a", &["a"]), IndexSpec::new("b", &["b"])]))
                .unwrap();
            building.store(false, Ordering::Release);
            stop.store(true, Ordering::Release);
        });
        // Writers get the lock between two chunks (while it was held for the whole build, at most one commit
        // straddled it). How many depends on how often the writer thread is scheduled: on a loaded 2-core
        // machine as few as 6 were seen, against 100+ when idle.
        let during = during.load(Ordering::Relaxed);
        assert!(during >= 3, "{during} commits while 100 chunks were indexed");
        store.check_indexes().unwrap();
    }

    /// Regression: while an index was rebuilt, queries planned on it found its entries gone (they were
    /// deleted first), and an index changing fields under its name shared its entries' keys with the old.
    #[test]
    fn queries_during_builds_see_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let on_a = CollectionSpec::new("c", vec![IndexSpec::new("k", &["a"])]);
        let on_b = CollectionSpec::new("c", vec![IndexSpec::new("k", &["b"])]);
        let store = with_records(dir.path(), &on_a, 5000);
        let c = store.collection_dyn("c").unwrap();
        let stop = AtomicBool::new(false);
        let queries = AtomicU64::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Acquire) {
                    for a in 0..5 {
                        // Served by `k` while it is on `a`, by a full scan while it is on `b`.
                        assert_eq!(c.count(&Query::new().eq("a", a)).unwrap(), 1000, "a = {a}");
                    }
                    assert_eq!(c.count(&Query::new().eq("b", 2)).unwrap(), 1666);
                    queries.fetch_add(1, Ordering::Relaxed);
                }
            });
            for round in 0..6 {
                store.declare(if round % 2 == 0 { on_b.clone() } else { on_a.clone() }).unwrap();
            }
            // At least one round of queries after the last declaration.
            let seen = queries.load(Ordering::Relaxed);
            while queries.load(Ordering::Relaxed) < seen + 2 {
                std::thread::yield_now();
            }
            stop.store(true, Ordering::Release);
        });
        assert_eq!(store.collections(), [on_a]);
        store.check_indexes().unwrap();
        // Each build had a key of its own; the entries of the five earlier ones are gone.
        assert_eq!(entries(&store, "k@6"), 5000);
        for key in ["k", "k@1", "k@2", "k@3", "k@4", "k@5"] {
            assert_eq!(entries(&store, key), 0, "{key}");
        }
        // The catalog names the key; a reopened store queries through it.
        drop((c, store));
        let store = Store::open(dir.path()).unwrap();
        let c = store.collection_dyn("c").unwrap();
        assert_eq!(c.explain(&Query::new().eq("a", 1)).unwrap().index.as_deref(), Some("k"));
        assert_eq!(c.count(&Query::new().eq("a", 1)).unwrap(), 1000);
        store.check_indexes().unwrap();
    }

    /// A build cut short (here: its catalog entry as a crash during the backfill leaves it, with part of
    /// the entries written) is finished when the store is opened again, and the stray entries go.
    #[test]
    fn an_interrupted_build_is_finished_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let on_a = CollectionSpec::new("c", vec![IndexSpec::new("k", &["a"]), IndexSpec::new("gone", &["b"])]);
        let target = CollectionSpec::new("c", vec![IndexSpec::new("k", &["a"]), IndexSpec::new("new", &["b"])]);
        let store = with_records(dir.path(), &on_a, 3000);
        let old = store.spec("c").unwrap();
        let mut cut = (*old).clone();
        cut.indexes.push(StoredIndex { spec: IndexSpec::new("new", &["b"]), key: "new@1".into(), ready: false });
        cut.target = Some(target.clone());
        cut.next_key = 2;
        let mut batch = WriteBatch::new();
        batch.put(keys::catalog_key("c"), cut.encode());
        // Part of the backfill, and an entry a crashed build of an older store left under a bare name.
        batch.put(keys::index_key("c", "new@1", &["b".into()], &json!({"b": 1}), "r000001"), b"r000001");
        batch.put(keys::index_key("c", "new", &["b".into()], &json!({"b": 1}), "r000001"), b"r000001");
        store.db().write(batch).unwrap();
        drop(store);

        // Opening for a check changes nothing.
        let db = cairn_engine::Db::open(dir.path()).unwrap();
        let checking = Store::with_db(db, StoreOptions::for_check()).unwrap();
        assert_eq!(checking.collections(), std::slice::from_ref(&on_a));
        drop(checking);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.collections(), [target]);
        store.check_indexes().unwrap();
        // Built again under a fresh key; the partial build's entries, the stray ones and the dropped
        // index's are gone.
        assert_eq!(entries(&store, "new@2"), 3000);
        for key in ["new@1", "new", "gone"] {
            assert_eq!(entries(&store, key), 0, "{key}");
        }
        let d = store.spec("c").unwrap();
        assert!(!d.unfinished() && d.indexes.iter().all(|i| i.ready), "{d:?}");
        let c = store.collection_dyn("c").unwrap();
        assert_eq!(c.count(&Query::new().eq("b", 1)).unwrap(), 1000);
    }
}
