//! Deletes give their space back without `Db::compact`: the background worker compacts tables dense with
//! tombstones (tombstone ratio of `LeveledPolicy`), rewrites them away at the bottom of the tree, and keeps a
//! queue (insert at the tail, delete at the head) from piling tombstones up.
//!
//! `CAIRN_RECLAIM_KEYS=1000000 cargo test -p cairn-tests --test space_reclaim -- --ignored
//! --nocapture` measures the mass delete at another size and prints the figures.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_engine::{
    CompactionPolicy, CompactionTask, Compression, Db, Durability, LevelInfo, LeveledPolicy, MemStorage, Options,
    Stats, WriteBatch,
};

fn options(storage: &MemStorage, policy: LeveledPolicy) -> Options {
    Db::builder()
        .storage(Arc::new(storage.clone()))
        .durability(Durability::None)
        .compression(Compression::None)
        .memtable_size(256 << 10)
        .table_size(256 << 10)
        .compaction_policy(Arc::new(policy))
}

fn policy() -> LeveledPolicy {
    LeveledPolicy::new(4, 1 << 20, 10)
}

fn table_bytes(s: &Stats) -> u64 {
    s.levels.iter().map(|l| l.bytes).sum()
}

fn tombstones(s: &Stats) -> u64 {
    s.levels.iter().map(|l| l.tombstones).sum()
}

fn key(prefix: &str, i: u64) -> String {
    format!("{prefix}/{i:010}")
}

fn value(i: u64) -> Vec<u8> {
    // 100 bytes that do not repeat from key to key.
    (0..100u64).map(|j| (i.wrapping_mul(31).wrapping_add(j * 7) % 251) as u8).collect()
}

/// Waits until nothing is left to flush and the stats stop changing for a while (the compaction worker is
/// done), or `timeout` passes. Returns the last stats.
fn settle(db: &Db, timeout: Duration) -> Stats {
    let start = Instant::now();
    let mut last = db.stats();
    let mut quiet = Instant::now();
    while start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(50));
        let now = db.stats();
        let same = now.compactions == last.compactions && now.flushes == last.flushes && now.immutable_memtables == 0;
        if !same {
            quiet = Instant::now();
        } else if quiet.elapsed() > Duration::from_millis(700) {
            return now;
        }
        last = now;
    }
    last
}

fn load(db: &Db, prefix: &str, range: std::ops::Range<u64>) {
    let mut b = WriteBatch::new();
    for i in range {
        b.put(key(prefix, i), value(i));
        if b.len() == 1000 {
            db.write(std::mem::take(&mut b)).unwrap();
        }
    }
    if !b.is_empty() {
        db.write(b).unwrap();
    }
}

fn delete(db: &Db, prefix: &str, range: std::ops::Range<u64>) {
    let mut b = WriteBatch::new();
    for i in range {
        b.delete(key(prefix, i));
        if b.len() == 1000 {
            db.write(std::mem::take(&mut b)).unwrap();
        }
    }
    if !b.is_empty() {
        db.write(b).unwrap();
    }
}

/// Table bytes with the data loaded, and once every key of it is deleted and the worker is done.
fn mass_delete(n: u64, policy: LeveledPolicy) -> (Stats, Stats, Db) {
    let storage = MemStorage::new();
    let db = options(&storage, policy).open(Path::new("/db")).unwrap();
    load(&db, "keep", 0..1000);
    load(&db, "gone", 0..n);
    db.flush().unwrap();
    let loaded = settle(&db, Duration::from_secs(600));
    delete(&db, "gone", 0..n);
    db.flush().unwrap();
    let deleted = settle(&db, Duration::from_secs(600));
    (loaded, deleted, db)
}

#[test]
fn space_comes_back_after_a_mass_delete_without_manual_compaction() {
    let (loaded, deleted, db) = mass_delete(100_000, policy());
    let (before, after) = (table_bytes(&loaded), table_bytes(&deleted));
    assert!(before > 10_000_000, "the load wrote {before} table bytes");
    // What is left: the 1000 kept records (~130 KB) and at most a few tables of tombstones still waiting.
    assert!(after < before / 20, "table bytes {before} -> {after} after deleting 100k of 101k records: {deleted:?}");
    assert!(tombstones(&deleted) < 10_000, "tombstones left: {deleted:?}");
    assert_eq!(db.prefix("gone/").unwrap().count(), 0);
    let kept: Vec<_> = db.prefix("keep/").unwrap().map(Result::unwrap).collect();
    assert_eq!(kept.len(), 1000);
    for (i, (k, v)) in (0..).zip(&kept) {
        assert_eq!((k.as_slice(), v.as_slice()), (key("keep", i).as_bytes(), value(i).as_slice()));
    }
    assert_eq!(db.stats().compactions, deleted.compactions, "the worker went idle");
}

/// A snapshot needs the deleted records: nothing it sees is dropped, and the space comes back once it is
/// released, with no further write.
#[test]
fn tombstones_a_snapshot_needs_are_kept() {
    let storage = MemStorage::new();
    let db = options(&storage, policy()).open(Path::new("/db")).unwrap();
    load(&db, "gone", 0..20_000);
    db.flush().unwrap();
    settle(&db, Duration::from_secs(120));
    let snap = db.snapshot();
    delete(&db, "gone", 0..20_000);
    db.flush().unwrap();
    let held = settle(&db, Duration::from_secs(120));
    assert_eq!(snap.prefix("gone/").unwrap().count(), 20_000, "the snapshot still sees every record");
    assert_eq!(db.prefix("gone/").unwrap().count(), 0);
    assert!(table_bytes(&held) > 2_000_000, "the records the snapshot needs are kept: {held:?}");
    drop(snap);
    // Releasing the snapshot wakes the worker.
    let released = settle(&db, Duration::from_secs(120));
    assert!(table_bytes(&released) < table_bytes(&held) / 10, "{held:?} -> {released:?}");
}

