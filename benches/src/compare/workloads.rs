//! The workloads: generated data, how many operations each set performs ([`KvPlan`], [`DocPlan`]), the
//! timed loops, and the checksums that prove every engine gave the same answers.
//!
//! Everything is derived from the seed, so two processes (the parent and a child running one engine's set)
//! generate the same keys, values and jobs in the same order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use cairn_platform::{Job, JobStatus};
use cairn_store::{ClaimError, Collection, Query, Stored};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::sustained::Latency;
use super::{disk_usage, open_docs, open_kv, open_kv_logged, Compacted, EngineSpec, KvEngine, KvReader, Result};
use crate::DataGen;

/// Key length of the key-value workloads, in bytes.
pub const KEY_LEN: usize = 24;
/// Value length of the key-value workloads, in bytes.
pub const VALUE_LEN: usize = 150;
/// Value length of the reads of large values (the `kv4k` set), in bytes.
pub const LARGE_VALUE_LEN: usize = 4096;
/// Pairs per durable commit when loading the large values (not timed).
pub const LARGE_LOAD_BATCH: usize = 1_000;
/// Threads of the concurrent durable writes.
pub const WRITER_THREADS: usize = 8;
/// Items per range read.
pub const SCAN_LEN: usize = 10;
/// Jobs per durable insert transaction.
pub const JOB_BATCH: usize = 100;
/// Jobs per page when paging through an owner's jobs.
pub const PAGE: usize = 100;
/// Jobs returned by the scheduler query.
pub const SCHEDULER_LIMIT: usize = 50;
/// The clock of the claims (ms since the epoch), after every generated job's creation.
pub const CLAIM_NOW_MS: i64 = 1_800_000_000_000;
/// Lease given by a claim, in ms.
pub const LEASE_MS: i64 = 600_000;
/// Owners paged through (`user0` to `user9`).
pub const PAGED_OWNERS: usize = 10;

/// Operation counts of the key-value set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvPlan {
    /// Keys bulk-loaded in one transaction.
    pub n: usize,
    /// Single-put durable commits from one thread.
    pub individual: usize,
    /// Batches of the batch writes.
    pub batches: usize,
    /// Pairs per batch.
    pub batch_size: usize,
    /// Single-put commits per thread of the concurrent writes (`WRITER_THREADS` threads).
    pub per_writer: usize,
    /// Random point reads (one thread).
    pub reads: usize,
    /// Random range reads of `SCAN_LEN` items.
    pub scans: usize,
    /// Random point reads shared by the threads of the 2- and 4-thread runs.
    pub threaded_reads: usize,
    /// Keys deleted per transaction when removing half the keys.
    pub removal_batch: usize,
    /// Keys per durable commit in the child loaded before the crash test.
    pub crash_batch: usize,
    /// Pairs with 4 KiB values loaded for the reads of large values: a tenth of `n`, at least 100.
    pub large_values: usize,
    /// Random point reads of the large values (one thread).
    pub large_reads: usize,
    /// Pairs with 1 KiB values loaded before the sustained workload, which its reader reads: a tenth of
    /// `n`, at least 100.
    pub sustained_keys: usize,
    /// How long the sustained workload's writers and reader run, in milliseconds.
    pub sustained_ms: u64,
}

impl KvPlan {
    /// The full plan (1,000 single commits, 100 batches of 1,000, 8 x 500 concurrent commits, 1M reads,
    /// 500k range reads, 1M threaded reads, removals in batches of 10,000, 200k reads of 4 KiB values), or
    /// with `quick` a plan about 1/20 to 1/50 of that; the sustained workload runs for `sustained`.
    pub fn new(n: usize, quick: bool, sustained: Duration) -> Self {
        let large_values = (n / 10).max(100);
        let sustained_keys = (n / 10).max(100);
        let sustained_ms = u64::try_from(sustained.as_millis()).unwrap_or(u64::MAX);
        if quick {
            Self {
                n,
                individual: 100,
                batches: 10,
                batch_size: 100,
                per_writer: 25,
                reads: 20_000,
                scans: 10_000,
                threaded_reads: 20_000,
                removal_batch: 1_000,
                crash_batch: 1_000,
                large_values,
                large_reads: 5_000,
                sustained_keys,
                sustained_ms,
            }
        } else {
            Self {
                n,
                individual: 1_000,
                batches: 100,
                batch_size: 1_000,
                per_writer: 500,
                reads: 1_000_000,
                scans: 500_000,
                threaded_reads: 1_000_000,
                removal_batch: 10_000,
                crash_batch: 10_000,
                large_values,
                large_reads: 200_000,
                sustained_keys,
                sustained_ms,
            }
        }
    }

