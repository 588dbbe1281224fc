//! Point reads through the public handle: `get_with` reads values in place from every kind of source.

use std::path::Path;
use std::sync::Arc;

use crate::{Db, Durability, MemStorage, StorageError, WriteBatch};

fn mem_db() -> Db {
    Db::builder()
        .storage(Arc::new(MemStorage::new()))
        .durability(Durability::None)
        .memtable_size(64 * 1024)
        .open(Path::new("/db"))
        .unwrap()
}

/// `get_with` sees what `get` sees, from the memtable, level 0, a deeper level and a snapshot, and calls
/// its closure only for a value: never for a tombstone or a missing key.
#[test]
fn get_with_reads_in_place_what_get_reads() {
    let db = mem_db();
    let value = |i: u32, round: u32| format!("value-{i}-{round}-{}", "x".repeat((i % 40) as usize)).into_bytes();
    let check = |db: &Db, round: u32, deleted: &dyn Fn(u32) -> bool| {
        for i in 0..500u32 {
            let key = format!("key-{i:05}");
            let want = (!deleted(i)).then(|| value(i, round));
            assert_eq!(db.get(&key).unwrap(), want, "get {key}");
            let mut calls = 0;
            let got = db
                .get_with(&key, |v| {
                    calls += 1;
                    v.to_vec()
                })
                .unwrap();
            assert_eq!(got, want, "get_with {key}");
            assert_eq!(calls, usize::from(want.is_some()));
        }
        assert_eq!(db.get_with("key-absent", |v| v.len()).unwrap(), None);
    };
    let write = |round: u32| {
        let mut batch = WriteBatch::new();
        for i in 0..500u32 {
            batch.put(format!("key-{i:05}"), value(i, round));
        }
        db.write(batch).unwrap();
    };

    write(0);
    check(&db, 0, &|_| false); // the memtable
    db.flush().unwrap();
    check(&db, 0, &|_| false); // a level-0 table
    db.compact().unwrap();
    check(&db, 0, &|_| false); // a deeper level
    let snapshot = db.snapshot();
    write(1);
    for i in (0..500u32).step_by(3) {
        db.delete(format!("key-{i:05}")).unwrap();
    }
    let deleted = |i: u32| i.is_multiple_of(3);
    check(&db, 1, &deleted); // tombstones in the memtable over values in a table
    db.flush().unwrap();
    check(&db, 1, &deleted); // tombstones in level 0
                             // The snapshot still reads round 0, from the deeper level, past the newer versions.
    for i in 0..500u32 {
        let key = format!("key-{i:05}");
        assert_eq!(snapshot.get_with(&key, <[u8]>::to_vec).unwrap(), Some(value(i, 0)), "snapshot {key}");
    }
    drop(snapshot);
    db.compact().unwrap();
    check(&db, 1, &deleted);

    // The closure's result comes back as is; the value borrowed is the stored one.
    assert_eq!(
        db.get_with("key-00001", |v| (v.len(), v.first().copied())).unwrap(),
        Some((value(1, 1).len(), Some(b'v')))
    );
    let other = db.clone();
    db.close().unwrap();
    assert!(matches!(other.get_with("key-00001", |v| v.len()), Err(StorageError::Closed)));
}

/// A flush puts its data blocks into the block cache (`cache_flushed_blocks`): the first reads of the table
/// it wrote find every block there. With the option off, the first read of each block misses.
#[test]
fn a_flush_puts_its_blocks_in_the_cache() {
    for cached in [true, false] {
        let db = Db::builder()
            .storage(Arc::new(MemStorage::new()))
            .durability(Durability::None)
            .block_cache_size(8 << 20)
            .cache_flushed_blocks(cached)
            .open(Path::new("/db"))
            .unwrap();
        let value = |i: u32| vec![i as u8; 100];
        let mut batch = WriteBatch::new();
        for i in 0..2000u32 {
            batch.put(format!("key-{i:05}"), value(i));
        }
        db.write(batch).unwrap();
        db.flush().unwrap();
        let before = db.stats();
        assert_eq!(before.levels.iter().map(|l| l.tables).sum::<usize>(), 1);
        assert_eq!(before.memtable_bytes, 0);
        for i in 0..2000u32 {
            assert_eq!(db.get(format!("key-{i:05}")).unwrap(), Some(value(i)));
        }
        let after = db.stats();
        let (hits, misses) = (after.cache_hits - before.cache_hits, after.cache_misses - before.cache_misses);
        if cached {
            assert_eq!((hits, misses), (2000, 0));
        } else {
            // 2000 pairs of about 110 bytes in blocks of 4 KiB: some 55 blocks, each missed once.
            assert!(misses >= 40 && hits + misses == 2000, "hits {hits}, misses {misses}");
        }
    }
}

