//! Record counts kept per collection: every commit that inserts or deletes records of a collection writes
//! one count entry with the net change, keyed by its commit sequence, in the same batch as the records; a
//! collection's count is the sum of its entries. Folding replaces a collection's entries by one holding
//! their sum. See `docs/collections.md`, "Record counts".

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use cairn_engine::{Snapshot, WriteBatch};

use crate::envelope;
use crate::error::{ReadError, StoreError};
use crate::keys;
use crate::store::Store;

/// Entries a collection's count may have before a read of it folds them.
const FOLD_AT: usize = 256;
/// Count entries written since the last fold after which the retention thread is asked to fold.
const NUDGE_AT: u64 = 10_000;

/// The store's bookkeeping of count entries.
#[derive(Debug, Default)]
pub(crate) struct CountState {
    /// Serializes folds and the first count of a collection.
    lock: Mutex<()>,
    /// Count entries written since the last fold.
    unfolded: AtomicU64,
}

/// The key of the entry a fold or a first count writes: `prefix ++ seq (u64 BE) ++ 0xFFFFFFFF`.
#[expect(clippy::big_endian_bytes, reason = "count keys sort in commit order like the change feed's")]
fn base_key(collection: &str, seq: u64) -> Vec<u8> {
    let mut k = keys::count_prefix(collection);
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(&u32::MAX.to_be_bytes());
    k
}

fn decode(key: &[u8], value: &[u8]) -> Result<i64, StoreError> {
    value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_le_bytes)
        .ok_or_else(|| StoreError::undecodable(key, "count entry"))
}

/// The sum of a collection's count entries at `snap` and how many there are; `None` if it has none.
pub(crate) fn sum_at(snap: &Snapshot, collection: &str) -> Result<Option<(i64, usize)>, StoreError> {
    let mut sum = 0i64;
    let mut entries = 0;
    for pair in snap.prefix(keys::count_prefix(collection))? {
        let (key, value) = pair?;
        sum += decode(&key, &value)?;
        entries += 1;
    }
    Ok((entries > 0).then_some((sum, entries)))
}

/// Records of a collection at `snap`, counted one by one.
pub(crate) fn scan_at(snap: &Snapshot, collection: &str) -> Result<u64, StoreError> {
    let mut n = 0;
    for pair in snap.prefix(keys::record_prefix(collection))? {
        let (key, value) = pair?;
        envelope::decode(&key, &value)?;
        n += 1;
    }
    Ok(n)
}

impl Store {
    /// The number of records of `collection`, kept by every write: reads the collection's few count
    /// entries, not its records.
    pub fn record_count(&self, collection: &str) -> Result<u64, ReadError> {
        self.spec(collection)?;
        let snap = self.db().snapshot();
        let found = sum_at(&snap, collection)?;
        let (sum, entries) = match found {
            Some(f) => f,
            None => {
                // Counts are kept from the first open of the collection by this version; counted once then.
                drop(snap);
                self.ensure_count(collection)?;
                sum_at(&self.db().snapshot(), collection)?.unwrap_or_default()
            }
        };
        if entries > FOLD_AT {
            self.fold_counts(collection)?;
        }
        Ok(sum.max(0) as u64)
    }

    /// Writes a collection's first count entry, from a count of its records, if it has no count entry.
    pub(crate) fn ensure_count(&self, collection: &str) -> Result<(), StoreError> {
        let counts = self.counts();
        let _lock = counts.lock.lock();
        let snap = self.db().snapshot();
        if sum_at(&snap, collection)?.is_some() {
            return Ok(());
        }
        // Commits after the snapshot write entries of their own, at later sequences.
        let n = scan_at(&snap, collection)?;
        self.db().put(base_key(collection, snap.sequence()), (n as i64).to_le_bytes())?;
        Ok(())
    }

    /// Replaces a collection's count entries by one holding their sum.
    pub(crate) fn fold_counts(&self, collection: &str) -> Result<(), StoreError> {
        let counts = self.counts();
        let Some(_lock) = counts.lock.try_lock() else { return Ok(()) };
        let snap = self.db().snapshot();
        let mut batch = WriteBatch::new();
        let mut sum = 0i64;
        for pair in snap.prefix(keys::count_prefix(collection))? {
            let (key, value) = pair?;
            sum += decode(&key, &value)?;
            batch.delete(&key);
        }
        if batch.len() <= 1 {
            return Ok(());
        }
        batch.put(base_key(collection, snap.sequence()), sum.to_le_bytes());
        self.db().write(batch)?;
        Ok(())
    }

    /// Folds the count entries of every collection.
    pub(crate) fn fold_all_counts(&self) -> Result<(), StoreError> {
        self.counts().unfolded.store(0, Ordering::Relaxed);
        for spec in self.collections() {
            self.fold_counts(&spec.name)?;
        }
        Ok(())
    }

