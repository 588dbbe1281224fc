//! `metrics_load`: Cairn's metrics store (`cairn_store::metrics`) beside SQLite with MLflow's schema,
//! printed as a markdown table.
//!
//! ```text
//! cargo run --release -p cairn-bench --bin metrics_load -- [--runs 100] [--metrics 10] [--steps 10000]
//!     [--batch 1000] [--threads 8] [--dir DIR]
//! ```
//!
//! 1. **log**: `--runs` runs x `--metrics` metrics x `--steps` steps, in durable batches of `--batch`
//!    points (`--batch / --metrics` steps of every metric of one run), from `--threads` threads, each
//!    logging its share of the runs. Cairn: `Metrics::log` (`Durability::Immediate`, one commit per batch).
//!    SQLite: one transaction per batch on a connection per thread, WAL, `synchronous=FULL`, table
//!    `metrics(run_uuid, key, value, timestamp, step)` with an index on `(run_uuid, key, step)`.
//!    Then bytes on disk per point (Cairn after a flush and full compaction; SQLite after a WAL checkpoint).
//! 2. **history**: a 100,000-point series read whole (Cairn: one page; SQLite: `ORDER BY step`).
//! 3. **downsample**: a 1,000,000-point series in 1,000 buckets of count, min, max, mean (SQLite: `GROUP BY`
//!    bucket).
//! 4. **latest**: the latest value of every metric of 1,000 runs of 10 metrics (Cairn: `Metrics::latest`
//!    per run; SQLite: `MAX(step)` per key with SQLite's bare-column rule).
//!
//! Values follow a noisy decaying loss, as `f32` values (what most frameworks report) widened to `f64`;
//! timestamps advance about 100 ms a step with jitter. Reads are timed as the median of 5.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cairn_store::metrics::{DownsampleRequest, HistoryRequest, MetricPoint, Metrics};
use cairn_store::Store;
use rusqlite::{params, Connection};