/// The tables a flush, a compaction or an ingest adds are open (index and filter loaded) before the version
/// that holds them is installed: no read waits for a new table's index to load.
#[test]
fn new_tables_are_open_before_any_read() {
    let db = Db::builder()
        .storage(Arc::new(MemStorage::new()))
        .durability(Durability::None)
        .ingest_threshold(4096)
        .compaction_policy(Arc::new(crate::LeveledPolicy::new(8, 1 << 30, 10)))
        .open(Path::new("/db"))
        .unwrap();
    let all_open = |what: &str| {
        let version = db.inner().current_view().version.clone();
        let tables: Vec<_> = version.tables().collect();
        assert!(!tables.is_empty(), "{what}: a table");
        for (level, t) in tables {
            assert!(t.is_open(), "{what}: table {} in level {level} is not open", t.meta.number);
        }
    };
    for round in 0..3u32 {
        db.put(format!("key-{round}"), "value").unwrap();
        db.flush().unwrap();
        all_open("after a flush");
    }
    db.compact().unwrap();
    all_open("after a compaction");
    let mut batch = WriteBatch::new();
    for i in 0..100 {
        batch.put(format!("ingested-{i:03}"), [7u8; 100]);
    }
    db.write(batch).unwrap();
    all_open("after an ingest");
    assert_eq!(db.stats().levels.iter().map(|l| l.tables).sum::<usize>(), 2);
    assert_eq!(db.get("key-1").unwrap().as_deref(), Some(&b"value"[..]));
    assert_eq!(db.get("ingested-099").unwrap(), Some(vec![7u8; 100]));
}

/// The flush thread builds the active memtable's fingers once it holds enough entries, and scans that
/// start from them read what they read without.
#[test]
fn the_flush_thread_builds_the_memtables_fingers() {
    use std::time::{Duration, Instant};
    let db = Db::builder()
        .storage(Arc::new(MemStorage::new()))
        .durability(Durability::None)
        .memtable_size(4 << 20)
        .open(Path::new("/db"))
        .unwrap();
    let keys: Vec<String> = (0..6000u32).map(|i| format!("key-{:08}", i.wrapping_mul(2_654_435_761))).collect();
    for chunk in keys.chunks(500) {
        let mut batch = WriteBatch::new();
        for k in chunk {
            batch.put(k, k);
        }
        db.write(batch).unwrap();
    }
    let before: Vec<_> = db.range("key-4".."key-6").unwrap().map(Result::unwrap).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.inner().current_view().mem.fingers_bytes() == 0 {
        assert!(Instant::now() < deadline, "no fingers built");
        std::thread::sleep(Duration::from_millis(10));
    }
    let after: Vec<_> = db.range("key-4".."key-6").unwrap().map(Result::unwrap).collect();
    assert_eq!(before, after);
    let mut sorted: Vec<&String> = keys.iter().filter(|k| k.as_str() >= "key-4" && k.as_str() < "key-6").collect();
    sorted.sort();
    assert_eq!(
        after.iter().map(|(k, _)| k.as_slice()).collect::<Vec<_>>(),
        sorted.iter().map(|k| k.as_bytes()).collect::<Vec<_>>()
    );
    for k in keys.iter().step_by(97) {
        assert_eq!(db.get(k).unwrap().as_deref(), Some(k.as_bytes()));
    }
}

/// The flush thread makes the next memtable while it flushes the last, and the next memtable switch takes
/// it: writers do not wait for a memtable's key index and filter to be mapped.
#[test]
fn a_memtable_switch_takes_the_memtable_made_ahead() {
    let db = mem_db();
    assert!(db.inner().spare_mem.lock().is_none(), "nothing is made ahead before a flush");
    let fill = |round: u32| {
        let mut batch = WriteBatch::new();
        for i in 0..200u32 {
            batch.put(format!("key-{round}-{i:05}"), vec![round as u8; 400]);
        }
        db.write(batch).unwrap();
    };
    fill(0);
    db.flush().unwrap();
    let spare = db.inner().spare_mem.lock().clone().expect("the flush thread made a memtable ahead");
    assert!(!Arc::ptr_eq(&spare, &db.inner().current_view().mem));
    // Past the memtable's size, the next write switches to the memtable made ahead.
    fill(1);
    fill(2);
    assert!(Arc::ptr_eq(&spare, &db.inner().current_view().mem), "the switch took the memtable made ahead");
    db.flush().unwrap();
    for round in 0..3u32 {
        for i in (0..200u32).step_by(37) {
            assert_eq!(db.get(format!("key-{round}-{i:05}")).unwrap(), Some(vec![round as u8; 400]));
        }
    }
}