    /// Keys written by the set: the bulk load, then the single commits, the batches and the concurrent
    /// commits, in that order.
    pub fn total_keys(&self) -> usize {
        self.n + self.individual + self.batches * self.batch_size + WRITER_THREADS * self.per_writer
    }
}

/// Operation counts of the collection set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocPlan {
    /// Jobs inserted, in durable transactions of `JOB_BATCH`.
    pub jobs: usize,
    /// Repetitions of the scheduler query.
    pub scheduler_queries: usize,
    /// Claims of each claim run (1 thread, then 4 threads).
    pub claims: usize,
    /// Random gets by id.
    pub gets: usize,
    /// Seed of the jobs and of the ids picked for the gets.
    pub seed: u64,
}

impl DocPlan {
    /// The full plan (2,000 scheduler queries, 10,000 claims per run, 100,000 gets) or with `quick` a
    /// smaller one; claims are capped at a tenth of the jobs per run, so the PENDING jobs (a quarter) never
    /// run out over the two runs.
    pub fn new(jobs: usize, quick: bool, seed: u64) -> Self {
        let (scheduler_queries, claims, gets) = if quick { (100, 200, 2_000) } else { (2_000, 10_000, 100_000) };
        Self { jobs, scheduler_queries, claims: claims.min(jobs / 10).max(4), gets, seed }
    }
}

/// One timed (or measured) workload of one engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The workload's name, the same for every engine.
    pub workload: String,
    /// Operations performed (keys, commits, queries, ...), for ops/s.
    pub ops: u64,
    /// Wall-clock time; `None` for a size.
    pub seconds: Option<f64>,
    /// Bytes on disk, where the workload measures them.
    pub bytes_on_disk: Option<u64>,
    /// What the engine answered, as a checksum every engine must match.
    pub checksum: Option<String>,
    /// Why the number means something else than for the other engines (e.g. `not available`).
    #[serde(default)]
    pub note: Option<String>,
    /// Latency percentiles of the operations, where the workload records each one's (the sustained
    /// workload); `ops` is then the count of operations done in `seconds`, which differs between engines.
    #[serde(default)]
    pub latency: Option<Latency>,
}

impl Measurement {
    fn timed(workload: impl Into<String>, ops: usize, start: Instant) -> Self {
        Self::lasted(workload, ops, start.elapsed())
    }

    /// A workload of `ops` operations that took `time` in all.
    fn lasted(workload: impl Into<String>, ops: usize, time: Duration) -> Self {
        let m = Self {
            workload: workload.into(),
            ops: ops as u64,
            seconds: Some(time.as_secs_f64()),
            bytes_on_disk: None,
            checksum: None,
            note: None,
            latency: None,
        };
        eprintln!("    {:<44} {:>10.3} s", m.workload, m.seconds.unwrap_or_default());
        m
    }

    /// A workload that ran for `seconds` and did `latency.count` operations, each timed.
    pub(crate) fn with_latency(workload: impl Into<String>, seconds: f64, latency: Latency) -> Self {
        let m = Self {
            workload: workload.into(),
            ops: latency.count,
            seconds: Some(seconds),
            bytes_on_disk: None,
            checksum: None,
            note: None,
            latency: Some(latency),
        };
        if let Some(l) = &m.latency {
            eprintln!(
                "    {:<44} {:>10.0}/s  p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
                m.workload,
                m.ops_per_sec().unwrap_or_default(),
                l.p50_us,
                l.p99_us,
                l.p999_us,
                l.max_us
            );
        }
        m
    }

    fn size(workload: impl Into<String>, bytes: u64) -> Self {
        let m = Self {
            workload: workload.into(),
            ops: 0,
            seconds: None,
            bytes_on_disk: Some(bytes),
            checksum: None,
            note: None,
            latency: None,
        };
        eprintln!("    {:<44} {:>10.1} MiB", m.workload, bytes as f64 / 1048576.0);
        m
    }