/// A queue: keys increase, the consumer deletes from the head. Table bytes and tombstones stay bounded
/// instead of growing with the number of records that ever went through.
fn queue(rounds: u64, policy: LeveledPolicy, report: bool) -> Vec<(u64, u64, u64)> {
    const WINDOW: u64 = 20_000;
    const STEP: u64 = 2_000;
    let storage = MemStorage::new();
    let db = options(&storage, policy).open(Path::new("/db")).unwrap();
    load(&db, "q", 0..WINDOW);
    let mut figures = Vec::new();
    for r in 0..rounds {
        let head = r * STEP;
        load(&db, "q", head + WINDOW..head + WINDOW + STEP);
        delete(&db, "q", head..head + STEP);
        let s = db.stats();
        figures.push((head + STEP + WINDOW, table_bytes(&s), tombstones(&s)));
        if report && r % 10 == 9 {
            println!(
                "queue: {} records in, table bytes {}, tombstones {}, levels {:?}",
                head + STEP + WINDOW,
                table_bytes(&s),
                tombstones(&s),
                s.levels.iter().map(|l| (l.tables, l.tombstones)).collect::<Vec<_>>()
            );
        }
    }
    let s = settle(&db, Duration::from_secs(120));
    figures.push((rounds * STEP + WINDOW, table_bytes(&s), tombstones(&s)));
    if report {
        println!(
            "queue settled: table bytes {}, tombstones {}, write amp {:.1}",
            table_bytes(&s),
            tombstones(&s),
            s.write_amplification()
        );
    }
    assert_eq!(db.prefix("q/").unwrap().count() as u64, WINDOW);
    figures
}

#[test]
fn a_queue_keeps_table_bytes_and_tombstones_bounded() {
    let figures = queue(100, policy(), false);
    // The live window is 20k records of ~120 bytes (2.4 MB); 220k records went through (26 MB).
    let live = 20_000 * 120;
    let (_, settled_bytes, settled_tombstones) = *figures.last().unwrap();
    assert!(settled_bytes < 2 * live, "settled at {settled_bytes} table bytes: {figures:?}");
    assert!(settled_tombstones < 10_000, "settled with {settled_tombstones} tombstones: {figures:?}");
    let worst = figures.iter().skip(figures.len() / 2).map(|f| f.1).max().unwrap();
    assert!(worst < 6 * live, "table bytes reached {worst} while running: {figures:?}");
}

/// The figures for docs/testing.md (see the module doc).
#[test]
#[ignore = "measurement; run explicitly"]
fn measure() {
    let n = std::env::var("CAIRN_RECLAIM_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    for (name, p) in [("tombstone ratio 0.5", policy()), ("tombstone ratio off", policy().tombstone_ratio(2.0))] {
        let start = Instant::now();
        let (loaded, deleted, _db) = mass_delete(n, p);
        println!(
            "{name}: {n} keys: table bytes {} loaded -> {} deleted ({} tombstones left), {:.1}s",
            table_bytes(&loaded),
            table_bytes(&deleted),
            tombstones(&deleted),
            start.elapsed().as_secs_f64()
        );
    }
    for (name, p) in [("tombstone ratio 0.5", policy()), ("tombstone ratio off", policy().tombstone_ratio(2.0))] {
        println!("{name}:");
        queue(200, p, true);
    }
}

/// Compacts level 0 into level 1 once it holds six tables, and nothing else.
#[derive(Debug)]
struct SixInLevel0;

impl CompactionPolicy for SixInLevel0 {
    fn choose(&self, levels: &[LevelInfo]) -> Option<CompactionTask> {
        let l0 = levels.first()?;
        (l0.tables.len() >= 6).then(|| CompactionTask {
            level: 0,
            inputs: l0.tables.iter().map(|t| t.number).collect(),
            output_level: 1,
        })
    }
}

/// Six overlapping level-0 tables of ~120 KB (each rewrites the same keys) and one level-0 compaction: the
/// level-0 tables left, the level-1 tables made, and whether every key reads its newest value.
fn capped_level0(cap: Option<u64>) -> (usize, usize) {
    let storage = MemStorage::new();
    let mut opts = options(&storage, policy()).compaction_policy(Arc::new(SixInLevel0));
    if let Some(cap) = cap {
        opts = opts.max_compaction_bytes(cap);
    }
    let db = opts.open(Path::new("/db")).unwrap();
    for round in 0..6u64 {
        let mut b = WriteBatch::new();
        for i in 0..1000 {
            b.put(key("k", i), value(i + round));
        }
        db.write(b).unwrap();
        db.flush().unwrap();
    }
    let s = settle(&db, Duration::from_secs(60));
    assert_eq!(s.compactions, 1, "{s:?}");
    for i in 0..1000 {
        assert_eq!(db.get(key("k", i)).unwrap(), Some(value(i + 5)), "key {i} reads its newest value");
    }
    (s.levels[0].tables, s.levels[1].tables)
}

#[test]
fn compaction_inputs_are_capped() {
    // Uncapped, a level-0 compaction takes every level-0 table.
    assert_eq!(capped_level0(None).0, 0);
    // With room for two of them, it takes the two oldest; the four newer stay above level 1.
    let (level0, level1) = capped_level0(Some(300_000));
    assert_eq!(level0, 4);
    assert!(level1 >= 1);
    // One table always goes, even if it alone exceeds the cap.
    assert_eq!(capped_level0(Some(1)).0, 5);
}