/// A policy that never compacts and counts how often the compaction thread asked it.
#[derive(Debug, Default)]
struct CountingPolicy(std::sync::atomic::AtomicUsize);

impl crate::compaction::CompactionPolicy for CountingPolicy {
    fn choose(&self, _: &[crate::compaction::LevelInfo]) -> Option<crate::compaction::CompactionTask> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        None
    }
}

#[test]
fn a_released_snapshot_wakes_compaction_only_if_a_table_is_newer_than_it() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};

    let policy = Arc::new(CountingPolicy::default());
    let db = Db::builder()
        .storage(Arc::new(MemStorage::new()))
        .durability(Durability::None)
        .compaction_policy(policy.clone())
        .open(Path::new("/db"))
        .unwrap();
    let asked = || policy.0.load(SeqCst);
    // Waits until the compaction thread has asked the policy `more` times beyond `from`, or a second passed.
    let wait_for = |from: usize, more: usize| {
        let start = Instant::now();
        while asked() < from + more && start.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(5));
        }
        asked() - from
    };
    db.put("a", "1").unwrap();
    db.flush().unwrap();
    assert!(wait_for(0, 1) >= 1, "a flush wakes compaction");
    let before = asked();
    // Newer than every table: its release frees nothing, so compaction is not woken for it.
    for _ in 0..100 {
        drop(db.snapshot());
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(asked(), before, "no table was kept for those snapshots");
    // A table written after this snapshot may hold entries kept for it: its release wakes compaction.
    let snap = db.snapshot();
    db.put("a", "2").unwrap();
    db.flush().unwrap();
    wait_for(before, 1);
    std::thread::sleep(Duration::from_millis(100));
    let after_flush = asked();
    drop(snap);
    assert!(wait_for(after_flush, 1) >= 1, "the release of a snapshot older than a table wakes compaction");
}

#[test]
fn a_manual_compaction_runs_no_background_compaction_beside_it() {
    // Level 0 compacts down from its second table: the flush inside `compact` asks for a background
    // compaction that the full merge makes moot.
    let db = Db::builder()
        .storage(Arc::new(MemStorage::new()))
        .durability(Durability::None)
        .compaction_policy(Arc::new(crate::LeveledPolicy::new(2, 1 << 30, 10)))
        .open(Path::new("/db"))
        .unwrap();
    for round in 0..5u32 {
        db.put(format!("k{round}"), "v").unwrap();
        db.flush().unwrap();
        let before = db.stats().compactions;
        db.put(format!("k{round}-after"), "v").unwrap();
        db.compact().unwrap();
        assert_eq!(db.stats().compactions, before + 1, "round {round}: the manual compaction alone");
        assert_eq!(db.get(format!("k{round}")).unwrap().as_deref(), Some(&b"v"[..]));
    }
}

/// Regression: since obsolete tables are retired by a background thread, `compact` returned before the
/// files of the tables it replaced were removed, so a listing right after it could still show them (or
/// lose them while being read). Each round races the retiring thread; without the wait, some round loses.
#[test]
fn compact_returns_once_the_replaced_tables_are_removed() {
    let storage = MemStorage::new();
    let db =
        Db::builder().storage(Arc::new(storage.clone())).durability(Durability::None).open(Path::new("/db")).unwrap();
    let tables = || storage.files().iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "sst")).count();
    for round in 0..100u32 {
        for part in 0..2u32 {
            db.put(format!("key-{round:02}-{part}"), "value").unwrap();
            db.flush().unwrap();
        }
        db.compact().unwrap();
        assert_eq!(tables(), 1, "round {round}: only the compacted table is left");
    }
}

