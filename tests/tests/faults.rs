//! I/O errors: EIO or ENOSPC injected into writes, syncs, file creations, renames and directory syncs, at
//! many points of a workload that keeps flushing and compacting. The failing call returns an error; the
//! database then refuses writes (or keeps working if the failure did not touch its state); after reopening,
//! also after a power cut, every acknowledged write is there. A full disk never corrupts the store.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cairn_engine::{
    CrashMode, Db, Durability, FaultKind, FaultOp, LeveledPolicy, MemStorage, Storage, WriteBatch, WriteError,
};

fn open(fs: &MemStorage) -> Result<Db, cairn_engine::OpenError> {
    Db::builder()
        .storage(Arc::new(fs.clone()))
        .durability(Durability::Immediate)
        .memtable_size(4 * 1024)
        .table_size(4 * 1024)
        .block_size(256)
        .compaction_policy(Arc::new(LeveledPolicy::new(2, 8 * 1024, 2)))
        .max_manifest_size(1024)
        .open(Path::new("/db"))
}

fn key(i: u32) -> Vec<u8> {
    format!("key{:04}", i % 97).into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    vec![(i % 251) as u8; 40 + (i % 90) as usize]
}

type Pairs = BTreeMap<Vec<u8>, Vec<u8>>;

/// Runs the workload with one fault armed; returns what was acknowledged, and the write whose failure
/// was reported (its outcome is unknown: it may or may not have reached the WAL).
fn run(op: FaultOp, kind: FaultKind, after: u64) -> (MemStorage, Pairs, Pairs) {
    let fs = MemStorage::new();
    let db = open(&fs).unwrap();
    fs.fail(op, after, kind);
    let mut acked = BTreeMap::new();
    let mut maybe = BTreeMap::new();
    let mut failed = false;
    for i in 0..400u32 {
        let (pairs, result) = if i % 7 == 0 {
            let mut batch = WriteBatch::new();
            batch.put(key(i), value(i)).put(key(i + 1), value(i + 1));
            (vec![(key(i), value(i)), (key(i + 1), value(i + 1))], db.write(batch))
        } else {
            (vec![(key(i), value(i))], db.put(key(i), value(i)))
        };
        match result {
            Ok(_) => {
                assert!(!failed, "{op:?}/{kind:?}@{after}: a write succeeded after the database refused writes");
                acked.extend(pairs);
            }
            Err(WriteError::Storage(_)) if !failed => {
                failed = true;
                maybe.extend(pairs);
            }
            Err(WriteError::Poisoned { .. }) => failed = true,
            Err(e) => panic!("{op:?}/{kind:?}@{after}: unexpected {e}"),
        }
        // Reads keep working and see every acknowledged write.
        if i % 50 == 0 {
            for (k, v) in &acked {
                assert_eq!(db.get(k).unwrap().as_ref(), Some(v), "{op:?}/{kind:?}@{after}: read before reopen");
            }
        }
    }
    drop(db);
    fs.heal();
    (fs, acked, maybe)
}

fn check(fs: &MemStorage, acked: &Pairs, maybe: &Pairs, what: &str) {
    let db = open(fs).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    for k in acked.keys().chain(maybe.keys()) {
        let got = db.get(k).unwrap_or_else(|e| panic!("{what}: {e}"));
        // The write whose failure was reported may or may not have landed, whole; nothing else may differ.
        let allowed = [acked.get(k), maybe.get(k)];
        assert!(
            allowed.contains(&got.as_ref()),
            "{what}: key {} holds an unexpected value",
            String::from_utf8_lossy(k)
        );
    }
    db.verify().unwrap_or_else(|e| panic!("{what}: {e}"));
    db.put(b"after", b"ok").unwrap_or_else(|e| panic!("{what}: writing after reopen: {e}"));
}

