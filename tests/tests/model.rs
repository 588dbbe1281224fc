//! Model-based test: random puts, deletes, batches, scans (both directions), snapshots, flushes,
//! compactions, clean reopens and simulated power cuts, checked against a `BTreeMap`.
//!
//! Runs on `MemStorage` with tiny memtables and tables so that flushes and multi-level compactions happen
//! within a few hundred operations. `PROPTEST_CASES` raises the case count (long mode).

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cairn_engine::{Db, Durability, LeveledPolicy, MemStorage, Snapshot, WriteBatch};
use proptest::prelude::*;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Get(u8),
    Scan { lo: u8, hi: u8, reverse: bool, limit: usize },
    Prefix { prefix: u8, reverse: bool },
    TakeSnapshot,
    ReadSnapshot { which: usize, lo: u8 },
    Flush,
    Compact,
    Reopen,
    Crash,
}

fn key(k: u8) -> Vec<u8> {
    // Keys share prefixes so that prefix compression and prefix scans are exercised.
    format!("key/{:02x}/{}", k % 16, k).into_bytes()
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => (0u8..255, 600usize..3000).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (any::<u8>(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        10 => any::<u8>().prop_map(Op::Delete),
        8 => proptest::collection::vec((any::<u8>(), proptest::option::of(value())), 1..20).prop_map(Op::Batch),
        12 => any::<u8>().prop_map(Op::Get),
        6 => (any::<u8>(), any::<u8>(), any::<bool>(), 1usize..50)
            .prop_map(|(lo, hi, reverse, limit)| Op::Scan { lo, hi, reverse, limit }),
        3 => (0u8..16, any::<bool>()).prop_map(|(prefix, reverse)| Op::Prefix { prefix, reverse }),
        3 => Just(Op::TakeSnapshot),
        4 => (any::<usize>(), any::<u8>()).prop_map(|(which, lo)| Op::ReadSnapshot { which, lo }),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

fn open(storage: &MemStorage) -> Db {
    Db::builder()
        .storage(Arc::new(storage.clone()))
        .durability(Durability::Immediate)
        .memtable_size(8 * 1024)
        .table_size(8 * 1024)
        .block_size(512)
        .block_cache_size(64 * 1024)
        .level0_slowdown_trigger(6)
        .level0_stop_trigger(10)
        .compaction_policy(Arc::new(LeveledPolicy::new(2, 8 * 1024, 2)))
        .max_manifest_size(4 * 1024)
        // Some of the larger batches are ingested as tables.
        .ingest_threshold(2048)
        .open(Path::new("/db"))
        .expect("open")
}

/// The first `limit` pairs, read borrowed ([`cairn_engine::Iter::next_ref`]); snapshot reads below go through
/// `Iterator::next`, so both ways of reading are held to the model.
fn collect(mut iter: cairn_engine::Iter, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(pair) = iter.next_ref() else { break };
        let (k, v) = pair.expect("scan");
        out.push((k.to_vec(), v.to_vec()));
    }
    out
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut storage = MemStorage::new();
    let mut db = open(&storage);
    let mut model = Model::new();
    let mut snapshots: Vec<(Snapshot, Model)> = Vec::new();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                db.put(key(k), &v).expect("put");
                model.insert(key(k), v);
            }
            Op::Delete(k) => {
                db.delete(key(k)).expect("delete");
                model.remove(&key(k));
            }
            Op::Batch(entries) => {
                let mut batch = WriteBatch::new();
                for (k, v) in &entries {
                    match v {
                        Some(v) => {
                            batch.put(key(*k), v);
                            model.insert(key(*k), v.clone());
                        }
                        None => {
                            batch.delete(key(*k));
                            model.remove(&key(*k));
                        }
                    }
                }
                db.write(batch).expect("batch");
            }
            Op::Get(k) => {
                prop_assert_eq!(db.get(key(k)).expect("get"), model.get(&key(k)).cloned());
            }
            Op::Scan { lo, hi, reverse, limit } => {
                let (lo, hi) = if key(lo) <= key(hi) { (key(lo), key(hi)) } else { (key(hi), key(lo)) };
                let got = if reverse {
                    collect(db.range_rev(lo.clone()..hi.clone()).expect("range"), limit)
                } else {
                    collect(db.range(lo.clone()..hi.clone()).expect("range"), limit)
                };
                let range = model.range(lo..hi).map(|(k, v)| (k.clone(), v.clone()));
                let want: Vec<_> =
                    if reverse { range.rev().take(limit).collect() } else { range.take(limit).collect() };
                prop_assert_eq!(got, want);
            }
            Op::Prefix { prefix, reverse } => {
                let p = format!("key/{prefix:02x}/").into_bytes();
                let got = if reverse {
                    collect(db.prefix_rev(&p).expect("prefix"), usize::MAX)
                } else {
                    collect(db.prefix(&p).expect("prefix"), usize::MAX)
                };
                let matching = model.iter().filter(|(k, _)| k.starts_with(&p)).map(|(k, v)| (k.clone(), v.clone()));
                let want: Vec<_> = if reverse { matching.rev().collect() } else { matching.collect() };
                prop_assert_eq!(got, want);
            }
            Op::TakeSnapshot => snapshots.push((db.snapshot(), model.clone())),
            Op::ReadSnapshot { which, lo } => {
                if !snapshots.is_empty() {
                    let (snap, frozen) = &snapshots[which % snapshots.len()];
                    let got = collect(snap.range(key(lo)..).expect("snapshot range"), 20);
                    let want: Vec<_> = frozen.range(key(lo)..).take(20).map(|(k, v)| (k.clone(), v.clone())).collect();
                    prop_assert_eq!(got, want);
                    prop_assert_eq!(snap.get(key(lo)).expect("snapshot get"), frozen.get(&key(lo)).cloned());
                }
            }
            Op::Flush => db.flush().expect("flush"),
            Op::Compact => db.compact().expect("compact"),
            Op::Reopen => {
                snapshots.clear();
                db.close().expect("close");
                db = open(&storage);
            }
            Op::Crash => {
                snapshots.clear();
                // Power cut: only synced bytes survive. Every commit was acknowledged as durable.
                let image = storage.crash_image();
                drop(db);
                storage = image;
                db = open(&storage);
            }
        }
    }
    let all = collect(db.iter().expect("iter"), usize::MAX);
    let want: Vec<_> = model.into_iter().collect();
    prop_assert_eq!(all, want);
    db.verify().expect("verify");
    Ok(())
}

/// 128 cases, or `PROPTEST_CASES` (an explicit `cases` field would override proptest's own reading of it).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..400)) {
        run(ops)?;
    }
}

/// A long deterministic run that is sure to go through many flushes and compactions.
#[test]
fn long_sequence_with_many_flushes_matches_model() {
    let mut ops = Vec::new();
    for i in 0..6000u32 {
        let k = (i.wrapping_mul(2_654_435_761) >> 24) as u8;
        ops.push(match i % 11 {
            0 | 5 => Op::Delete(k),
            3 => Op::Get(k),
            7 if i % 1000 == 7 => Op::Crash,
            8 if i % 1500 == 8 => Op::Reopen,
            9 if i % 700 == 9 => Op::Scan { lo: k, hi: k.wrapping_add(60), reverse: i % 2 == 0, limit: 30 },
            _ => Op::Put(k, vec![(i % 251) as u8; (i % 97) as usize]),
        });
    }
    run(ops).expect("model");
}