/// `written_after` answers from the memtables (a set and a delete both count, a snapshot sees only commits
/// up to it) and says `None` once a flush or an ingest wrote a later sequence to a table.
#[test]
fn written_after_answers_from_the_memtables_until_a_table_holds_later_writes() {
    let db = Db::builder()
        .storage(Arc::new(MemStorage::new()))
        .durability(Durability::None)
        .ingest_threshold(4096)
        .open(Path::new("/db"))
        .unwrap();
    let first = db.put("a", "1").unwrap();
    db.put("b", "1").unwrap();
    assert_eq!(db.written_after("a", first).unwrap(), Some(false), "b's write is not a's");
    assert_eq!(db.written_after("a", first - 1).unwrap(), Some(true), "a's own write");
    assert_eq!(db.written_after("absent", 0).unwrap(), Some(false));
    let snap = db.snapshot();
    let deleted = db.delete("a").unwrap();
    assert_eq!(db.written_after("a", first).unwrap(), Some(true), "a delete is a write");
    assert_eq!(snap.written_after("a", first).unwrap(), Some(false), "the delete is after the snapshot");
    assert_eq!(db.written_after("a", deleted).unwrap(), Some(false));

    db.flush().unwrap();
    assert_eq!(db.written_after("a", first).unwrap(), None, "the delete may be in a table");
    assert_eq!(snap.written_after("a", first).unwrap(), None);
    let flushed = db.last_sequence();
    assert_eq!(db.written_after("a", flushed).unwrap(), Some(false), "nothing was written since the flush");
    db.put("a", "2").unwrap();
    assert_eq!(db.written_after("a", flushed).unwrap(), Some(true));
    drop(snap);

    // A batch past the ingest threshold goes to a table without passing through a memtable.
    let before = db.last_sequence();
    let mut batch = WriteBatch::new();
    for i in 0..100 {
        batch.put(format!("ingested-{i:03}"), [7u8; 100]);
    }
    db.write(batch).unwrap();
    assert_eq!(db.get("ingested-000").unwrap(), Some(vec![7u8; 100]));
    assert_eq!(db.written_after("ingested-000", before).unwrap(), None, "the ingest wrote a table");
    assert_eq!(db.written_after("ingested-000", db.last_sequence()).unwrap(), Some(false));
}

/// A compaction that drops a key's delete and the value under it can leave the tables' newest sequence
/// below the delete's; `written_after` must still not answer from the memtables for sequences before the
/// delete, which no memtable holds.
#[test]
fn written_after_stays_unknown_when_a_compaction_drops_the_newest_writes() {
    let db = mem_db();
    let set = db.put("k", "v").unwrap();
    db.flush().unwrap();
    db.delete("k").unwrap();
    db.flush().unwrap();
    db.compact().unwrap();
    assert_eq!(db.get("k").unwrap(), None);
    assert_eq!(db.written_after("k", set).unwrap(), None, "k was deleted after `set`");
}

/// A synced group of at least `OVERLAP_APPLY_ENTRIES` entries asks for its WAL append to start on its way
/// to the disk before it goes into the memtable and the sync; smaller groups and unsynced ones do not.
#[test]
fn a_large_synced_group_starts_writing_its_wal_append_before_its_sync() {
    use super::write::OVERLAP_APPLY_ENTRIES;
    use crate::WriteOptions;
    let fs = MemStorage::new();
    let db =
        Db::builder().storage(Arc::new(fs.clone())).durability(Durability::Immediate).open(Path::new("/db")).unwrap();
    let wal = fs.files().into_iter().map(|(p, _)| p).find(|p| p.extension().is_some_and(|e| e == "wal"));
    let wal = wal.expect("a WAL");
    let batch = |entries: u32, tag: &str| {
        let mut batch = WriteBatch::new();
        for i in 0..entries {
            batch.put(format!("{tag}-{i:04}"), tag);
        }
        batch
    };
    let large = OVERLAP_APPLY_ENTRIES as u32;
    let hints = fs.writebacks(&wal);
    db.write(batch(large - 1, "small")).unwrap();
    db.write_with(batch(large, "buffered"), WriteOptions::durability(Durability::Buffered)).unwrap();
    assert_eq!(fs.writebacks(&wal), hints);
    db.write(batch(large, "large")).unwrap();
    assert_eq!(fs.writebacks(&wal), hints + 1);
    for tag in ["small", "buffered", "large"] {
        assert_eq!(db.get(format!("{tag}-0009")).unwrap().as_deref(), Some(tag.as_bytes()));
    }
}

/// A database that compacts level 0 into level 1 after every flush, and whose compactions split their
/// outputs by `partitions` if given.
fn compacting_db(partitions: Option<fn(&[u8]) -> usize>) -> Db {
    let mut options = Db::builder()
        .storage(Arc::new(MemStorage::new()))
        .durability(Durability::None)
        .compaction_policy(Arc::new(crate::LeveledPolicy::new(1, 1 << 30, 10)));
    if let Some(p) = partitions {
        options = options.table_partitions(p);
    }
    options.open(Path::new("/db")).unwrap()
}