#[test]
fn io_errors_refuse_writes_and_lose_nothing_acknowledged() {
    let mut cases = 0;
    for op in [FaultOp::Write, FaultOp::Sync, FaultOp::Create, FaultOp::Rename, FaultOp::SyncDir] {
        for kind in [FaultKind::Eio, FaultKind::NoSpace] {
            for after in (0..120).step_by(7) {
                let (fs, acked, maybe) = run(op, kind, after);
                let what = format!("{op:?}/{kind:?}@{after}");
                check(&fs, &acked, &maybe, &what);
                check(&fs.crash(after, CrashMode::Mixed), &acked, &maybe, &format!("{what} + power cut"));
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 5 * 2 * 18);
}

/// Regression: a WAL whose header sync failed was reused by the next open as if durable; a later memtable
/// switch skipped syncing it, and a power cut left a headerless WAL in the middle of the chain.
#[test]
fn a_reused_wal_is_made_durable_at_open() {
    let (fs, acked, maybe) = run(FaultOp::Sync, FaultKind::Eio, 77);
    check(&fs, &acked, &maybe, "reopen after a failed header sync");
    check(&fs.crash(77, CrashMode::Drop), &acked, &maybe, "power cut after that reopen");
}

/// A group large enough to reach the memtable while the WAL syncs: when the sync fails, no read sees any of
/// it (its sequence was never published) and the database refuses writes; after reopening, also after a
/// power cut, it is there whole or not at all, and every earlier write is.
#[test]
fn a_large_group_whose_sync_fails_stays_invisible() {
    let fs = MemStorage::new();
    let db =
        Db::builder().storage(Arc::new(fs.clone())).durability(Durability::Immediate).open(Path::new("/db")).unwrap();
    let big = |round: u32| {
        let mut batch = WriteBatch::new();
        let pairs: Pairs = (0..1000u32).map(|i| (format!("{round}-{i:05}").into_bytes(), value(i))).collect();
        for (k, v) in &pairs {
            batch.put(k, v);
        }
        (batch, pairs)
    };
    let (batch, acked) = big(0);
    db.write(batch).unwrap();
    fs.fail(FaultOp::Sync, 0, FaultKind::Eio);
    let (batch, maybe) = big(1);
    assert!(matches!(db.write(batch), Err(WriteError::Storage(_))));
    for k in maybe.keys() {
        assert_eq!(db.get(k).unwrap(), None, "an unsynced group is invisible");
    }
    assert_eq!(db.range(&b"1-"[..]..&b"2"[..]).unwrap().count(), 0);
    assert!(matches!(db.put(b"later", b"x"), Err(WriteError::Poisoned { .. })));
    for (k, v) in &acked {
        assert_eq!(db.get(k).unwrap().as_ref(), Some(v));
    }
    drop(db);
    fs.heal();
    for (fs, what) in [(fs.clone(), "reopen"), (fs.crash(3, CrashMode::Mixed), "power cut")] {
        let db = Db::builder().storage(Arc::new(fs)).open(Path::new("/db")).unwrap();
        for (k, v) in &acked {
            assert_eq!(db.get(k).unwrap().as_ref(), Some(v), "{what}");
        }
        let landed = maybe.keys().filter(|k| db.get(k).unwrap().is_some()).count();
        assert!(landed == 0 || landed == maybe.len(), "{what}: {landed} of the group's keys");
    }
}

/// A failed `fdatasync` poisons the database; closing it reports that failure even though the sync made
/// while closing succeeds (after a failed fdatasync, Linux may have dropped the dirty pages: a later
/// successful sync proves nothing about them).
#[test]
fn close_after_a_failed_sync_reports_the_first_failure() {
    let fs = MemStorage::new();
    let db = open(&fs).unwrap();
    db.put(b"before", b"1").unwrap();
    fs.fail(FaultOp::Sync, 0, FaultKind::Eio);
    let err = db.put(b"lost", b"2").unwrap_err();
    assert!(matches!(err, WriteError::Storage(_)), "{err}");
    assert!(matches!(db.put(b"after", b"3"), Err(WriteError::Poisoned { .. })));
    match db.close() {
        Err(cairn_engine::StorageError::Poisoned { cause }) => {
            assert!(cause.contains("injected EIO on Sync"), "{cause}")
        }
        other => panic!("close of a poisoned database answered {other:?}"),
    }
    let db = open(&fs).unwrap();
    assert_eq!(db.get(b"before").unwrap(), Some(b"1".to_vec()));
    db.close().unwrap();
}

/// Regression: a memtable switch created and synced the new WAL before it synced the old one, so a power
/// cut between the two (here, the old WAL's sync failing, then the cut) left unsynced, torn records in a WAL
/// that was no longer the newest, and the next open refused the database as corrupt. Writes without
/// durability fill several memtables while each sync in turn fails; after a cut, the database opens and
/// holds a prefix of the writes.
#[test]
fn a_power_cut_while_the_wal_is_switched_leaves_a_database_that_opens() {
    for after in 0..24 {
        let fs = MemStorage::new();
        let db = Db::builder()
            .storage(Arc::new(fs.clone()))
            .durability(Durability::None)
            .memtable_size(4 * 1024)
            .open(Path::new("/db"))
            .unwrap();
        fs.fail(FaultOp::Sync, after, FaultKind::Eio);
        let mut written = 0u32;
        while written < 2000 && db.put(format!("{written:05}"), value(written)).is_ok() {
            written += 1;
        }
        let images = [CrashMode::Garble, CrashMode::Tear].map(|mode| (mode, fs.crash(after + 1, mode)));
        drop(db);
        for (mode, image) in images {
            let what = format!("sync failing after {after}, {mode:?}");
            let db = Db::builder()
                .storage(Arc::new(image))
                .open(Path::new("/db"))
                .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
            let keys: Vec<Vec<u8>> = db.range(&b""[..]..).unwrap().map(|kv| kv.unwrap().0).collect();
            let prefix: Vec<Vec<u8>> = (0..keys.len() as u32).map(|i| format!("{i:05}").into_bytes()).collect();
            assert_eq!(keys, prefix, "{what}: not a prefix of the writes");
        }
    }
}

/// A data directory written by a build that created the next WAL before syncing the old one can hold, after
/// a power cut, a torn WAL followed by a WAL with a header and nothing else. Nothing was committed after the
/// torn records, so open cuts them off as the torn tail they are, as `check` reports them, instead of
/// refusing the database.
#[test]
fn a_torn_wal_followed_only_by_an_empty_one_opens() {
    let fs = MemStorage::new();
    let db = Db::builder().storage(Arc::new(fs.clone())).durability(Durability::None).open(Path::new("/db")).unwrap();
    for i in 0..30u32 {
        db.put(format!("{i:05}"), value(i)).unwrap();
    }
    let image = fs.crash(7, CrashMode::Garble);
    drop(db);
    let dir = Path::new("/db");
    let (old, len) = image.files().into_iter().find(|(p, _)| p.extension().is_some_and(|e| e == "wal")).unwrap();
    // The last record is damaged for certain (a garble may have hit earlier ones too).
    image.mutate_byte(&old, len - 1, |b| b ^ 0x5a).unwrap();
    let header = image.read(&old).unwrap()[..16].to_vec();
    let number: u64 = old.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let mut newer = image.create(&dir.join(format!("{:06}.wal", number + 1))).unwrap();
    newer.append(&header).unwrap();
    newer.sync().unwrap();
    image.sync_dir(dir).unwrap();

    let report = cairn_engine::Check::new().storage(Arc::new(image.clone())).run(dir).unwrap();
    assert!(report.problems.is_empty() && report.torn_wal.is_some(), "{report:?}");
    let db = Db::builder().storage(Arc::new(image)).open(dir).unwrap_or_else(|e| panic!("reopen failed: {e}"));
    let keys: Vec<Vec<u8>> = db.range(&b""[..]..).unwrap().map(|kv| kv.unwrap().0).collect();
    let prefix: Vec<Vec<u8>> = (0..keys.len() as u32).map(|i| format!("{i:05}").into_bytes()).collect();
    assert_eq!(keys, prefix, "not a prefix of the writes");
    assert!(keys.len() < 30, "the damaged last record was replayed");
    db.put(b"after", b"ok").unwrap();
}