    fn with_checksum(mut self, sum: Checksum) -> Self {
        self.checksum = Some(sum.to_string());
        self
    }

    /// Operations per second, when timed.
    pub fn ops_per_sec(&self) -> Option<f64> {
        self.seconds.filter(|s| *s > 0.0 && self.ops > 0).map(|s| self.ops as f64 / s)
    }
}

/// An order-independent digest of the items an engine returned: how many, and a wrapping sum of a
/// fingerprint of each. Cheap enough for the timed loops: a fingerprint reads at most 32 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum {
    count: u64,
    sum: u64,
}

impl Checksum {
    /// Adds one item.
    pub fn add(&mut self, bytes: &[u8]) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(mix(fingerprint(bytes)));
    }

    /// Adds a number, as one item.
    pub fn add_u64(&mut self, n: u64) {
        self.add(&n.to_le_bytes());
    }

    /// Adds every item of `other`.
    pub fn merge(&mut self, other: Checksum) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// Items added.
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{:016x}", self.count, self.sum)
    }
}

/// Length, then the first and last 16 bytes (all of them when 32 or fewer), folded 8 bytes at a time.
fn fingerprint(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut fold = |chunk: &[u8]| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(K).rotate_left(29);
    };
    if bytes.len() <= 32 {
        bytes.chunks(8).for_each(&mut fold);
    } else {
        bytes[..16].chunks(8).for_each(&mut fold);
        bytes[bytes.len() - 16..].chunks(8).for_each(&mut fold);
    }
    h
}

/// splitmix64's finalizer, so that sums of fingerprints do not cancel.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The key-value data: `total` pairs of random 24-byte keys and random 150-byte values from `seed`.
pub fn kv_data(seed: u64, total: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut gen = DataGen::new(seed, KEY_LEN, VALUE_LEN);
    (0..total).map(|_| (gen.key(), gen.value())).collect()
}

/// `count` random indexes below `below`, reproducible from `seed`.
fn picks(seed: u64, count: usize, below: usize) -> Vec<usize> {
    let mut gen = DataGen::new(seed, 0, 0);
    (0..count).map(|_| gen.index(below)).collect()
}

/// Runs `body(thread_index)` on `threads` threads that start together; returns the time from the common
/// start to the last thread's end, and the results in thread order. Set-up done before the barrier (opening
/// a connection, a read transaction) is not timed.
fn timed_threads<T: Send>(
    threads: usize,
    body: impl Fn(usize, &Barrier) -> Result<T> + Sync,
) -> Result<(Instant, Vec<T>)> {
    let barrier = Barrier::new(threads + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (body, barrier) = (&body, &barrier);
                s.spawn(move || body(i, barrier))
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut out = Vec::with_capacity(threads);
        for h in handles {
            out.push(h.join().map_err(|_| "a worker thread panicked")??);
        }
        Ok((start, out))
    })
}

/// The bulk load as each engine does it by default: Cairn's batch is large enough to be written straight
/// to tables.
pub const BULK_LOAD: &str = "bulk load (cairn: table ingest)";
/// The bulk load with Cairn's table ingest off: the batch goes through the WAL and the memtable.
pub const BULK_LOAD_LOGGED: &str = "bulk load (cairn: WAL and memtable)";

