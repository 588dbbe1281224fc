//! The sustained workload: [`SUSTAINED_WRITERS`] threads commit batches of [`SUSTAINED_BATCH`] pairs with
//! 1 KiB values, one transaction each with the engine's durability setting, for a set time (20 s by
//! default), while one thread reads random keys loaded beforehand. Every commit's and every read's latency
//! is recorded; the report gives the rates and the percentiles ([`Latency`]).
//!
//! Each writer has keys of its own: new ones until it has written [`SUSTAINED_KEYS_PER_WRITER`], then the
//! same keys again (with new values), so that the live data stays bounded (about 1 GiB) however fast an
//! engine writes, while the bytes written are not.
//!
//! The writers and the reader start together at a barrier and stop at the same deadline; the window is
//! measured from the barrier to the last thread's end (the last commit may run past the deadline). The
//! reader checks every value it reads against the data, and after the window every writer's last batch
//! must be readable.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::workloads::{open_and_load, Checksum, KvPlan, Measurement, KEY_LEN};
use super::{EngineSpec, KvEngine, Result};
use crate::DataGen;

/// Writer threads of the sustained workload.
pub const SUSTAINED_WRITERS: usize = 4;
/// New pairs per commit of the sustained workload.
pub const SUSTAINED_BATCH: usize = 10;
/// Value length of the sustained workload, in bytes.
pub const SUSTAINED_VALUE_LEN: usize = 1024;
/// Distinct keys each writer writes before it writes them again.
pub const SUSTAINED_KEYS_PER_WRITER: usize = 250_000;
/// Reads through one reader handle before the reader opens a fresh one, so that engines whose readers
/// hold a read transaction (redb, LMDB) see recent commits and do not pin old pages for the whole window.
/// Opening the handle is not timed.
pub const READS_PER_HANDLE: usize = 1_000;

/// Latency percentiles of one kind of operation, in microseconds (nearest rank: the smallest latency that
/// at least that fraction of the operations did not exceed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Operations measured.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest.
    pub max_us: f64,
}

impl Latency {
    /// The percentiles of `nanos` (sorted in place); `None` if it is empty.
    pub fn of(nanos: &mut [u64]) -> Option<Self> {
        nanos.sort_unstable();
        let last = *nanos.last()?;
        let at = |q: f64| {
            let rank = (q * nanos.len() as f64).ceil() as usize;
            nanos[rank.clamp(1, nanos.len()) - 1] as f64 / 1000.0
        };
        Some(Self {
            count: nanos.len() as u64,
            p50_us: at(0.5),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: last as f64 / 1000.0,
        })
    }
}

/// The pairs loaded before the window, which the reader reads: `count` random keys with 1 KiB values.
pub fn sustained_data(seed: u64, count: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut gen = DataGen::new(seed ^ 0x5eed_0300, KEY_LEN, SUSTAINED_VALUE_LEN);
    (0..count).map(|_| (gen.key(), gen.value())).collect()
}

