//! Behaviour through the public API: group commit, atomic batches under concurrency, durability modes,
//! snapshots across flush and compaction, input validation, stats, and write stalls.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use cairn_engine::{
    Compression, Db, Durability, FaultKind, FaultOp, LeveledPolicy, MemStorage, WriteBatch, WriteError, WriteOptions,
    MAX_KEY_LEN, MAX_VALUE_LEN,
};

fn mem_db(storage: &MemStorage, durability: Durability) -> Db {
    Db::builder()
        .storage(Arc::new(storage.clone()))
        .durability(durability)
        .sync_interval(Duration::from_millis(10))
        .memtable_size(32 * 1024)
        .table_size(32 * 1024)
        .compaction_policy(Arc::new(LeveledPolicy::new(2, 64 * 1024, 4)))
        .open(Path::new("/db"))
        .unwrap()
}

#[test]
fn concurrent_durable_commits_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let db = db.clone();
            thread::spawn(move || {
                for i in 0..200 {
                    db.put(format!("t{t}/{i:04}"), format!("{t}-{i}")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = db.stats();
    assert_eq!(stats.commits, 1600);
    assert!(stats.write_groups < stats.commits, "some commits were grouped: {stats:?}");
    assert!(stats.wal_syncs <= stats.write_groups + 2, "one sync per group: {stats:?}");
    for t in 0..8 {
        assert_eq!(db.prefix(format!("t{t}/")).unwrap().count(), 200);
    }
}

#[test]
fn batches_are_atomic_for_concurrent_readers() {
    let storage = MemStorage::new();
    let db = mem_db(&storage, Durability::None);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let db = db.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut round = 0u32;
            while !stop.load(Ordering::Relaxed) && round < 3000 {
                let mut batch = WriteBatch::new();
                for pair in 0..10 {
                    let v = format!("{round:08}-{}", "x".repeat(40));
                    batch.put(format!("a/{pair}"), &v).put(format!("b/{pair}"), &v);
                }
                db.write(batch).unwrap();
                round += 1;
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let db = db.clone();
            thread::spawn(move || {
                // At least 300 reads, and on until a flush has run under them (the writer may be slow to
                // fill a memtable on a loaded machine).
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                let mut reads = 0;
                while reads < 300 || db.stats().flushes == 0 {
                    assert!(std::time::Instant::now() < deadline, "no flush within 60 s of writes");
                    reads += 1;
                    let snap = db.snapshot();
                    let a: Vec<_> = snap.prefix("a/").unwrap().map(|kv| kv.unwrap().1).collect();
                    let b: Vec<_> = snap.prefix("b/").unwrap().map(|kv| kv.unwrap().1).collect();
                    assert_eq!(a, b, "a snapshot saw half a batch");
                    let pair = db.range_rev("a/".as_bytes().."b/".as_bytes()).unwrap().count();
                    assert!(pair == 0 || pair == 10);
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn durability_modes_and_what_a_power_cut_keeps() {
    // Immediate: acknowledged means synced.
    let storage = MemStorage::new();
    let db = mem_db(&storage, Durability::Immediate);
    db.put(b"k", b"immediate").unwrap();
    let image = storage.crash_image();
    assert_eq!(mem_db(&image, Durability::Immediate).get(b"k").unwrap(), Some(b"immediate".to_vec()));
    drop(db);

    // Buffered: synced by the background thread within the interval.
    let storage = MemStorage::new();
    let db = mem_db(&storage, Durability::Buffered);
    db.put(b"k", b"buffered").unwrap();
    thread::sleep(Duration::from_millis(200));
    let image = storage.crash_image();
    assert_eq!(mem_db(&image, Durability::Immediate).get(b"k").unwrap(), Some(b"buffered".to_vec()));
    assert!(db.stats().wal_syncs >= 1);
    drop(db);

    // None: nothing is synced until a flush; a per-commit Immediate override is.
    let storage = MemStorage::new();
    let db = mem_db(&storage, Durability::None);
    db.put(b"lost", b"x").unwrap();
    assert_eq!(db.stats().wal_syncs, 0);
    let image = storage.crash_image();
    assert_eq!(mem_db(&image, Durability::Immediate).get(b"lost").unwrap(), None);
    db.write_with(
        {
            let mut b = WriteBatch::new();
            b.put(b"kept", b"y");
            b
        },
        WriteOptions::durability(Durability::Immediate),
    )
    .unwrap();
    let image = storage.crash_image();
    let reopened = mem_db(&image, Durability::Immediate);
    assert_eq!(reopened.get(b"kept").unwrap(), Some(b"y".to_vec()));
    assert_eq!(reopened.get(b"lost").unwrap(), Some(b"x".to_vec()), "synced along with the later record");
}

#[test]
fn snapshots_survive_flush_and_compaction() {
    let storage = MemStorage::new();
    let db = mem_db(&storage, Durability::None);
    for i in 0..500 {
        db.put(format!("k{i:04}"), "old").unwrap();
    }
    let snap = db.snapshot();
    for i in 0..500 {
        if i % 2 == 0 {
            db.delete(format!("k{i:04}")).unwrap();
        } else {
            db.put(format!("k{i:04}"), "new").unwrap();
        }
    }
    db.compact().unwrap();
    assert_eq!(snap.get("k0000").unwrap(), Some(b"old".to_vec()));
    assert_eq!(snap.range("k".as_bytes()..).unwrap().count(), 500);
    assert!(snap.prefix("k").unwrap().all(|kv| kv.unwrap().1 == b"old"));
    assert_eq!(db.get("k0000").unwrap(), None);
    assert_eq!(db.prefix("k").unwrap().count(), 250);
    assert_eq!(db.prefix_rev("k").unwrap().next().unwrap().unwrap().0, b"k0499");
    let seq = snap.sequence();
    drop(snap);
    db.compact().unwrap();
    assert!(db.last_sequence() > seq);
    assert_eq!(db.prefix("k").unwrap().count(), 250);
    let stats = db.stats();
    assert!(stats.compactions >= 2 && stats.flushes >= 1, "{stats:?}");
    assert!(stats.write_amplification() > 1.0);
}

#[test]
fn scans_yield_the_newest_version_of_each_key_owned_or_borrowed() {
    let storage = MemStorage::new();
    let db = mem_db(&storage, Durability::None);
    for round in 0..3u8 {
        for k in ["a", "b", "c"] {
            db.put(k, [round]).unwrap();
        }
    }
    db.delete("b").unwrap();
    let want = vec![(b"a".to_vec(), vec![2]), (b"c".to_vec(), vec![2])];
    let owned: Vec<_> = db.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(owned, want);
    let mut reversed: Vec<_> = db.range_rev::<&[u8], _>(..).unwrap().collect::<Result<_, _>>().unwrap();
    reversed.reverse();
    assert_eq!(reversed, want);
    for reverse in [false, true] {
        let mut iter = if reverse { db.range_rev::<&[u8], _>(..) } else { db.range::<&[u8], _>(..) }.unwrap();
        let mut borrowed = Vec::new();
        while let Some(pair) = iter.next_ref() {
            let (k, v) = pair.unwrap();
            borrowed.push((k.to_vec(), v.to_vec()));
        }
        assert!(iter.next_ref().is_none() && iter.next().is_none(), "an ended scan stays ended");
        if reverse {
            borrowed.reverse();
        }
        assert_eq!(borrowed, want, "reverse {reverse}");
    }
    // Owned and borrowed steps mix on one iterator.
    let mut iter = db.iter().unwrap();
    assert_eq!(iter.next_ref().unwrap().unwrap(), (b"a".as_slice(), [2].as_slice()));
    assert_eq!(iter.next().unwrap().unwrap(), (b"c".to_vec(), vec![2]));
    assert!(iter.next_ref().is_none());
}

#[test]
fn invalid_input_is_rejected_and_changes_nothing() {
    let storage = MemStorage::new();
    let db = mem_db(&storage, Durability::Immediate);
    assert!(matches!(db.put(b"", b"v"), Err(WriteError::InvalidKey { len: 0, .. })));
    assert!(matches!(db.put(vec![1u8; MAX_KEY_LEN + 1], b"v"), Err(WriteError::InvalidKey { .. })));
    let mut batch = WriteBatch::new();
    batch.put(b"good", b"v").put(b"", b"bad");
    assert!(matches!(db.write(batch), Err(WriteError::InvalidKey { .. })));
    assert_eq!(db.get(b"good").unwrap(), None, "a rejected batch writes nothing");
    let huge = WriteError::ValueTooLarge { len: MAX_VALUE_LEN + 1, max: MAX_VALUE_LEN };
    assert!(huge.to_string().contains("exceeds"));
    assert_eq!(db.stats().commits, 0);
    db.put(b"good", b"v").unwrap();
    assert_eq!(db.get(b"good").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn heavy_writes_with_tiny_memtables_slow_down_but_finish() {
    let storage = MemStorage::new();
    let db = Db::builder()
        .storage(Arc::new(storage.clone()))
        .durability(Durability::None)
        .memtable_size(8 * 1024)
        .table_size(16 * 1024)
        .level0_slowdown_trigger(3)
        .level0_stop_trigger(6)
        .compaction_policy(Arc::new(LeveledPolicy::new(4, 32 * 1024, 4)))
        .open(Path::new("/db"))
        .unwrap();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let db = db.clone();
            thread::spawn(move || {
                for i in 0..3000 {
                    db.put(format!("{t}/{i:05}"), vec![t as u8; 64]).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(db.iter().unwrap().count(), 12_000);
    let stats = db.stats();
    assert!(stats.flushes > 10, "{stats:?}");
    assert!(stats.compactions > 0, "{stats:?}");
    assert!(stats.levels[0].tables < 6 + 2, "level 0 stays bounded: {stats:?}");
    assert!(stats.levels.iter().skip(2).any(|l| l.tables > 0), "data reached level 2 or deeper: {stats:?}");
    assert!(db.verify().unwrap() > 0);
}

/// A database whose level 0 never compacts, holding one flushed table, so that every later group meets
/// the slowdown trigger (1). The flush's own commit may meet it too, if the flush installs before that
/// commit's leader checks again.
fn slowed_db(storage: &MemStorage, rate: u64) -> Db {
    let db = Db::builder()
        .storage(Arc::new(storage.clone()))
        .durability(Durability::None)
        .level0_slowdown_trigger(1)
        .level0_slowdown_rate(rate)
        .compaction_policy(Arc::new(LeveledPolicy::new(1000, 1 << 30, 10)))
        .open(Path::new("/db"))
        .unwrap();
    db.put(b"first", b"v").unwrap();
    db.flush().unwrap();
    assert_eq!(db.stats().levels[0].tables, 1);
    db
}

/// Makes `n` commits of about 20 bytes each, one after another, on a [`slowed_db`] held to `rate` bytes a
/// second; returns how many of them were slowed and the microseconds they waited.
fn small_commits_at(rate: u64, n: u32) -> (u64, u64) {
    let db = slowed_db(&MemStorage::new(), rate);
    let before = db.stats();
    for i in 0..n {
        db.put(i.to_le_bytes(), b"small").unwrap();
    }
    let after = db.stats();
    assert_eq!(db.get((n - 1).to_le_bytes()).unwrap(), Some(b"small".to_vec()));
    db.close().unwrap();
    (after.write_slowdowns - before.write_slowdowns, after.write_stall_micros - before.write_stall_micros)
}

#[test]
fn writers_are_slowed_only_when_they_outrun_the_slowdown_rate() {
    // 200 commits add 4 KB: at 16 MiB/s, 240 us of writing, within the 1 ms burst.
    assert_eq!(small_commits_at(16 << 20, 200), (0, 0));
    // At 1 KiB/s each is some 30 ms of writing, more than the burst: each waits 1 ms.
    let (slowed, stalled) = small_commits_at(1 << 10, 50);
    assert_eq!(slowed, 50);
    assert!(stalled >= 50 * 1000, "{stalled} us");
    assert!(matches!(
        Db::builder().storage(Arc::new(MemStorage::new())).level0_slowdown_rate(0).open(Path::new("/db")),
        Err(cairn_engine::OpenError::InvalidOptions(_))
    ));
}

#[test]
fn a_manual_compaction_finishes_with_level0_at_its_stop_trigger() {
    // Background compaction never picks level 0, so only the manual compaction can empty it; its own flush
    // must not wait for the background at the stop trigger.
    let db = Db::builder()
        .storage(Arc::new(MemStorage::new()))
        .durability(Durability::None)
        .level0_slowdown_trigger(1)
        .level0_stop_trigger(3)
        .compaction_policy(Arc::new(LeveledPolicy::new(1000, 1 << 30, 10)))
        .open(Path::new("/db"))
        .unwrap();
    for i in 0..3u32 {
        db.put(i.to_le_bytes(), b"v").unwrap();
        db.flush().unwrap();
    }
    assert_eq!(db.stats().levels[0].tables, 3);
    db.put(b"last", b"v").unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let compacting = db.clone();
    thread::spawn(move || done.send(compacting.compact()).unwrap());
    finished.recv_timeout(Duration::from_secs(30)).expect("the compaction finished").unwrap();
    assert_eq!(db.stats().levels[0].tables, 0);
    assert_eq!(db.get(b"last").unwrap(), Some(b"v".to_vec()));
    assert_eq!(db.get(2u32.to_le_bytes()).unwrap(), Some(b"v".to_vec()));
}

#[test]
fn conditional_writes_make_a_race_free_counter() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.put(b"counter", 0u64.to_le_bytes()).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let db = db.clone();
            thread::spawn(move || {
                let (mut done, mut conflicts) = (0u64, 0u64);
                while done < 50 {
                    let snap = db.snapshot();
                    let current = u64::from_le_bytes(snap.get(b"counter").unwrap().unwrap().try_into().unwrap());
                    let mut batch = WriteBatch::new();
                    batch.put(b"counter", (current + 1).to_le_bytes());
                    match db.write_if(
                        batch,
                        vec![cairn_engine::Condition::unchanged_since(b"counter".to_vec(), snap.sequence())],
                        WriteOptions::default(),
                    ) {
                        Ok(_) => done += 1,
                        Err(WriteError::ConditionFailed { key }) => {
                            assert_eq!(key, b"counter");
                            conflicts += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let value = u64::from_le_bytes(db.get(b"counter").unwrap().unwrap().try_into().unwrap());
    assert_eq!(value, 300, "every successful increment counted once ({conflicts} conflicts retried)");
    // A key that did not exist: absent-then-created counts as a change.
    let snap = db.snapshot();
    db.put(b"new", b"x").unwrap();
    let mut batch = WriteBatch::new();
    batch.put(b"other", b"y");
    let err = db.write_if(
        batch,
        vec![cairn_engine::Condition::unchanged_since(b"new".to_vec(), snap.sequence())],
        WriteOptions::default(),
    );
    assert!(matches!(err, Err(WriteError::ConditionFailed { .. })));
    assert_eq!(db.get(b"other").unwrap(), None, "a failed condition writes nothing");
}

fn ingest_db(storage: &MemStorage) -> Db {
    Db::builder()
        .storage(Arc::new(storage.clone()))
        .durability(Durability::None)
        .memtable_size(32 * 1024)
        .table_size(16 * 1024)
        .ingest_threshold(8 * 1024)
        .compaction_policy(Arc::new(LeveledPolicy::new(2, 64 * 1024, 4)))
        .open(Path::new("/db"))
        .unwrap()
}

#[test]
fn large_batches_are_ingested_as_tables_atomically_and_durably() {
    let storage = MemStorage::new();
    let db = ingest_db(&storage);
    // Older versions in a table, in a frozen memtable's worth of WAL and in the active memtable.
    for i in 0..400 {
        db.put(format!("k{i:04}"), format!("old-{i}")).unwrap();
    }
    db.put(b"k0001", b"memtable").unwrap();
    let before = db.snapshot();
    let mut batch = WriteBatch::new();
    for i in (0..400).rev() {
        batch.put(format!("k{i:04}"), format!("first-{i:0>120}"));
    }
    for i in (0..400).step_by(3) {
        batch.put(format!("k{i:04}"), format!("new-{i}")); // a later write to the same key wins
    }
    batch.delete(b"k0002").put(b"z-added", b"1");
    assert!(batch.encoded_len() >= 8 * 1024);
    let seq = db.write(batch).unwrap();
    let stats = db.stats();
    assert_eq!(stats.ingested_batches, 1, "{stats:?}");

    let expect = |db: &Db| {
        for i in 0..400 {
            let want = match i {
                2 => None,
                i if i % 3 == 0 => Some(format!("new-{i}")),
                i => Some(format!("first-{i:0>120}")),
            };
            assert_eq!(db.get(format!("k{i:04}")).unwrap().map(|v| String::from_utf8(v).unwrap()), want, "k{i:04}");
        }
        assert_eq!(db.get(b"z-added").unwrap(), Some(b"1".to_vec()));
        assert_eq!(db.prefix("k").unwrap().count(), 399);
    };
    expect(&db);
    // The snapshot taken before sees none of it.
    assert_eq!(before.get(b"k0001").unwrap(), Some(b"memtable".to_vec()));
    assert_eq!(before.get(b"k0002").unwrap(), Some(b"old-2".to_vec()));
    assert_eq!(before.get(b"z-added").unwrap(), None);
    drop(before);
    // Later small writes land above it.
    db.put(b"k0003", b"after").unwrap();
    assert!(db.last_sequence() > seq);
    assert_eq!(db.get(b"k0003").unwrap(), Some(b"after".to_vec()));

    // Durable at once although the database's durability is None; the later small write is not.
    let image = storage.crash_image();
    let reopened = ingest_db(&image);
    assert_eq!(reopened.get(b"k0003").unwrap(), Some(b"new-3".to_vec()));
    assert_eq!(reopened.get(b"k0004").unwrap(), Some(format!("first-{:0>120}", 4).into_bytes()));
    assert_eq!(reopened.get(b"k0002").unwrap(), None);
    reopened.compact().unwrap();
    assert_eq!(reopened.get(b"k0006").unwrap(), Some(b"new-6".to_vec()));
    assert_eq!(reopened.prefix("k").unwrap().count(), 399);
}

#[test]
fn a_failed_ingest_leaves_nothing_behind() {
    for op in [FaultOp::Write, FaultOp::Sync, FaultOp::Rename] {
        let storage = MemStorage::new();
        let db = ingest_db(&storage);
        db.put(b"before", b"1").unwrap();
        db.flush().unwrap();
        let mut batch = WriteBatch::new();
        for i in 0..300 {
            batch.put(format!("bulk{i:04}"), [7u8; 100]);
        }
        storage.fail(op, 0, FaultKind::NoSpace);
        let result = db.write(batch);
        storage.heal();
        if op == FaultOp::Rename && result.is_ok() {
            // The manifest was not rolled over, so no rename happened: the ingest is whole.
            assert_eq!(db.prefix("bulk").unwrap().count(), 300);
            continue;
        }
        assert!(result.is_err(), "{op:?}");
        let image = storage.crash_image();
        drop(db);
        let reopened = ingest_db(&image);
        assert_eq!(reopened.get(b"before").unwrap(), Some(b"1".to_vec()), "{op:?}");
        let bulk = reopened.prefix("bulk").unwrap().count();
        assert!(bulk == 0 || bulk == 300, "{op:?}: {bulk} of 300");
        assert!(reopened.verify().is_ok());
    }
}

#[test]
fn ingested_tables_join_the_deepest_level_nothing_overlaps() {
    let storage = MemStorage::new();
    let db = ingest_db(&storage);
    let bulk = |prefix: &str, value: &str| {
        let mut batch = WriteBatch::new();
        for i in 0..200 {
            batch.put(format!("{prefix}{i:04}"), format!("{value}-{i:0>80}"));
        }
        db.write(batch).unwrap();
    };
    let levels = |db: &Db| db.stats().levels.iter().map(|l| l.tables).collect::<Vec<_>>();
    // Into an empty store: the bottom level.
    bulk("m", "one");
    let after_first = levels(&db);
    let bottom = after_first.len() - 1;
    assert!(after_first[bottom] > 0 && after_first[..bottom].iter().all(|&n| n == 0), "{after_first:?}");
    // A disjoint range joins it there too.
    bulk("a", "two");
    assert_eq!(levels(&db)[..bottom].iter().sum::<usize>(), 0, "{:?}", levels(&db));
    // An overlapping one must sit above the older versions.
    bulk("m", "three");
    let after_third = levels(&db);
    assert!(after_third[..bottom].iter().sum::<usize>() > 0, "{after_third:?}");
    for (prefix, value) in [("m", "three"), ("a", "two")] {
        for i in (0..200).step_by(17) {
            let want = format!("{value}-{i:0>80}").into_bytes();
            assert_eq!(db.get(format!("{prefix}{i:04}")).unwrap(), Some(want));
        }
    }
    assert_eq!(db.prefix("m").unwrap().count(), 200);
    db.compact().unwrap();
    assert_eq!(db.get(b"m0100").unwrap(), Some(format!("three-{:0>80}", 100).into_bytes()));
    let reopened = {
        drop(db);
        ingest_db(&storage)
    };
    assert_eq!(reopened.get(b"a0005").unwrap(), Some(format!("two-{:0>80}", 5).into_bytes()));
    assert!(reopened.verify().is_ok());
}

/// Bytes of the `.sst` files in `dir`.
fn table_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn tables_with_dictionaries_are_smaller_and_read_back_after_reopen() {
    // Documents alike in their fields, different in their values, as a collection's are.
    let record = |i: u32| {
        format!(
            concat!(
                r#"{{"id":"job-{:06}","name":"train-model-{}","owner":"user{}","project":"project{}","#,
                r#""priority":{},"created_at":{},"status":"PENDING","resources":{{"cpus":8,"memory_mb":32768}},"#,
                r#""image":"registry.local/ml/pytorch:2.4-cuda12","labels":{{"team":"team-{}","tier":"batch"}}}}"#
            ),
            i,
            i % 997,
            i % 50,
            i % 20,
            i.wrapping_mul(7919) % 1000,
            1_700_000_000_000u64 + u64::from(i.wrapping_mul(2_654_435_761) % 86_400_000),
            i % 9
        )
    };
    let sizes: Vec<u64> =
        [Compression::Zstd { level: -1 }, Compression::ZstdDictionary { level: -1, dictionary_size: 8 << 10 }]
            .into_iter()
            .map(|compression| {
                let dir = tempfile::tempdir().unwrap();
                let open = || Db::builder().compression(compression).block_size(8 << 10).open(dir.path()).unwrap();
                let db = open();
                let mut batch = WriteBatch::new();
                for i in 0..20_000 {
                    batch.put(format!("r/jobs/{i:06}"), record(i));
                }
                db.write(batch).unwrap();
                db.compact().unwrap();
                db.close().unwrap();
                let db = open();
                for i in (0..20_000).step_by(997) {
                    assert_eq!(db.get(format!("r/jobs/{i:06}")).unwrap(), Some(record(i).into_bytes()));
                }
                assert_eq!(db.iter().unwrap().count(), 20_000);
                assert!(db.verify().unwrap() >= 20_000);
                db.close().unwrap();
                table_bytes(dir.path())
            })
            .collect();
    assert!(sizes[1] * 10 < sizes[0] * 9, "tables: {} bytes with dictionaries, {} without", sizes[1], sizes[0]);
    let bad = Compression::ZstdDictionary { level: 1, dictionary_size: 10 };
    assert!(matches!(
        Db::builder().storage(Arc::new(MemStorage::new())).compression(bad).open(Path::new("/db")),
        Err(cairn_engine::OpenError::InvalidOptions(_))
    ));
}