/// Runs the key-value set against `spec` in `dir` (and, for the bulk load through the WAL, in a sibling
/// directory named `dir` with `-logged` appended).
pub fn run_kv(
    spec: EngineSpec,
    dir: &Path,
    cache_bytes: usize,
    plan: &KvPlan,
    seed: u64,
    data: &[(Vec<u8>, Vec<u8>)],
) -> Result<Vec<Measurement>> {
    let mut out = Vec::new();
    let n = plan.n;
    let (loaded, rest) = data.split_at(n);
    let (single, rest) = rest.split_at(plan.individual);
    let (batched, concurrent) = rest.split_at(plan.batches * plan.batch_size);
    let total = plan.total_keys();
    if data.len() != total {
        return Err(format!("expected {total} pairs, got {}", data.len()).into());
    }

    // The same pairs through Cairn's WAL and memtable (table ingest off), in a database of its own, closed
    // and removed before the set goes on; the other engines have one write path, so for them this is the
    // bulk load again. Only the commit is timed (Cairn's memtable is flushed afterwards, in the background).
    let mut logged_dir = dir.as_os_str().to_owned();
    logged_dir.push("-logged");
    let logged_dir = std::path::PathBuf::from(logged_dir);
    let logged = open_kv_logged(spec, &logged_dir, cache_bytes)?;
    let start = Instant::now();
    logged.bulk_load(loaded)?;
    let logged_load = Measurement::timed(BULK_LOAD_LOGGED, n, start);
    logged.close()?;
    std::fs::remove_dir_all(&logged_dir)?;

    let mut engine = open_kv(spec, dir, cache_bytes)?;

    let start = Instant::now();
    engine.bulk_load(loaded)?;
    out.push(Measurement::timed(BULK_LOAD, n, start));
    out.push(logged_load);

    let mut writer = engine.writer()?;
    let start = Instant::now();
    for (k, v) in single {
        writer.put(k, v)?;
    }
    out.push(Measurement::timed("individual writes", plan.individual, start));
    drop(writer);

    let start = Instant::now();
    for chunk in batched.chunks(plan.batch_size) {
        engine.batch_put(chunk)?;
    }
    out.push(Measurement::timed("batch writes", plan.batches * plan.batch_size, start));

    let shared: &dyn KvEngine = &*engine;
    let (start, _) = timed_threads(WRITER_THREADS, |t, barrier| {
        let mut writer = shared.writer()?;
        barrier.wait();
        for (k, v) in &concurrent[t * plan.per_writer..(t + 1) * plan.per_writer] {
            writer.put(k, v)?;
        }
        Ok(())
    })?;
    out.push(Measurement::timed(
        format!("concurrent writes ({WRITER_THREADS} threads)"),
        WRITER_THREADS * plan.per_writer,
        start,
    ));

    let describe = |when: &str, engine: &dyn KvEngine| {
        if let Some(state) = engine.describe() {
            eprintln!("      ({when}: {state})");
        }
    };
    describe("before the reads", shared);

    // Random reads of existing keys; the expected digest comes from the data itself.
    let order = picks(seed ^ 0x5eed_0001, plan.reads, total);
    let mut reader = engine.reader()?;
    out.push(timed_gets(spec, &mut *reader, data, &order, "random reads".to_owned())?);
    describe("after the random reads", shared);

    let order = picks(seed ^ 0x5eed_0002, plan.scans, total);
    let mut sum = Checksum::default();
    let mut items = 0;
    let start = Instant::now();
    for &i in &order {
        items += reader.range(&data[i].0, SCAN_LEN, &mut sum)?;
    }
    out.push(Measurement::timed(format!("range reads ({SCAN_LEN} items)"), plan.scans, start).with_checksum(sum));
    if items < plan.scans {
        return Err(format!("{spec}: range reads found {items} items for {} scans", plan.scans).into());
    }
    drop(reader);
    describe("after the range reads", shared);

    for threads in [2usize, 4] {
        let per = plan.threaded_reads / threads;
        let orders: Vec<Vec<usize>> = (0..threads).map(|t| picks(seed ^ 0x5eed_0100 ^ t as u64, per, total)).collect();
        let (start, sums) = timed_threads(threads, |t, barrier| {
            let mut reader = shared.reader()?;
            let mut sum = Checksum::default();
            barrier.wait();
            for &i in &orders[t] {
                if !reader.get(&data[i].0, &mut sum)? {
                    return Err("an existing key was not found".into());
                }
            }
            Ok(sum)
        })?;
        let mut sum = Checksum::default();
        sums.into_iter().for_each(|s| sum.merge(s));
        out.push(
            Measurement::timed(format!("random reads ({threads} threads)"), per * threads, start).with_checksum(sum),
        );
    }

    // Remove half the keys (the first half written, which is a random half of the key space).
    let removed = &data[..total / 2];
    let start = Instant::now();
    for chunk in removed.chunks(plan.removal_batch) {
        let keys: Vec<Vec<u8>> = chunk.iter().map(|(k, _)| k.clone()).collect();
        engine.remove(&keys)?;
    }
    out.push(Measurement::timed("removals (half the keys)", removed.len(), start));
    let mut reader = engine.reader()?;
    let mut sum = Checksum::default();
    for &i in &picks(seed ^ 0x5eed_0003, 2_000.min(total), total) {
        let found = reader.get(&data[i].0, &mut sum)?;
        if found != (i >= total / 2) {
            return Err(format!("{spec}: after removals, key {i} found = {found}").into());
        }
    }
    drop(reader);

    describe("after the removals", &*engine);
    out.push(Measurement::size("size on disk before compaction", disk_usage(dir)?));
    let start = Instant::now();
    let did = engine.compact()?;
    let mut compaction = Measurement::timed("compaction", total - total / 2, start);
    describe("after compaction", &*engine);
    // Measured once closed: what the engine keeps, without files it deletes in the background or on close.
    engine.close()?;
    let after = disk_usage(dir)?;
    compaction.bytes_on_disk = Some(after);
    if did == Compacted::Unsupported {
        compaction.seconds = None;
        compaction.note = Some("not available".to_owned());
    }
    out.push(compaction);
    out.push(Measurement::size("size on disk after compaction (closed)", after));
    Ok(out)
}

