//! Crash simulation: random workloads (puts, deletes, batches, collection writes with indexes) with flushes
//! and compactions in flight, a power cut at a random point (unsynced bytes dropped, torn or garbled, file
//! names not yet synced into the directory lost), reopen, and a check against a model:
//!
//! - with `Durability::Immediate`, the database holds exactly what was acknowledged;
//! - with `Buffered` or `None`, it holds the state after some prefix of the acknowledged commits: nothing
//!   never written, no batch in part, no hole in the history;
//! - every index agrees with its records.
//!
//! A second test cuts the power in the middle of concurrent group commits: four writers commit at once while
//! the cut lands at a random instant; each writer's recovered commits are a prefix of its history that holds
//! every commit acknowledged before the cut (when durable) and none it had not yet attempted.
//!
//! `CAIRN_CRASH_ITERATIONS` sets the number of crashes (default 300; the long mode in docs/testing.md
//! runs thousands).

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_engine::{CrashMode, Db, Durability, LeveledPolicy, MemStorage, WriteBatch};
use cairn_store::{IndexSpec, Record, Store, StoreOptions};
use serde::{Deserialize, Serialize};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    id: String,
    bucket: u32,
    n: u64,
}

impl Record for Item {
    const COLLECTION: &'static str = "items";
    fn id(&self) -> String {
        self.id.clone()
    }
    fn indexes() -> Vec<IndexSpec> {
        vec![IndexSpec::new("bucket_n", &["bucket", "-n"])]
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn open(fs: &MemStorage, durability: Durability) -> Db {
    Db::builder()
        .storage(Arc::new(fs.clone()))
        .durability(durability)
        .sync_interval(std::time::Duration::from_millis(1))
        .memtable_size(8 * 1024)
        .table_size(8 * 1024)
        .block_size(512)
        .compaction_policy(Arc::new(LeveledPolicy::new(2, 16 * 1024, 2)))
        .max_manifest_size(2048)
        // Some of the larger batches are ingested as tables.
        .ingest_threshold(2048)
        .open(Path::new("/db"))
        .unwrap()
}

/// Raw keys the workload writes (collections keep their own keys under bytes 0x00-0x03).
fn raw_state(db: &Db) -> Model {
    db.range("k".as_bytes()..).unwrap().map(Result::unwrap).collect()
}

fn crash_once(seed: u64, durability: Durability) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let fs = MemStorage::new();
    let db = open(&fs, durability);
    let store = Store::with_db(db.clone(), StoreOptions::default()).unwrap();
    let items = store.collection::<Item>().unwrap();
    // History of acknowledged states, oldest first: the crash must land on one of them (the last one
    // when every commit was durable).
    let mut model = Model::new();
    let mut history = vec![model.clone()];
    let ops = 20 + rng.below(200);
    for _ in 0..ops {
        match rng.below(10) {
            0..=4 => {
                let k = format!("k{:03}", rng.below(150)).into_bytes();
                let v = vec![rng.next() as u8; rng.below(400) as usize];
                db.put(&k, &v).unwrap();
                model.insert(k, v);
            }
            5 => {
                let k = format!("k{:03}", rng.below(150)).into_bytes();
                db.delete(&k).unwrap();
                model.remove(&k);
            }
            6 | 7 => {
                let mut batch = WriteBatch::new();
                for _ in 0..1 + rng.below(20) {
                    let k = format!("k{:03}", rng.below(150)).into_bytes();
                    if rng.below(4) == 0 {
                        batch.delete(&k);
                        model.remove(&k);
                    } else {
                        let v = vec![rng.next() as u8; rng.below(200) as usize];
                        batch.put(&k, &v);
                        model.insert(k, v);
                    }
                }
                db.write(batch).unwrap();
            }
            8 => {
                let id = format!("i{}", rng.below(40));
                items.upsert(&Item { id, bucket: rng.below(4) as u32, n: rng.below(1000) }).unwrap();
            }
            _ => {
                if rng.below(3) == 0 {
                    db.flush().unwrap();
                }
            }
        }
        history.push(model.clone());
    }
    let mode = [CrashMode::Drop, CrashMode::Tear, CrashMode::Garble, CrashMode::Mixed][rng.below(4) as usize];
    let image = fs.crash(rng.next(), mode);
    drop(items);
    drop(store);
    drop(db);

    let db = open(&image, Durability::Immediate);
    let got = raw_state(&db);
    match durability {
        Durability::Immediate => assert_eq!(got, model, "seed {seed}: acknowledged writes lost or invented"),
        _ => assert!(
            history.contains(&got),
            "seed {seed} ({durability:?}): state after the crash is no prefix of the history"
        ),
    }
    let store = Store::with_db(db, StoreOptions::default()).unwrap();
    store.check_indexes().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    // The reopened database takes writes and survives a second crash.
    store.db().put(b"k-after", b"1").unwrap();
    let again = open(&image.crash(seed, CrashMode::Drop), Durability::Immediate);
    assert_eq!(again.get(b"k-after").unwrap(), Some(b"1".to_vec()), "seed {seed}");
}

fn iterations() -> u64 {
    std::env::var("CAIRN_CRASH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

#[test]
fn acknowledged_durable_commits_survive_power_cuts() {
    for seed in 0..iterations() {
        crash_once(seed, Durability::Immediate);
    }
}

#[test]
fn buffered_and_unsynced_commits_leave_a_prefix_of_history() {
    for seed in 0..iterations() / 3 {
        crash_once(seed, Durability::Buffered);
        crash_once(seed + 1_000_000, Durability::None);
    }
}

/// Concurrent writers in the concurrent power-cut test.
const WRITERS: u64 = 4;

/// The key of writer `w`'s commit `n`, and its value: recognisably that commit's.
fn writer_pair(w: u64, n: u64) -> (Vec<u8>, Vec<u8>) {
    (format!("kw{w}/{n:06}").into_bytes(), cairn_tests::value(w * 1_000_000 + n))
}

/// One writer of the concurrent test: commits 1, 2, ... until `stop`, each a batch of its key (and, every
/// third commit, a collection upsert as its own transaction), publishing `attempted` before a commit starts
/// and `acked` once it returns.
fn concurrent_writer(w: u64, store: &Store, attempted: &AtomicU64, acked: &AtomicU64, stop: &AtomicBool) {
    let items = store.collection::<Item>().unwrap();
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        attempted.store(n, Ordering::Release);
        let (key, value) = writer_pair(w, n);
        let mut batch = WriteBatch::new();
        batch.put(&key, &value).put(format!("kw{w}/last"), n.to_le_bytes());
        // A failure here is the cut's doing only if it came after the image; the image was taken from a
        // MemStorage that keeps working, so every commit must succeed.
        store.db().write(batch).unwrap();
        if n % 3 == 0 {
            items.upsert(&Item { id: format!("w{w}-{}", n % 10), bucket: (n % 4) as u32, n }).unwrap();
        }
        acked.store(n, Ordering::Release);
    }
}

fn concurrent_crash_once(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let durability = if rng.below(3) == 0 { Durability::Buffered } else { Durability::Immediate };
    let fs = MemStorage::new();
    let db = open(&fs, durability);
    let store = Store::with_db(db.clone(), StoreOptions::default()).unwrap();
    let attempted: Vec<AtomicU64> = (0..WRITERS).map(|_| AtomicU64::new(0)).collect();
    let acked: Vec<AtomicU64> = (0..WRITERS).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    let (image, acked_before, attempted_after) = std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (store, attempted, acked, stop) = (&store, &attempted[w as usize], &acked[w as usize], &stop);
            s.spawn(move || concurrent_writer(w, store, attempted, acked, stop));
        }
        std::thread::sleep(Duration::from_micros(500 + rng.below(20_000)));
        // Acknowledged before the cut: read before it. Attempted before the cut: read after it.
        let acked_before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
        let mode = [CrashMode::Drop, CrashMode::Tear, CrashMode::Garble, CrashMode::Mixed][rng.below(4) as usize];
        let image = fs.crash(rng.next(), mode);
        let attempted_after: Vec<u64> = attempted.iter().map(|a| a.load(Ordering::Acquire)).collect();
        stop.store(true, Ordering::Release);
        (image, acked_before, attempted_after)
    });
    drop(store);
    drop(db);

    let db = open(&image, Durability::Immediate);
    for w in 0..WRITERS {
        let (lo, hi) = (acked_before[w as usize], attempted_after[w as usize]);
        let recovered: Vec<(Vec<u8>, Vec<u8>)> = db.prefix(format!("kw{w}/0")).unwrap().map(Result::unwrap).collect();
        let k = recovered.len() as u64;
        let expected: Vec<(Vec<u8>, Vec<u8>)> = (1..=k).map(|n| writer_pair(w, n)).collect();
        assert_eq!(recovered, expected, "seed {seed}: writer {w}'s commits are not a prefix of its history");
        assert!(k <= hi, "seed {seed}: writer {w} recovered {k} commits, attempted only {hi}");
        if durability == Durability::Immediate {
            assert!(k >= lo, "seed {seed}: writer {w} recovered {k} commits, {lo} were acknowledged");
        }
        let last = db.get(format!("kw{w}/last")).unwrap().map(|v| u64::from_le_bytes(v.try_into().unwrap()));
        assert_eq!(last.unwrap_or(0), k, "seed {seed}: writer {w}'s batch was split by the cut");
    }
    let store = Store::with_db(db, StoreOptions::default()).unwrap();
    store.check_indexes().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    for item in store.collection::<Item>().unwrap().query(&cairn_store::Query::new().limit(1000)).unwrap().records {
        let w: u64 = item.id[1..2].parse().unwrap();
        assert!(item.doc.n <= attempted_after[w as usize], "seed {seed}: {} holds a commit never attempted", item.id);
    }
}

#[test]
fn power_cuts_during_concurrent_group_commits_keep_every_acknowledged_commit() {
    for seed in 0..iterations() / 6 {
        concurrent_crash_once(seed);
    }
}
