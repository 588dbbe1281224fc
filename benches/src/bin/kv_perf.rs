//! `kv_perf`: throughput of Cairn's basic operations, printed as a markdown table.
//!
//! ```text
//! cargo run --release -p cairn-bench --bin kv_perf -- [--n 1000000] [--dir DIR] [--lookups 1000000]
//!     [--scans 100000] [--seed N]
//! ```
//!
//! 1. random puts (24-byte keys, 150-byte values, `Durability::None`): one put per commit, then 1000 per batch;
//! 2. random gets of existing keys, as loaded and again after flush + full compaction;
//! 3. 10-item range scans starting at random existing keys;
//! 4. durable single-put commits (`Durability::Immediate`) from 1 thread and from 8 threads sharing the
//!    database (group commit).
//!
//! Data lives in a temporary directory unless `--dir` names one (its contents are replaced).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_bench::{DataGen, DEFAULT_SEED};
use cairn_engine::{Db, Durability, WriteBatch};

const KEY_LEN: usize = 24;
const VALUE_LEN: usize = 150;
/// Distinct values cycled through by the loads, so generating values costs nothing in the timed loop.
const VALUE_POOL: usize = 4096;
const BATCH: usize = 1000;
const SCAN_LEN: usize = 10;
const DURABLE_SINGLE: usize = 2000;
const DURABLE_THREADS: usize = 8;
const DURABLE_PER_THREAD: usize = 500;

type Failure = Box<dyn std::error::Error>;

struct Args {
    n: usize,
    dir: Option<PathBuf>,
    lookups: usize,
    scans: usize,
    seed: u64,
}

