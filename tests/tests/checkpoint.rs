//! Checkpoints (`Db::checkpoint`, `cairn backup`): a consistent copy of a database taken while writers keep
//! committing, flushes and compactions running. Each copy opens, passes `Check`, and holds, for every
//! writer, a prefix of its commits that includes every commit acknowledged before the checkpoint began and
//! none attempted after it returned; its tables are hard links; it survives a power cut once made.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cairn_engine::{
    Check, CrashMode, Db, Durability, Error, LeveledPolicy, MemStorage, OpenError, Storage, WriteBatch,
};

const WRITERS: u64 = 3;

fn small(builder: cairn_engine::Options) -> cairn_engine::Options {
    builder
        .durability(Durability::Immediate)
        .memtable_size(16 * 1024)
        .table_size(16 * 1024)
        .block_size(512)
        .compaction_policy(Arc::new(LeveledPolicy::new(2, 32 * 1024, 2)))
}

fn key(w: u64, n: u64) -> Vec<u8> {
    format!("w{w}/{n:06}").into_bytes()
}

/// Writer `w`'s commits in `db`: they must be 1..=k for some k, each with its own value.
fn commits_of(db: &Db, w: u64) -> u64 {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = db.prefix(format!("w{w}/")).unwrap().map(Result::unwrap).collect();
    for (i, (k, v)) in pairs.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!((k, v), (&key(w, n), &cairn_tests::value(n)), "writer {w}: a hole or a foreign value at {n}");
    }
    pairs.len() as u64
}

#[test]
fn checkpoints_taken_during_concurrent_writes_are_consistent_copies() {
    let dir = tempfile::tempdir().unwrap();
    let db = small(Db::builder()).open(dir.path().join("live")).unwrap();
    let acked: Vec<AtomicU64> = (0..WRITERS).map(|_| AtomicU64::new(0)).collect();
    let attempted: Vec<AtomicU64> = (0..WRITERS).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (db, acked, attempted, stop) = (&db, &acked[w as usize], &attempted[w as usize], &stop);
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    attempted.store(n, Ordering::Release);
                    db.put(key(w, n), cairn_tests::value(n)).unwrap();
                    acked.store(n, Ordering::Release);
                }
            });
        }
        for round in 0..8 {
            std::thread::sleep(std::time::Duration::from_millis(30));
            let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
            let copy_dir = dir.path().join(format!("copy-{round}"));
            let info = db.checkpoint(&copy_dir).unwrap();
            let after: Vec<u64> = attempted.iter().map(|a| a.load(Ordering::Acquire)).collect();
            let report = Check::new().run(&copy_dir).unwrap();
            assert!(report.is_healthy(), "round {round}: {:?}", report.problems);
            let copy = Db::open(&copy_dir).unwrap();
            assert_eq!(copy.last_sequence(), info.last_sequence, "round {round}");
            for w in 0..WRITERS {
                let k = commits_of(&copy, w);
                let (lo, hi) = (before[w as usize], after[w as usize]);
                assert!((lo..=hi).contains(&k), "round {round}: writer {w} has {k} commits, expected {lo}..={hi}");
            }
            copy.close().unwrap();
        }
        stop.store(true, Ordering::Release);
    });
    assert!(db.stats().flushes > 0 && db.stats().compactions > 0, "the workload never flushed or compacted");
    // The live database still works, and retired WALs were not left behind by the checkpoints.
    db.flush().unwrap();
    let wals = std::fs::read_dir(dir.path().join("live"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".wal"))
        .count();
    assert!(wals <= 2, "{wals} WALs left in the live directory");
}

#[test]
fn tables_are_hard_links_and_the_copy_outlives_compaction() {
    let dir = tempfile::tempdir().unwrap();
    // No compaction in the background: the live tables must still be there when the links are compared.
    let manual = LeveledPolicy::new(1000, 1 << 40, 10).tombstone_ratio(2.0);
    let db = small(Db::builder())
        .compaction_policy(Arc::new(manual))
        .level0_slowdown_trigger(1000)
        .level0_stop_trigger(1001)
        .open(dir.path().join("live"))
        .unwrap();
    for chunk in 0..20 {
        let mut batch = WriteBatch::new();
        for n in chunk * 100 + 1..=chunk * 100 + 100 {
            batch.put(key(0, n), cairn_tests::value(n));
        }
        db.write(batch).unwrap();
    }
    db.flush().unwrap();
    let info = db.checkpoint(dir.path().join("copy")).unwrap();
    assert!(info.tables > 0 && info.table_bytes > 0, "{info:?}");
    let tables: Vec<_> = std::fs::read_dir(&info.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    assert_eq!(tables.len() as u64, info.tables);
    for t in &tables {
        let live = dir.path().join("live").join(t.file_name().unwrap());
        assert_eq!(std::fs::metadata(t).unwrap().ino(), std::fs::metadata(&live).unwrap().ino(), "{t:?} is a copy");
    }
    // Compaction removes the live names; the copy keeps its own.
    let mut batch = WriteBatch::new();
    for n in 1..=2000 {
        batch.delete(key(0, n));
    }
    db.write(batch).unwrap();
    db.compact().unwrap();
    let copy = Db::open(&info.dir).unwrap();
    assert_eq!(commits_of(&copy, 0), 2000);
    assert_eq!(db.prefix("w0/").unwrap().count(), 0);
}

#[test]
fn a_checkpoint_is_durable_once_made_and_refuses_a_used_directory() {
    let fs = MemStorage::new();
    let db = small(Db::builder()).storage(Arc::new(fs.clone())).open(Path::new("/live")).unwrap();
    for n in 1..=500 {
        db.put(key(0, n), cairn_tests::value(n)).unwrap();
    }
    let info = db.checkpoint("/copy").unwrap();
    assert!(info.wal_files >= 1, "{info:?}");
    // Made once: a second checkpoint into the same place changes nothing there. (The live directory's own
    // files may change meanwhile: its background threads remove the tables a compaction replaced.)
    let copied = || fs.files().into_iter().filter(|(p, _)| p.starts_with("/copy")).collect::<Vec<_>>();
    let files = copied();
    assert!(matches!(db.checkpoint("/copy"), Err(Error::Open(OpenError::AlreadyExists { .. }))));
    assert_eq!(copied(), files);
    assert!(!files.is_empty());
    for mode in [CrashMode::Drop, CrashMode::Garble] {
        let image = fs.crash(7, mode);
        let copy = Db::builder().storage(Arc::new(image.clone())).open(Path::new("/copy")).unwrap();
        assert_eq!(commits_of(&copy, 0), 500, "{mode:?}");
        assert_eq!(copy.last_sequence(), info.last_sequence);
        drop(copy);
        let report = Check::new().storage(Arc::new(image)).run("/copy").unwrap();
        assert!(report.is_healthy(), "{mode:?}: {:?}", report.problems);
    }
    assert!(fs.exists(Path::new("/copy/CURRENT")).unwrap());
}