    /// Notes count entries a commit wrote; asks the retention thread to fold when many piled up.
    pub(crate) fn note_counted(&self, entries: u64) {
        if entries > 0 && self.counts().unfolded.fetch_add(entries, Ordering::Relaxed) + entries >= NUDGE_AT {
            self.retention().nudge();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use cairn_engine::{Compression, Db, MemStorage, Options};
    use serde_json::json;

    use super::*;
    use crate::{CollectionSpec, IndexSpec, StoreOptions};

    fn declared(db: Db) -> Store {
        let store = Store::with_db(db, StoreOptions::default()).unwrap();
        store.declare(CollectionSpec::new("c", vec![IndexSpec::new("k", &["k"])])).unwrap();
        store.declare(CollectionSpec::new("d", vec![])).unwrap();
        store
    }

    fn scanned(store: &Store, collection: &str) -> u64 {
        scan_at(&store.db().snapshot(), collection).unwrap()
    }

    #[test]
    fn counts_follow_inserts_deletes_and_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let store = declared(Db::open(dir.path()).unwrap());
        let c = store.collection_dyn("c").unwrap();
        for i in 0..5 {
            c.insert(&format!("r{i}"), json!({"k": i})).unwrap();
        }
        c.upsert("r0", json!({"k": 9})).unwrap();
        c.delete("r1", None).unwrap();
        assert!(c.insert("r2", json!({})).is_err(), "a refused write counts nothing");
        store
            .transaction(|tx| {
                tx.insert_doc("c", "t1", json!({}))?;
                tx.insert_doc("d", "t1", json!({}))?;
                tx.delete_doc("c", "r2", None)?;
                tx.upsert_doc("c", "r3", json!({"k": 3}))?;
                // Inserted then deleted in one transaction: never counted.
                tx.insert_doc("c", "gone", json!({}))?;
                tx.delete_doc("c", "gone", None)
            })
            .unwrap();
        // A transaction that fails writes no count either.
        let failed = store.transaction(|tx| {
            tx.insert_doc("c", "t2", json!({}))?;
            tx.insert_doc("c", "t1", json!({}))
        });
        assert!(failed.is_err());
        assert_eq!((store.record_count("c").unwrap(), scanned(&store, "c")), (4, 4));
        assert_eq!((store.record_count("d").unwrap(), scanned(&store, "d")), (1, 1));
        assert!(matches!(store.record_count("nope"), Err(ReadError::UnknownCollection(_))));
        store.check_indexes().unwrap();
    }

    #[test]
    fn many_entries_fold_into_one_and_the_count_stays() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::default().change_trim_interval(std::time::Duration::ZERO);
        let store = Store::with_db(Db::open(dir.path()).unwrap(), opts).unwrap();
        store.declare(CollectionSpec::new("c", vec![])).unwrap();
        let c = store.collection_dyn("c").unwrap();
        for i in 0..600 {
            c.insert(&format!("r{i}"), json!({})).unwrap();
            if i % 3 == 0 {
                c.delete(&format!("r{i}"), None).unwrap();
            }
        }
        let entries = |store: &Store| sum_at(&store.db().snapshot(), "c").unwrap().unwrap().1;
        assert!(entries(&store) > FOLD_AT);
        assert_eq!(store.record_count("c").unwrap(), 400);
        assert_eq!(entries(&store), 1, "the read folded the entries");
        c.insert("more", json!({})).unwrap();
        assert_eq!(store.record_count("c").unwrap(), 401);
        store.check_indexes().unwrap();
    }

    /// A store written before counts were kept has none: its counts are computed once, when it is opened.
    #[test]
    fn stores_without_counts_get_them_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = declared(Db::open(dir.path()).unwrap());
            let c = store.collection_dyn("c").unwrap();
            for i in 0..7 {
                c.insert(&format!("r{i}"), json!({"k": i})).unwrap();
            }
            let mut batch = WriteBatch::new();
            for pair in store.db().prefix(keys::COUNTS).unwrap() {
                batch.delete(pair.unwrap().0);
            }
            store.db().write(batch).unwrap();
            assert!(sum_at(&store.db().snapshot(), "c").unwrap().is_none());
            store.check_indexes().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert!(sum_at(&store.db().snapshot(), "c").unwrap().is_some(), "written at open");
        assert_eq!(store.record_count("c").unwrap(), 7);
        assert_eq!(store.record_count("d").unwrap(), 0);
        store.collection_dyn("c").unwrap().delete("r0", None).unwrap();
        assert_eq!(store.record_count("c").unwrap(), 6);
    }

    #[test]
    fn the_check_finds_a_count_that_disagrees() {
        let dir = tempfile::tempdir().unwrap();
        let store = declared(Db::open(dir.path()).unwrap());
        store.collection_dyn("c").unwrap().insert("a", json!({})).unwrap();
        store.check_indexes().unwrap();
        store.db().put(base_key("c", 1), 5i64.to_le_bytes()).unwrap();
        let err = store.check_indexes().unwrap_err().to_string();
        assert!(err.contains("record count 6 kept for 1 records"), "{err}");
    }

    /// Power cuts while writers insert and delete: after each, the count is the number of records.
    #[test]
    fn counts_survive_crashes() {
        let fs = MemStorage::new();
        let open = |fs: &MemStorage| {
            Options::default().storage(Arc::new(fs.clone())).compression(Compression::None).open(Path::new("/db"))
        };
        let store = declared(open(&fs).unwrap());
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                let c = store.collection_dyn("c").unwrap();
                for i in 0..400 {
                    c.insert(&format!("r{i}"), json!({"k": i})).unwrap();
                    if i % 4 == 1 {
                        store
                            .transaction(|tx| {
                                tx.delete_doc("c", &format!("r{}", i - 1), None)?;
                                tx.insert_doc("d", &format!("r{i}"), json!({}))
                            })
                            .unwrap();
                    }
                }
            })
        };
        let mut images = Vec::new();
        while !writer.is_finished() {
            images.push(fs.crash(images.len() as u64, cairn_engine::CrashMode::Mixed));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        writer.join().unwrap();
        images.push(fs.crash_image());
        for image in &images {
            let store = Store::with_db(open(image).unwrap(), StoreOptions::default()).unwrap();
            for name in ["c", "d"] {
                assert_eq!(store.record_count(name).unwrap(), scanned(&store, name));
            }
            store.check_indexes().unwrap();
        }
        assert_eq!(store.record_count("c").unwrap(), 300);
    }
}