const USAGE: &str = "usage: kv_perf [--n KEYS] [--dir DIR] [--lookups N] [--scans N] [--seed N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args { n: 1_000_000, dir: None, lookups: 1_000_000, scans: 100_000, seed: DEFAULT_SEED };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || value.replace('_', "").parse::<u64>().map_err(|e| format!("{flag} {value}: {e}"));
        match flag.as_str() {
            "--n" => args.n = number()? as usize,
            "--lookups" => args.lookups = number()? as usize,
            "--scans" => args.scans = number()? as usize,
            "--seed" => args.seed = number()?,
            "--dir" => args.dir = Some(PathBuf::from(&value)),
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if args.n == 0 {
        return Err("--n must be at least 1".to_owned());
    }
    Ok(args)
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
            eprintln!("kv_perf: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One row of the results table.
struct Row {
    name: String,
    ops: usize,
    elapsed: Duration,
    note: String,
}

impl Row {
    fn new(name: impl Into<String>, ops: usize, elapsed: Duration, note: impl Into<String>) -> Self {
        let row = Self { name: name.into(), ops, elapsed, note: note.into() };
        eprintln!("  {:<48} {:>10.0} ops/s", row.name, row.rate());
        row
    }

    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    let _temp;
    let root = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            _temp = tempfile::Builder::new().prefix("kv_perf").tempdir()?;
            _temp.path().to_path_buf()
        }
    };
    let n = args.n;
    eprintln!("kv_perf: {n} keys in {}", root.display());
    let mut data = DataGen::new(args.seed, KEY_LEN, VALUE_LEN);
    let keys = data.keys(n);
    let values: Vec<Vec<u8>> = (0..VALUE_POOL).map(|_| data.value()).collect();
    let value = |i: usize| &values[i % VALUE_POOL];
    let mut rows = Vec::new();

    // (a) Random puts, not synced: one put per commit, then 1000 per batch.
    let db = open_fresh(&root.join("puts-single"), Durability::None)?;
    let start = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        db.put(key, value(i))?;
    }
    rows.push(Row::new("random put, 1 per commit (Durability::None)", n, start.elapsed(), ""));
    db.close()?;
    std::fs::remove_dir_all(root.join("puts-single"))?;

    let db = open_fresh(&root.join("kv"), Durability::None)?;
    let start = Instant::now();
    for (chunk_no, chunk) in keys.chunks(BATCH).enumerate() {
        let mut batch = WriteBatch::new();
        for (i, key) in chunk.iter().enumerate() {
            batch.put(key, value(chunk_no * BATCH + i));
        }
        db.write(batch)?;
    }
    let loaded = db.stats();
    rows.push(Row::new(
        "random put, 1000-key batches (Durability::None)",
        n,
        start.elapsed(),
        format!("after load: {}; write amp {:.2}", shape(&loaded), loaded.write_amplification()),
    ));

    // (b) Random gets of existing keys, as loaded, then after flush + full compaction.
    let mut picks = DataGen::new(args.seed ^ 0x9e37_79b9, KEY_LEN, VALUE_LEN);
    let elapsed = random_gets(&db, &keys, args.lookups, &mut picks)?;
    rows.push(Row::new("random get, as loaded (before compaction)", args.lookups, elapsed, shape(&db.stats())));

    let start = Instant::now();
    db.flush()?;
    db.compact()?;
    let elapsed = start.elapsed();
    let compacted = db.stats();
    rows.push(Row::new(
        "flush + full compaction (keys/s)",
        n,
        elapsed,
        format!("{:.2} s; {}", elapsed.as_secs_f64(), shape(&compacted)),
    ));

    let before = db.stats();
    let elapsed = random_gets(&db, &keys, args.lookups, &mut picks)?;
    let after = db.stats();
    let (hits, misses) = (after.cache_hits - before.cache_hits, after.cache_misses - before.cache_misses);
    let hit_rate = 100.0 * hits as f64 / (hits + misses).max(1) as f64;
    rows.push(Row::new(
        "random get, after compaction",
        args.lookups,
        elapsed,
        format!("{}; block cache {hit_rate:.0}% hits", shape(&after)),
    ));

    // (c) Short range scans from random existing keys.
    let start = Instant::now();
    let mut items = 0;
    for _ in 0..args.scans {
        let from = &keys[picks.index(n)];
        for pair in db.range(from.as_slice()..)?.take(SCAN_LEN) {
            pair?;
            items += 1;
        }
    }
    let elapsed = start.elapsed();
    rows.push(Row::new("range scan, 10 items from a random key", args.scans, elapsed, format!("{items} items read")));
    db.close()?;

    // (d) Durable commits: each put is synced before it returns; concurrent committers share syncs.
    let db = open_fresh(&root.join("durable"), Durability::Immediate)?;
    let mut gen = DataGen::new(args.seed ^ 0xd00d, KEY_LEN, VALUE_LEN);
    let durable_keys = gen.keys(DURABLE_SINGLE + DURABLE_THREADS * DURABLE_PER_THREAD);
    let (single, concurrent) = durable_keys.split_at(DURABLE_SINGLE);
    let syncs0 = db.stats().wal_syncs;
    let start = Instant::now();
    for (i, key) in single.iter().enumerate() {
        db.put(key, value(i))?;
    }
    let elapsed = start.elapsed();
    let syncs1 = db.stats().wal_syncs;
    rows.push(Row::new(
        "durable put, 1 thread (Durability::Immediate)",
        DURABLE_SINGLE,
        elapsed,
        format!("{} syncs; {:.0} µs per commit", syncs1 - syncs0, elapsed.as_micros() as f64 / DURABLE_SINGLE as f64),
    ));

    let start = Instant::now();
    thread::scope(|s| -> Result<(), Failure> {
        let workers: Vec<_> = concurrent
            .chunks(DURABLE_PER_THREAD)
            .map(|chunk| {
                let db = db.clone();
                s.spawn(move || -> Result<(), cairn_engine::WriteError> {
                    for (i, key) in chunk.iter().enumerate() {
                        db.put(key, value(i))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "a committer thread panicked")??;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    let syncs2 = db.stats().wal_syncs;
    let commits = DURABLE_THREADS * DURABLE_PER_THREAD;
    rows.push(Row::new(
        "durable put, 8 threads (Durability::Immediate)",
        commits,
        elapsed,
        format!("{} syncs; {:.1} commits per sync", syncs2 - syncs1, commits as f64 / (syncs2 - syncs1).max(1) as f64),
    ));
    db.close()?;

    print_report(args, &root, &rows);
    Ok(())
}

/// Opens an empty database at `dir`, removing whatever was there.
fn open_fresh(dir: &Path, durability: Durability) -> Result<Db, Failure> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(Db::builder().durability(durability).open(dir)?)
}

fn random_gets(db: &Db, keys: &[Vec<u8>], lookups: usize, picks: &mut DataGen) -> Result<Duration, Failure> {
    let order: Vec<usize> = (0..lookups).map(|_| picks.index(keys.len())).collect();
    let start = Instant::now();
    let mut missing = 0;
    for i in order {
        if db.get(&keys[i])?.is_none() {
            missing += 1;
        }
    }
    let elapsed = start.elapsed();
    if missing > 0 {
        return Err(format!("{missing} of {lookups} existing keys were not found").into());
    }
    Ok(elapsed)
}

/// Tables per level and the memtable, e.g. `L0: 3, L1: 2 tables (180 MiB); memtable 12 MiB`.
fn shape(s: &cairn_engine::Stats) -> String {
    let levels: Vec<String> =
        s.levels.iter().enumerate().filter(|(_, l)| l.tables > 0).map(|(i, l)| format!("L{i}: {}", l.tables)).collect();
    let levels = if levels.is_empty() { "no".to_owned() } else { levels.join(", ") };
    format!("{levels} tables ({} MiB); memtable {} MiB", s.table_bytes() >> 20, s.memtable_bytes >> 20)
}

fn print_report(args: &Args, root: &Path, rows: &[Row]) {
    println!("## kv_perf");
    println!();
    println!("- date: {}", utc_now());
    println!(
        "- machine: {} CPUs ({}), {} memory",
        thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model().unwrap_or_else(|| "unknown CPU".to_owned()),
        meminfo_total().unwrap_or_else(|| "unknown".to_owned())
    );
    println!("- data: {} ({})", root.display(), filesystem(root).unwrap_or_else(|| "unknown file system".to_owned()));
    println!(
        "- workload: {} keys of {KEY_LEN} random bytes, values of {VALUE_LEN} random bytes, seed {:#x}; {} lookups, {} scans",
        args.n, args.seed, args.lookups, args.scans
    );
    println!();
    println!("| benchmark | ops | time (s) | ops/s | notes |");
    println!("|---|---:|---:|---:|---|");
    for r in rows {
        println!("| {} | {} | {:.3} | {:.0} | {} |", r.name, r.ops, r.elapsed.as_secs_f64(), r.rate(), r.note);
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

fn meminfo_total() -> Option<String> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)))
}

/// The type of the file system holding `path`: the longest mount point that contains it.
fn filesystem(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, fstype) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount).then(|| (mount.len(), fstype.to_owned()))
        })
        .max()
        .map(|(_, fstype)| fstype)
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}