/// The pairs of the reads of large values: `count` random keys with random (incompressible) 4 KiB values.
pub fn large_data(seed: u64, count: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut gen = DataGen::new(seed ^ 0x5eed_0200, KEY_LEN, LARGE_VALUE_LEN);
    (0..count).map(|_| (gen.key(), gen.value())).collect()
}

/// Opens `spec` in `dir` and loads `data` in durable commits of `batch` pairs, untimed; prints how long the
/// load took, under `label`, on stderr.
pub fn open_and_load(
    spec: EngineSpec,
    dir: &Path,
    cache_bytes: usize,
    data: &[(Vec<u8>, Vec<u8>)],
    batch: usize,
    label: &str,
) -> Result<Box<dyn KvEngine>> {
    let engine = open_kv(spec, dir, cache_bytes)?;
    let start = Instant::now();
    for chunk in data.chunks(batch) {
        engine.batch_put(chunk)?;
    }
    let value_len = data.first().map_or(0, |(_, v)| v.len());
    eprintln!(
        "      ({label}: {} pairs of {value_len} B loaded in {:.3} s)",
        data.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(engine)
}

/// Runs the reads of large values (the `kv4k` set) against `spec` in a fresh database in `dir`: loads
/// `data` in durable commits of [`LARGE_LOAD_BATCH`] (not timed), then times `plan.large_reads` random
/// gets on one thread, checked against the data and checksummed.
pub fn run_large_reads(
    spec: EngineSpec,
    dir: &Path,
    cache_bytes: usize,
    plan: &KvPlan,
    seed: u64,
    data: &[(Vec<u8>, Vec<u8>)],
) -> Result<Vec<Measurement>> {
    let engine = open_and_load(spec, dir, cache_bytes, data, LARGE_LOAD_BATCH, "large values")?;
    if let Some(state) = engine.describe() {
        eprintln!("      (before the reads: {state})");
    }

    let order = picks(seed ^ 0x5eed_0005, plan.large_reads, data.len());
    let mut reader = engine.reader()?;
    let m =
        timed_gets(spec, &mut *reader, data, &order, format!("random reads ({} KiB values)", LARGE_VALUE_LEN / 1024))?;
    drop(reader);
    engine.close()?;
    Ok(vec![m])
}

/// Gets the keys of `data` at `order` through `reader`, timed, as `workload`; an error if a key is missing or
/// the values' digest is not the data's.
fn timed_gets(
    spec: EngineSpec,
    reader: &mut dyn KvReader,
    data: &[(Vec<u8>, Vec<u8>)],
    order: &[usize],
    workload: String,
) -> Result<Measurement> {
    let mut expected = Checksum::default();
    for &i in order {
        expected.add(&data[i].1);
    }
    let mut sum = Checksum::default();
    let start = Instant::now();
    for &i in order {
        if !reader.get(&data[i].0, &mut sum)? {
            return Err(format!("{spec}: an existing key was not found").into());
        }
    }
    let m = Measurement::timed(workload, order.len(), start).with_checksum(sum);
    if sum != expected {
        return Err(format!("{spec}: {} returned wrong values ({sum}, expected {expected})", m.workload).into());
    }
    Ok(m)
}

/// A job of about 500 bytes as JSON: owner `user{i % 50}`, project `project{i % 20}`, status cycling
/// through PENDING, RUNNING, COMPLETED, FAILED, random priority below 1000.
pub fn job(i: usize, rng: &mut StdRng) -> Job {
    let statuses = [JobStatus::Pending, JobStatus::Running, JobStatus::Completed, JobStatus::Failed];
    let mut j = Job::new(
        format!("job-{i:08}"),
        format!("train-model-{}", i % 997),
        format!("user{}", i % 50),
        format!("project{}", i % 20),
        rng.gen_range(0..1000),
        1_700_000_000_000 + i as i64,
    );
    j.status = statuses[i % 4];
    j.resources.cpus = 8;
    j.resources.memory_mb = 32_768;
    j.resources.gpus = 1;
    j.environment.image = "registry.local/ml/pytorch:2.4-cuda12".into();
    j.environment.command =
        vec!["python".into(), "train.py".into(), "--epochs".into(), "90".into(), "--lr".into(), "0.1".into()];
    j.environment.env =
        BTreeMap::from([("NCCL_DEBUG".to_owned(), "WARN".to_owned()), ("OMP_NUM_THREADS".to_owned(), "8".to_owned())]);
    j.labels =
        BTreeMap::from([("team".to_owned(), format!("team-{}", i % 9)), ("tier".to_owned(), "batch".to_owned())]);
    j
}

/// `count` jobs from `seed`.
pub fn jobs(seed: u64, count: usize) -> Vec<Job> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count).map(|i| job(i, &mut rng)).collect()
}