/// Writes `keys` (each its own value), flushes them to a level-0 table and waits for the background
/// compaction to empty level 0.
fn write_and_compact(db: &Db, keys: &[String]) {
    let mut batch = WriteBatch::new();
    for k in keys {
        batch.put(k, k.as_bytes());
    }
    db.write(batch).unwrap();
    db.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while db.stats().levels.first().is_some_and(|l| l.tables > 0) {
        assert!(std::time::Instant::now() < deadline, "level 0 was not compacted");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Level 1 as (table number, smallest user key, largest user key), checked sorted and disjoint.
fn level1(db: &Db) -> Vec<(u64, Vec<u8>, Vec<u8>)> {
    let version = db.inner().current_view().version.clone();
    let tables: Vec<_> = version.levels[1]
        .iter()
        .map(|t| (t.meta.number, t.smallest_user().to_vec(), t.largest_user().to_vec()))
        .collect();
    for pair in tables.windows(2) {
        assert!(pair[0].2 < pair[1].1, "level 1 overlaps: {tables:?}");
    }
    tables
}

fn keys(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:04}")).collect()
}

/// An L0→L1 compaction merges the level-1 tables that hold one of its inputs' keys, not every table in
/// their key range: a level-1 table inside the range that holds none of them stays as it is, and no output
/// runs across it.
#[test]
fn a_compaction_leaves_the_tables_below_that_hold_none_of_its_keys() {
    let db = compacting_db(None);
    write_and_compact(&db, &keys("m", 0..200));
    let before = level1(&db);
    assert_eq!(before.len(), 1);
    // A level-0 table from `a-0001` to `z-0001`, around the `m` table but holding none of its keys.
    write_and_compact(&db, &["a-0001".to_owned(), "z-0001".to_owned()]);
    let after = level1(&db);
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after[1], before[0], "the table of `m` keys stays");
    assert_eq!((after[0].1.as_slice(), after[2].2.as_slice()), (&b"a-0001"[..], &b"z-0001"[..]));
    for k in keys("m", 0..200).iter().chain(&["a-0001".to_owned(), "z-0001".to_owned()]) {
        assert_eq!(db.get(k).unwrap().as_deref(), Some(k.as_bytes()), "{k}");
    }
    // A key inside the `m` table's range does merge it.
    write_and_compact(&db, &["m-0100x".to_owned()]);
    let last = level1(&db);
    assert!(last.iter().all(|t| t.0 != before[0].0), "the `m` table is merged: {last:?}");
    assert_eq!(db.get("m-0100x").unwrap().as_deref(), Some(&b"m-0100x"[..]));
    assert_eq!(db.get("m-0199").unwrap().as_deref(), Some(&b"m-0199"[..]));
}

/// With `table_partitions`, compactions never write keys of two partitions into one table, so new keys in
/// one partition leave another's tables alone even where a level-0 table spans both.
#[test]
fn compactions_keep_partitions_in_tables_of_their_own() {
    // The first byte names the partition.
    let db = compacting_db(Some(|k: &[u8]| k.len().min(1)));
    let mut first: Vec<String> = keys("a", 0..200);
    first.extend(keys("m", 0..200));
    write_and_compact(&db, &first);
    let before = level1(&db);
    assert_eq!(before.len(), 2, "one table per partition: {before:?}");
    assert!(before.iter().all(|t| t.1[0] == t.2[0]), "{before:?}");
    // New `a` keys and `m` keys past the last: the `a` table is merged, the `m` table stays.
    write_and_compact(&db, &["a-0050x".to_owned(), "m-0500".to_owned()]);
    let after = level1(&db);
    assert!(after.iter().all(|t| t.1[0] == t.2[0]), "{after:?}");
    assert!(after.contains(&before[1]), "the `m` table stays: {after:?}");
    assert!(!after.contains(&before[0]), "the `a` table is merged: {after:?}");
    for k in first.iter().chain(&["a-0050x".to_owned(), "m-0500".to_owned()]) {
        assert_eq!(db.get(k).unwrap().as_deref(), Some(k.as_bytes()), "{k}");
    }
    let scanned: Vec<_> = db.range::<&[u8], _>(..).unwrap().map(|p| p.unwrap().0).collect();
    assert_eq!(scanned.len(), 402);
    assert!(scanned.windows(2).all(|w| w[0] < w[1]));
}
