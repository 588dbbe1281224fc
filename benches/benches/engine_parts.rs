//! Criterion micro-benchmarks of Cairn's parts, reached through the public API only:
//!
//! - `wal_append`: one put per commit with `Durability::None` into a fresh database (WAL record written to
//!   the OS, not synced, plus the memtable insert);
//! - `memtable_insert`: 100-pair batches without sync into a memtable large enough never to flush, so the
//!   per-pair cost is mostly the memtable's;
//! - `table_roundtrip`: flush a memtable of 2,000 pairs to a table (block encoding, compression attempt,
//!   bloom filter) and scan it back (block decoding);
//! - `table_lookup`: gets of random keys of a compacted 100,000-key table, with a warm block cache and with
//!   a block cache too small to hold a block (every get decodes a block; the OS page cache stays warm);
//! - `index_maintenance`: collection inserts of a job with its 6 secondary indexes and of the same
//!   document with none.
//!
//! ```text
//! cargo bench -p cairn-bench --bench engine_parts -- --quick
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_bench::compare::job;
use cairn_bench::{DataGen, DEFAULT_SEED};
use cairn_engine::{Db, Durability, WriteBatch};
use cairn_platform::Job;
use cairn_store::{Record, Store, StoreOptions};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde::{Deserialize, Serialize};

const KEY_LEN: usize = 24;
const VALUE_LEN: usize = 150;

fn quick_group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
    group
}

fn open(dir: &std::path::Path, memtable: usize, cache: usize) -> Db {
    Db::builder()
        .durability(Durability::None)
        .memtable_size(memtable)
        .block_cache_size(cache)
        .open(dir)
        .expect("open a database")
}

/// A unique 24-byte key for `i`; a multiplicative hash first, so consecutive `i` land all over the key space.
fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    k[8..16].copy_from_slice(&i.to_le_bytes());
    k
}

fn wal_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), 64 << 20, 64 << 20);
    let value = DataGen::new(DEFAULT_SEED, KEY_LEN, VALUE_LEN).value();
    let next = AtomicU64::new(0);
    let mut group = quick_group(c, "wal_append");
    group.throughput(Throughput::Elements(1));
    group.bench_function("put_durability_none", |b| {
        b.iter(|| db.put(key(next.fetch_add(1, Ordering::Relaxed)), &value).expect("put"));
    });
    group.finish();
    db.close().expect("close");
}

fn memtable_insert(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    // A memtable of 1 GiB: the benchmark never fills it, so nothing is flushed while it runs.
    let db = open(dir.path(), 1 << 30, 64 << 20);
    let value = DataGen::new(DEFAULT_SEED, KEY_LEN, VALUE_LEN).value();
    let mut next = 0u64;
    let mut group = quick_group(c, "memtable_insert");
    group.throughput(Throughput::Elements(100));
    group.bench_function("batch_of_100", |b| {
        b.iter_batched(
            || {
                let mut batch = WriteBatch::new();
                for _ in 0..100 {
                    batch.put(key(next), &value);
                    next += 1;
                }
                batch
            },
            |batch| db.write(batch).expect("write"),
            BatchSize::SmallInput,
        );
    });
    group.finish();
    db.close().expect("close");
}

fn table_roundtrip(c: &mut Criterion) {
    const PAIRS: u64 = 2_000;
    let value = DataGen::new(DEFAULT_SEED, KEY_LEN, VALUE_LEN).value();
    let mut group = quick_group(c, "table_roundtrip");
    group.sample_size(10).throughput(Throughput::Elements(PAIRS));
    group.bench_function("flush_2000_then_scan", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let db = open(dir.path(), 64 << 20, 64 << 20);
                let mut batch = WriteBatch::new();
                for i in 0..PAIRS {
                    batch.put(key(i), &value);
                }
                db.write(batch).expect("write");
                (dir, db)
            },
            |(dir, db)| {
                db.flush().expect("flush");
                let scanned = db.iter().expect("iter").count() as u64;
                assert_eq!(scanned, PAIRS);
                (dir, db)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn table_lookup(c: &mut Criterion) {
    const KEYS: u64 = 100_000;
    let value = DataGen::new(DEFAULT_SEED, KEY_LEN, VALUE_LEN).value();
    let mut group = quick_group(c, "table_lookup");
    group.throughput(Throughput::Elements(1));
    for (name, cache) in [("warm_block_cache", 256 << 20), ("cold_block_cache", 4096)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path(), 64 << 20, cache);
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(10_000) {
            let mut batch = WriteBatch::new();
            for &i in chunk {
                batch.put(key(i), &value);
            }
            db.write(batch).expect("write");
        }
        db.compact().expect("compact");
        // Touch every block once, so the warm cache holds them all (and the OS has the file in memory).
        assert_eq!(db.iter().expect("iter").count() as u64, KEYS);
        let mut picks = DataGen::new(DEFAULT_SEED ^ 7, 0, 0);
        group.bench_function(name, |b| {
            b.iter(|| db.get(key(picks.index(KEYS as usize) as u64)).expect("get").expect("present"));
        });
        db.close().expect("close");
    }
    group.finish();
}

/// The same document as [`Job`], stored in a collection without secondary indexes.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
struct UnindexedJob(Job);

impl Record for UnindexedJob {
    const COLLECTION: &'static str = "unindexed_jobs";

    fn id(&self) -> String {
        self.0.id.clone()
    }
}

fn index_maintenance(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::with_db(open(dir.path(), 64 << 20, 64 << 20), StoreOptions::default()).expect("store");
    let indexed = store.collection::<Job>().expect("jobs");
    let unindexed = store.collection::<UnindexedJob>().expect("unindexed jobs");
    let mut rng = rand::SeedableRng::seed_from_u64(DEFAULT_SEED);
    let template = job(0, &mut rng);
    let mut next = 0usize;
    let mut group = quick_group(c, "index_maintenance");
    group.throughput(Throughput::Elements(1));
    group.bench_function("insert_job_6_indexes", |b| {
        b.iter_batched(
            || {
                next += 1;
                let mut j = template.clone();
                j.id = format!("job-{next:08}");
                j
            },
            |j| indexed.insert(&j).expect("insert"),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("insert_job_0_indexes", |b| {
        b.iter_batched(
            || {
                next += 1;
                let mut j = template.clone();
                j.id = format!("job-{next:08}");
                UnindexedJob(j)
            },
            |j| unindexed.insert(&j).expect("insert"),
            BatchSize::SmallInput,
        );
    });
    group.finish();
    drop((indexed, unindexed));
    store.db().clone().close().expect("close");
}

/// The benchmarks, as one criterion group.
mod group {
    use super::*;
    criterion_group!(parts, wal_append, memtable_insert, table_roundtrip, table_lookup, index_maintenance);
}
criterion_main!(group::parts);