/// Claims the best PENDING job of Cairn's `jobs` collection for `node` with `Collection::claim`: highest
/// priority first (`status_priority`), the job the peers' claims pick with one query too, changed by
/// `apply_claim`. `None` if no job is PENDING; [`ClaimError::Contended`] if concurrent claimers took every
/// candidate this claim tried (retry it).
pub fn claim_next(
    jobs: &Collection<Job>,
    node: &str,
    now_ms: i64,
    lease_ms: i64,
) -> std::result::Result<Option<Stored<Job>>, ClaimError> {
    let queries = [Query::new().eq("status", JobStatus::Pending.as_str()).order_by("priority").descending()];
    jobs.claim(&queries, |job| {
        if !job.status.can_transition_to(JobStatus::Running) {
            return false;
        }
        apply_claim(job, node, now_ms, lease_ms);
        true
    })
}

/// Applies a claim to a job, as every engine's claim does ([`claim_next`] for Cairn): RUNNING on `node`,
/// lease from `now_ms`, first start time kept, attempts counted.
pub fn apply_claim(job: &mut Job, node: &str, now_ms: i64, lease_ms: i64) {
    job.status = JobStatus::Running;
    job.node = Some(node.to_owned());
    job.started_at.get_or_insert(now_ms);
    job.lease_expires_at = Some(now_ms + lease_ms);
    job.attempts += 1;
}

