//! `rss`: peak memory of a process that loads keys into Cairn and reads them back at random, against the
//! memory the options allow.
//!
//! ```text
//! cargo run --release -p cairn-bench --bin rss -- [--n 1000000] [--reads 1000000] [--cache-mib 64]
//!     [--memtable-mib 64] [--dir DIR]
//! ```
//!
//! Loads `--n` keys (16-byte keys, 100-byte incompressible values, 1000 per batch, `Durability::None`),
//! flushes, waits for compaction to settle, then does `--reads` random gets of existing keys. With
//! `--skip-load` it opens what an earlier run left in `--dir` (loaded with the same `--n`) and only reads:
//! the peak then is that of a reader alone, without the heap the allocator keeps from the load. A sampler
//! reads `/proc/self/status` every 20 ms and keeps the peaks of `RssAnon` (heap: memtables, caches, index
//! and filter blocks) and `VmRSS` (that plus the pages of mapped table files, which the kernel may drop
//! at will). Linux only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cairn_engine::{Db, Durability, WriteBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
const BATCH: usize = 1000;
const MIB: u64 = 1 << 20;

type Failure = Box<dyn std::error::Error>;

const USAGE: &str = "usage: rss [--n KEYS] [--reads N] [--cache-mib N] [--memtable-mib N] [--dir DIR [--skip-load]]";

struct Args {
    n: u64,
    reads: u64,
    cache_mib: u64,
    memtable_mib: u64,
    dir: Option<PathBuf>,
    skip_load: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args =
        Args { n: 1_000_000, reads: 1_000_000, cache_mib: 64, memtable_mib: 64, dir: None, skip_load: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        if flag == "--skip-load" {
            args.skip_load = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || value.replace('_', "").parse::<u64>().map_err(|e| format!("{flag} {value}: {e}"));
        match flag.as_str() {
            "--n" => args.n = number()?,
            "--reads" => args.reads = number()?,
            "--cache-mib" => args.cache_mib = number()?,
            "--memtable-mib" => args.memtable_mib = number()?,
            "--dir" => args.dir = Some(PathBuf::from(&value)),
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if args.n == 0 {
        return Err("--n must be at least 1".to_owned());
    }
    if args.skip_load && args.dir.is_none() {
        return Err(format!("--skip-load needs --dir\n{USAGE}"));
    }
    Ok(args)
}

/// `(RssAnon, VmRSS)` in bytes, from `/proc/self/status`.
fn rss_now() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("RssAnon:"), field("VmRSS:"))
}

/// Peaks since the last [`Sampler::take`].
struct Sampler {
    anon: AtomicU64,
    total: AtomicU64,
    stop: AtomicBool,
}

impl Sampler {
    fn sample(&self) {
        let (anon, total) = rss_now();
        self.anon.fetch_max(anon, Ordering::Relaxed);
        self.total.fetch_max(total, Ordering::Relaxed);
    }

    fn take(&self) -> (u64, u64) {
        self.sample();
        let (anon, total) = rss_now();
        (self.anon.swap(anon, Ordering::Relaxed), self.total.swap(total, Ordering::Relaxed))
    }
}

#[expect(clippy::big_endian_bytes, reason = "keys of distinct numbers differ; any byte order would do")]
fn key(i: u64) -> [u8; KEY_LEN] {
    // Spread over the key space so that the load is not sorted.
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / MIB as f64)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rss: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            if !args.skip_load {
                let _ = std::fs::remove_dir_all(d);
            }
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let sampler = Arc::new(Sampler { anon: AtomicU64::new(0), total: AtomicU64::new(0), stop: AtomicBool::new(false) });
    let poller = {
        let s = sampler.clone();
        thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                s.sample();
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let (base_anon, _) = sampler.take();
    let db = Db::builder()
        .durability(Durability::None)
        .block_cache_size((args.cache_mib * MIB) as usize)
        .memtable_size((args.memtable_mib * MIB) as usize)
        .open(&dir)?;
    let mut rng = StdRng::seed_from_u64(7);
    let mut value = vec![0u8; VALUE_LEN];
    let started = Instant::now();
    let mut batch = WriteBatch::new();
    if !args.skip_load {
        for i in 0..args.n {
            rng.fill(&mut value[..]);
            batch.put(key(i), &value);
            if batch.len() == BATCH || i + 1 == args.n {
                db.write(std::mem::take(&mut batch))?;
            }
        }
        db.flush()?;
        db.compact()?;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let (load_anon, load_total) = sampler.take();

    let started = Instant::now();
    let mut found = 0u64;
    for _ in 0..args.reads {
        let i = rng.gen_range(0..args.n);
        found += u64::from(db.get(key(i))?.is_some());
    }
    let read_secs = started.elapsed().as_secs_f64();
    if found != args.reads {
        return Err(format!("{} of {} reads found nothing", args.reads - found, args.reads).into());
    }
    let (read_anon, read_total) = sampler.take();
    let stats = db.stats();
    sampler.stop.store(true, Ordering::Relaxed);
    let _ = poller.join();

    let budget = (args.cache_mib + args.memtable_mib * 3) * MIB;
    println!(
        "{} keys, block_cache_size {} MiB, memtable_size {} MiB (x3 with the frozen ones: budget {}), \
         {} tables, {} on disk",
        args.n,
        args.cache_mib,
        args.memtable_mib,
        mib(budget),
        stats.table_count(),
        mib(stats.table_bytes())
    );
    println!("baseline RssAnon before open: {}", mib(base_anon));
    println!(
        "open{}: {:.1} s; peak RssAnon {}, peak VmRSS {}",
        if args.skip_load { "" } else { " + load + flush + compact" },
        load_secs,
        mib(load_anon),
        mib(load_total)
    );
    println!(
        "{} random gets: {:.0}/s; peak RssAnon {}, peak VmRSS {}",
        args.reads,
        args.reads as f64 / read_secs,
        mib(read_anon),
        mib(read_total)
    );
    println!(
        "block cache at the end: {} charged ({} of it index and filter blocks)",
        mib(stats.cache_bytes),
        mib(stats.cache_index_filter_bytes)
    );
    if let Some(ru) = maxrss() {
        println!("getrusage maxrss: {}", mib(ru));
    }
    drop(db);
    Ok(())
}

/// Peak resident set (`VmHWM`), which counts mapped file pages too.
fn maxrss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}