fn nanos(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What one writer did: its commits' latencies and its last batch.
struct Written {
    latencies: Vec<u64>,
    last: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Runs the sustained workload against `spec` in a fresh database in `dir`: loads `loaded` (from
/// [`sustained_data`]) in durable commits of 10,000 (not timed), then runs the writers and the reader for
/// `plan.sustained_ms`. Returns two measurements, the commits and the reads, each with the window's length
/// and its latencies.
pub fn run_sustained(
    spec: EngineSpec,
    dir: &Path,
    cache_bytes: usize,
    plan: &KvPlan,
    seed: u64,
    loaded: &[(Vec<u8>, Vec<u8>)],
) -> Result<Vec<Measurement>> {
    let engine = open_and_load(spec, dir, cache_bytes, loaded, 10_000, "sustained")?;

    let window = Duration::from_millis(plan.sustained_ms);
    let shared: &dyn KvEngine = &*engine;
    let barrier = Barrier::new(SUSTAINED_WRITERS + 2);
    let done = AtomicBool::new(false);
    let (elapsed, written, reads) = thread::scope(|s| -> Result<_> {
        let writers: Vec<_> = (0..SUSTAINED_WRITERS)
            .map(|t| {
                let (barrier, done) = (&barrier, &done);
                s.spawn(move || -> Result<Written> {
                    let key_seed = seed ^ 0x5eed_0400 ^ t as u64;
                    let mut keys = DataGen::new(key_seed, KEY_LEN, 0);
                    let mut values = DataGen::new(key_seed ^ 0x5eed_0600, 0, SUSTAINED_VALUE_LEN);
                    let mut written = 0;
                    let mut latencies = Vec::with_capacity(1 << 16);
                    let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(SUSTAINED_BATCH);
                    barrier.wait();
                    while !done.load(Ordering::Relaxed) {
                        batch.clear();
                        for _ in 0..SUSTAINED_BATCH {
                            if written == SUSTAINED_KEYS_PER_WRITER {
                                (keys, written) = (DataGen::new(key_seed, KEY_LEN, 0), 0);
                            }
                            batch.push((keys.key(), values.value()));
                            written += 1;
                        }
                        let start = Instant::now();
                        let outcome = shared.batch_put(&batch);
                        latencies.push(nanos(start));
                        if let Err(e) = outcome {
                            done.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(Written { latencies, last: batch })
                })
            })
            .collect();
        let reader = {
            let (barrier, done) = (&barrier, &done);
            s.spawn(move || -> Result<Vec<u64>> {
                let mut gen = DataGen::new(seed ^ 0x5eed_0500, 0, 0);
                let mut latencies = Vec::with_capacity(1 << 20);
                let mut reader = shared.reader()?;
                barrier.wait();
                'window: loop {
                    for _ in 0..READS_PER_HANDLE {
                        if done.load(Ordering::Relaxed) {
                            break 'window;
                        }
                        let (key, value) = &loaded[gen.index(loaded.len())];
                        let mut got = Checksum::default();
                        let start = Instant::now();
                        let found = reader.get(key, &mut got);
                        latencies.push(nanos(start));
                        let mut want = Checksum::default();
                        want.add(value);
                        if !found? || got != want {
                            done.store(true, Ordering::Relaxed);
                            return Err("a loaded key was missing or had a wrong value".into());
                        }
                    }
                    drop(reader);
                    reader = shared.reader()?;
                }
                Ok(latencies)
            })
        };
        barrier.wait();
        let start = Instant::now();
        while start.elapsed() < window && !done.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(5).min(window.saturating_sub(start.elapsed())));
        }
        done.store(true, Ordering::Relaxed);
        let mut written = Vec::with_capacity(SUSTAINED_WRITERS);
        for w in writers {
            written.push(w.join().map_err(|_| "a writer thread panicked")??);
        }
        let reads = reader.join().map_err(|_| "the reader thread panicked")??;
        Ok((start.elapsed(), written, reads))
    })?;

    if let Some(state) = engine.describe() {
        eprintln!("      (after the sustained writes: {state})");
    }

    // Every writer's last commit must be there.
    let mut reader = engine.reader()?;
    for w in &written {
        for (k, v) in &w.last {
            let (mut got, mut want) = (Checksum::default(), Checksum::default());
            want.add(v);
            if !reader.get(k, &mut got)? || got != want {
                return Err(format!("{spec}: a committed pair of the sustained writers is missing").into());
            }
        }
    }
    drop(reader);
    engine.close()?;

    let mut commits: Vec<u64> = written.into_iter().flat_map(|w| w.latencies).collect();
    let mut reads = reads;
    let seconds = elapsed.as_secs_f64();
    let commits = Measurement::with_latency(
        format!("sustained: commits ({SUSTAINED_WRITERS} writers, {SUSTAINED_BATCH} x 1 KiB each)"),
        seconds,
        Latency::of(&mut commits).ok_or("no commit in the sustained window")?,
    );
    let reads = Measurement::with_latency(
        "sustained: random reads (1 thread, beside the writers)",
        seconds,
        Latency::of(&mut reads).ok_or("no read in the sustained window")?,
    );
    Ok(vec![commits, reads])
}

#[cfg(test)]
mod tests {
    use super::Latency;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut nanos: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        let l = Latency::of(&mut nanos).unwrap();
        assert_eq!(l.count, 1000);
        assert_eq!((l.p50_us, l.p99_us, l.p999_us, l.max_us), (500.0, 990.0, 999.0, 1000.0));
        let l = Latency::of(&mut [7_000]).unwrap();
        assert_eq!((l.p50_us, l.p999_us, l.max_us), (7.0, 7.0, 7.0));
        assert!(Latency::of(&mut []).is_none());
    }
}