/// Runs the collection set against `spec` in `dir`. `None` if the engine has no documents.
pub fn run_docs(
    spec: EngineSpec,
    dir: &Path,
    cache_bytes: usize,
    plan: &DocPlan,
    all: &[Job],
) -> Result<Option<Vec<Measurement>>> {
    let seed = plan.seed;
    let sample = serde_json::to_vec(&all[0])?.len();
    let Some(engine) = open_docs(spec, dir, cache_bytes)? else { return Ok(None) };
    let mut out = Vec::new();

    let start = Instant::now();
    if all.len() != plan.jobs {
        return Err(format!("expected {} jobs, got {}", plan.jobs, all.len()).into());
    }
    for chunk in all.chunks(JOB_BATCH) {
        engine.insert_batch(chunk)?;
    }
    out.push(Measurement::timed(format!("jobs: insert (~{sample} B, batches of {JOB_BATCH})"), plan.jobs, start));
    let describe = |when: &str| {
        if let Some(state) = engine.describe() {
            eprintln!("      ({when}: {state})");
        }
    };
    describe("after the inserts");

    let mut session = engine.session()?;
    let mut sum = Checksum::default();
    let start = Instant::now();
    for _ in 0..plan.scheduler_queries {
        let got = session.top_pending(SCHEDULER_LIMIT, &mut sum)?;
        if got != SCHEDULER_LIMIT.min(plan.jobs / 4) {
            return Err(format!("{spec}: scheduler query returned {got} jobs").into());
        }
    }
    out.push(
        Measurement::timed(
            format!("jobs: scheduler query (top {SCHEDULER_LIMIT} PENDING)"),
            plan.scheduler_queries,
            start,
        )
        .with_checksum(sum),
    );

    let mut sum = Checksum::default();
    let start = Instant::now();
    for _ in 0..plan.claims {
        let id = session.claim("node-0", CLAIM_NOW_MS, LEASE_MS)?.ok_or("no job left to claim")?;
        sum.add(id.as_bytes());
    }
    out.push(Measurement::timed("jobs: claim (1 thread)", plan.claims, start).with_checksum(sum));
    drop(session);

    let shared: &dyn super::DocEngine = &*engine;
    let per = plan.claims / 4;
    let (start, sums) = timed_threads(4, |t, barrier| {
        let mut session = shared.session()?;
        let node = format!("node-{}", t + 1);
        let mut sum = Checksum::default();
        barrier.wait();
        for _ in 0..per {
            let id = session.claim(&node, CLAIM_NOW_MS, LEASE_MS)?.ok_or("no job left to claim")?;
            sum.add(id.as_bytes());
        }
        Ok(sum)
    })?;
    let mut sum = Checksum::default();
    sums.into_iter().for_each(|s| sum.merge(s));
    out.push(Measurement::timed("jobs: claim (4 threads)", per * 4, start).with_checksum(sum));

    let mut session = engine.session()?;
    let mut sum = Checksum::default();
    let (mut seen, mut pages) = (0, 0);
    let start = Instant::now();
    for owner in 0..PAGED_OWNERS {
        let (jobs, p) = session.page_owner(&format!("user{owner}"), PAGE, &mut sum)?;
        seen += jobs;
        pages += p;
    }
    out.push(Measurement::timed(format!("jobs: page by owner ({PAGE} per page)"), pages, start).with_checksum(sum));
    describe("after the pages");
    let expected: usize = (0..PAGED_OWNERS).map(|o| (plan.jobs + 49 - o) / 50).sum();
    if seen != expected {
        return Err(format!("{spec}: paging found {seen} jobs, expected {expected}").into());
    }

    let order = picks(seed ^ 0x5eed_0004, plan.gets, plan.jobs);
    let ids: Vec<String> = order.iter().map(|i| all[*i].id.clone()).collect();
    let mut sum = Checksum::default();
    let start = Instant::now();
    for id in &ids {
        if !session.get(id, &mut sum)? {
            return Err(format!("{spec}: job {id} not found").into());
        }
    }
    out.push(Measurement::timed("jobs: get by id", plan.gets, start).with_checksum(sum));
    describe("after the gets");

    // The scheduler query while the collection changes: before each query, one claim (the best PENDING
    // job becomes RUNNING, one durable commit) and one insert of a new PENDING job whose priority (1000 and
    // above) puts it among the top (another durable commit), so the top 50 differ from one query to the
    // next. The sequence is the same for every engine, so the answers are too. Only the queries are timed.
    let pending = plan.jobs.div_ceil(4) - plan.claims - per * 4;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_0006);
    let mut sum = Checksum::default();
    let mut queries = Duration::ZERO;
    let start = Instant::now();
    for k in 0..plan.scheduler_queries {
        session.claim("node-0", CLAIM_NOW_MS, LEASE_MS)?.ok_or("no job left to claim")?;
        let mut new = job(plan.jobs + k, &mut rng);
        new.status = JobStatus::Pending;
        new.priority = 1000 + (k as i64 * 7919) % 1000;
        engine.insert_batch(std::slice::from_ref(&new))?;
        let query = Instant::now();
        let got = session.top_pending(SCHEDULER_LIMIT, &mut sum)?;
        queries += query.elapsed();
        if got != SCHEDULER_LIMIT.min(pending) {
            return Err(format!("{spec}: scheduler query (while updated) returned {got} jobs").into());
        }
    }
    eprintln!("      (claims, inserts and queries: {:.3} s)", start.elapsed().as_secs_f64());
    out.push(
        Measurement::lasted(
            format!("jobs: scheduler query (top {SCHEDULER_LIMIT} PENDING, while updated)"),
            plan.scheduler_queries,
            queries,
        )
        .with_checksum(sum),
    );
    drop(session);
    engine.close()?;
    out.push(Measurement::size("jobs: size on disk", disk_usage(dir)?));
    Ok(Some(out))
}