type Failure = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    runs: usize,
    metrics: usize,
    steps: usize,
    batch: usize,
    threads: usize,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, Failure> {
    let mut a = Args { runs: 100, metrics: 10, steps: 10_000, batch: 1000, threads: 8, dir: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => a.runs = v.parse()?,
            "--metrics" => a.metrics = v.parse()?,
            "--steps" => a.steps = v.parse()?,
            "--batch" => a.batch = v.parse()?,
            "--threads" => a.threads = v.parse()?,
            "--dir" => a.dir = Some(PathBuf::from(v)),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.metrics == 0 || a.batch < a.metrics || a.threads == 0 || a.runs == 0 || a.steps == 0 {
        return Err("--metrics, --runs, --steps and --threads must be positive, --batch at least --metrics".into());
    }
    Ok(a)
}

/// A noisy decaying loss as an `f32` widened to `f64`, and a jittered timestamp, for (run, metric, step).
fn sample(run: usize, metric: usize, step: usize) -> (i64, f64) {
    let h = (run as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((metric as u64) << 32) ^ (step as u64);
    let h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let noise = (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
    let value = 2.0f32 / (1.0 + step as f32 / 500.0) + 0.01 * noise + metric as f32;
    let ts = 1_767_225_600_000 + step as i64 * 100 + (h >> 60) as i64;
    (ts, f64::from(value))
}

fn key(metric: usize) -> String {
    format!("metric_{metric}")
}

fn run_id(run: usize) -> String {
    format!("run-{run:05}")
}

/// The batches of one run: `steps_per` steps of every metric each.
fn batches(run: usize, metrics: usize, steps: usize, steps_per: usize) -> impl Iterator<Item = Vec<MetricPoint>> {
    (0..steps).step_by(steps_per).map(move |from| {
        (from..(from + steps_per).min(steps))
            .flat_map(|s| {
                (0..metrics).map(move |m| {
                    let (ts, v) = sample(run, m, s);
                    MetricPoint::new(key(m), s as i64, ts, v)
                })
            })
            .collect()
    })
}

fn dir_size(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn open_sqlite(path: &Path) -> Result<Connection, Failure> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(600))?;
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS metrics(run_uuid TEXT NOT NULL, key TEXT NOT NULL, value REAL NOT NULL,
             timestamp INTEGER NOT NULL, step INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS metrics_run_key_step ON metrics(run_uuid, key, step);",
    )?;
    Ok(c)
}

fn sqlite_log(c: &mut Connection, run: &str, batch: &[MetricPoint]) -> Result<(), Failure> {
    let tx = c.transaction()?;
    {
        let mut st = tx
            .prepare_cached("INSERT INTO metrics(run_uuid, key, value, timestamp, step) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for p in batch {
            st.execute(params![run, p.key, p.value, p.timestamp_ms, p.step])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Logs every run from `threads` threads; returns the elapsed time.
fn log_all<F>(a: &Args, log: F) -> Result<Duration, Failure>
where
    F: Fn(usize, &str, &[MetricPoint]) -> Result<(), Failure> + Send + Sync,
{
    let steps_per = (a.batch / a.metrics).max(1);
    let start = Instant::now();
    let log = &log;
    std::thread::scope(|s| -> Result<(), Failure> {
        let handles: Vec<_> = (0..a.threads)
            .map(|t| {
                s.spawn(move || -> Result<(), Failure> {
                    for run in (t..a.runs).step_by(a.threads) {
                        let id = run_id(run);
                        for b in batches(run, a.metrics, a.steps, steps_per) {
                            log(t, &id, &b)?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a logging thread panicked")??;
        }
        Ok(())
    })?;
    Ok(start.elapsed())
}

fn median(mut f: impl FnMut() -> Result<(), Failure>) -> Result<Duration, Failure> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[2])
}

/// Loads `n` points of one metric into both stores, untimed, in batches of 100,000.
fn load_series(m: &Metrics, c: &mut Connection, run: &str, n: usize) -> Result<(), Failure> {
    for from in (0..n).step_by(100_000) {
        let batch: Vec<MetricPoint> = (from..(from + 100_000).min(n))
            .map(|s| {
                let (ts, v) = sample(7, 0, s);
                MetricPoint::new("loss", s as i64, ts, v)
            })
            .collect();
        m.log(run, &batch)?;
        sqlite_log(c, run, &batch)?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(name: &str, cairn: f64, sqlite: f64, unit: &str, higher_is_better: bool) {
    let ratio = if higher_is_better { cairn / sqlite } else { sqlite / cairn };
    println!("| {name} | {cairn:.2} {unit} | {sqlite:.2} {unit} | {ratio:.1}x |");
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metrics_load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Failure> {
    let a = parse_args()?;
    let tmp = tempfile::tempdir()?;
    let base = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let (cairn_dir, sqlite_path) = (base.join("cairn"), base.join("mlflow.sqlite"));
    let _ = std::fs::remove_dir_all(&cairn_dir);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", sqlite_path.display()));
    }
    let metrics = Metrics::new(Store::open(&cairn_dir)?);
    let points = (a.runs * a.metrics * a.steps) as f64;
    println!(
        "{} runs x {} metrics x {} steps = {points} points, durable batches of {} points, {} threads\n",
        a.runs, a.metrics, a.steps, a.batch, a.threads
    );
    println!("| workload | Cairn | SQLite (MLflow schema) | Cairn / SQLite |");
    println!("|---|---|---|---|");

    // 1. Logging.
    let cairn_log = log_all(&a, |_, run, b| metrics.log(run, b).map(|_| ()).map_err(Into::into))?;
    let conns: Vec<parking_mutex::M<Connection>> =
        (0..a.threads).map(|_| open_sqlite(&sqlite_path).map(parking_mutex::M::new)).collect::<Result<_, _>>()?;
    let sqlite_log_time = log_all(&a, |t, run, b| sqlite_log(&mut conns[t].lock(), run, b))?;
    row("log (points/s)", points / cairn_log.as_secs_f64(), points / sqlite_log_time.as_secs_f64(), "pts/s", true);
    metrics.store().db().flush()?;
    metrics.store().db().compact()?;
    drop(conns);
    let mut c = open_sqlite(&sqlite_path)?;
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    let cairn_bytes = dir_size(&cairn_dir) as f64;
    let sqlite_bytes = std::fs::metadata(&sqlite_path)?.len() as f64
        + std::fs::metadata(format!("{}-wal", sqlite_path.display())).map_or(0, |m| m.len()) as f64;
    row("disk (bytes/point)", cairn_bytes / points, sqlite_bytes / points, "B", false);

    // 2. A 100,000-point history.
    load_series(&metrics, &mut c, "hist", 100_000)?;
    let cairn_hist = median(|| {
        let page = metrics.history(&HistoryRequest::new("hist", "loss").limit(100_000))?;
        assert_eq!(page.points.len(), 100_000);
        Ok(())
    })?;
    let sqlite_hist = median(|| {
        let mut st = c.prepare_cached(
            "SELECT step, timestamp, value FROM metrics WHERE run_uuid = ?1 AND key = ?2 ORDER BY step",
        )?;
        let rows: Vec<(i64, i64, f64)> = st
            .query_map(params!["hist", "loss"], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        assert_eq!(rows.len(), 100_000);
        Ok(())
    })?;
    row("history of 100,000 points (ms)", ms(cairn_hist), ms(sqlite_hist), "ms", false);

    // 3. A 1,000,000-point series in 1,000 buckets.
    load_series(&metrics, &mut c, "big", 1_000_000)?;
    metrics.store().db().flush()?;
    let cairn_ds = median(|| {
        let b = metrics.downsample(&DownsampleRequest::new("big", "loss", 1000))?;
        assert_eq!(b.len(), 1000);
        Ok(())
    })?;
    let sqlite_ds = median(|| {
        let mut st = c.prepare_cached(
            "SELECT step / 1000 AS b, count(*), min(value), max(value), avg(value) FROM metrics
             WHERE run_uuid = ?1 AND key = ?2 GROUP BY b",
        )?;
        let rows: Vec<i64> = st.query_map(params!["big", "loss"], |r| r.get(1))?.collect::<Result<_, _>>()?;
        assert_eq!(rows.len(), 1000);
        Ok(())
    })?;
    row("1,000,000 points in 1,000 buckets (ms)", ms(cairn_ds), ms(sqlite_ds), "ms", false);

    // 4. Latest values of 1,000 runs of 10 metrics.
    let ids: Vec<String> = (0..1000).map(|r| format!("latest-{r:04}")).collect();
    for (r, id) in ids.iter().enumerate() {
        let batch: Vec<MetricPoint> = batches(r, 10, 20, 20).flatten().collect();
        metrics.log(id, &batch)?;
        sqlite_log(&mut c, id, &batch)?;
    }
    let cairn_latest = median(|| {
        for id in &ids {
            assert_eq!(metrics.latest(id)?.len(), 10);
        }
        Ok(())
    })?;
    let sqlite_latest = median(|| {
        let mut st =
            c.prepare_cached("SELECT key, MAX(step), timestamp, value FROM metrics WHERE run_uuid = ?1 GROUP BY key")?;
        for id in &ids {
            let rows: Vec<f64> = st.query_map(params![id], |r| r.get(3))?.collect::<Result<_, _>>()?;
            assert_eq!(rows.len(), 10);
        }
        Ok(())
    })?;
    row("latest values of 1,000 runs (ms)", ms(cairn_latest), ms(sqlite_latest), "ms", false);
    Ok(())
}

/// A mutex for the SQLite connections, one per logging thread.
mod parking_mutex {
    /// A `std` mutex that ignores poisoning (a panicking thread ends the run anyway).
    pub struct M<T>(std::sync::Mutex<T>);

    impl<T> M<T> {
        pub fn new(v: T) -> Self {
            Self(std::sync::Mutex::new(v))
        }

        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}
