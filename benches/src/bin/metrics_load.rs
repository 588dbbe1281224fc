//! `metrics_load`: Cairn's metrics store (`cairn_store::metrics`) beside SQLite and PostgreSQL with MLflow's
//! columns, printed as a markdown table.
//!
//! ```text
//! cargo run --release -p cairn-bench --bin metrics_load -- [--runs 100] [--metrics 10] [--steps 10000]
//!     [--batch 1000] [--threads 8] [--systems cairn,sqlite,postgres] [--postgres URL] [--dir DIR]
//! ```
//!
//! 1. **log**: `--runs` runs x `--metrics` metrics x `--steps` steps, in durable batches of `--batch`
//!    points (`--batch / --metrics` steps of every metric of one run), from `--threads` threads, each
//!    logging its share of the runs. Cairn: `Metrics::log` (`Durability::Immediate`, one commit per batch).
//!    SQLite: one transaction per batch on a connection per thread, WAL, `synchronous=FULL`. PostgreSQL
//!    (15, `fsync` and `synchronous_commit` on: `CAIRN_PG_FSYNC=1 scripts/postgres-for-tests.sh`): one
//!    `COPY ... FROM STDIN (FORMAT binary)` per batch (its own transaction) on a connection per thread, over
//!    loopback. Both SQL systems have table `metrics(run_uuid, key, value, timestamp, step)` with an index
//!    on `(run_uuid, key, step)`. Then bytes on disk per point (Cairn: its directory after a flush and full
//!    compaction; SQLite: its files after a WAL checkpoint; PostgreSQL: `pg_total_relation_size`, table
//!    and index, its WAL not counted).
//! 2. **history**: a 100,000-point series read whole (Cairn: one page; SQL: `ORDER BY step`).
//! 3. **downsample**: a 1,000,000-point series in 1,000 buckets of count, min, max, mean (SQL: `GROUP BY`
//!    bucket).
//! 4. **latest**: the latest value of every metric of 1,000 runs of 10 metrics (Cairn: `Metrics::latest`
//!    per run; SQLite: `MAX(step)` per key with SQLite's bare-column rule; PostgreSQL: `DISTINCT ON (key)`).
//!
//! Values follow a noisy decaying loss, as `f32` values (what most frameworks report) widened to `f64`;
//! timestamps advance about 100 ms a step with jitter. Every system logs the same batches, made by the same
//! generator inside the timed loop. Each system runs every workload before the next system starts. Reads
//! are timed as the median of 5. `--systems` defaults to cairn and sqlite, and postgres too when
//! `CAIRN_TEST_POSTGRES` is set.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cairn_store::metrics::{DownsampleRequest, HistoryRequest, MetricPoint, Metrics};
use cairn_store::Store;
use futures_util::pin_mut;
use rusqlite::{params, Connection};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

type Failure = Box<dyn std::error::Error + Send + Sync>;

const SQL_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS metrics(run_uuid TEXT NOT NULL, key TEXT NOT NULL, \
     value REAL NOT NULL, timestamp BIGINT NOT NULL, step BIGINT NOT NULL);
     CREATE INDEX IF NOT EXISTS metrics_run_key_step ON metrics(run_uuid, key, step);";

struct Args {
    runs: usize,
    metrics: usize,
    steps: usize,
    batch: usize,
    threads: usize,
    systems: Vec<String>,
    postgres: Option<String>,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, Failure> {
    let mut a = Args {
        runs: 100,
        metrics: 10,
        steps: 10_000,
        batch: 1000,
        threads: 8,
        systems: vec!["cairn".into(), "sqlite".into()],
        postgres: std::env::var("CAIRN_TEST_POSTGRES").ok(),
        dir: None,
    };
    let mut systems_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => a.runs = v.parse()?,
            "--metrics" => a.metrics = v.parse()?,
            "--steps" => a.steps = v.parse()?,
            "--batch" => a.batch = v.parse()?,
            "--threads" => a.threads = v.parse()?,
            "--systems" => {
                systems_given = true;
                a.systems = v.split(',').map(str::to_owned).collect();
            }
            "--postgres" => a.postgres = Some(v),
            "--dir" => a.dir = Some(PathBuf::from(v)),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.metrics == 0 || a.batch < a.metrics || a.threads == 0 || a.runs == 0 || a.steps == 0 {
        return Err("--metrics, --runs, --steps and --threads must be positive, --batch at least --metrics".into());
    }
    if !systems_given && a.postgres.is_some() {
        a.systems.push("postgres".into());
    }
    if let Some(s) = a.systems.iter().find(|s| !["cairn", "sqlite", "postgres"].contains(&s.as_str())) {
        return Err(format!("unknown system {s} (cairn, sqlite, postgres)").into());
    }
    if a.systems.iter().any(|s| s == "postgres") && a.postgres.is_none() {
        return Err("postgres needs --postgres URL (or CAIRN_TEST_POSTGRES)".into());
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

/// The metric keys `metric_0`, `metric_1`, ...
fn keys(metrics: usize) -> Vec<String> {
    (0..metrics).map(|m| format!("metric_{m}")).collect()
}

fn run_id(run: usize) -> String {
    format!("run-{run:05}")
}

/// The batches of one run: `steps_per` steps of every metric each.
fn batches(run: usize, keys: &[String], steps: usize, steps_per: usize) -> impl Iterator<Item = Vec<MetricPoint>> + '_ {
    (0..steps).step_by(steps_per).map(move |from| {
        (from..(from + steps_per).min(steps))
            .flat_map(|s| {
                keys.iter().enumerate().map(move |(m, key)| {
                    let (ts, v) = sample(run, m, s);
                    MetricPoint { key: key.clone(), step: s as i64, timestamp_ms: ts, value: v }
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

/// A mutex that ignores poisoning (a panicking thread ends the run anyway).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A SQL peer: a connection per logging thread, one for reads.
trait Sql: Sync {
    /// Logs `batch` of `run` in one transaction on logging thread `thread`'s connection.
    fn log(&self, thread: usize, run: &str, batch: &[MetricPoint]) -> Result<(), Failure>;
    /// Bytes the data takes on disk, once logging is over.
    fn disk_bytes(&mut self) -> Result<u64, Failure>;
    /// The history of one series: rows read.
    fn history(&mut self, run: &str, key: &str) -> Result<usize, Failure>;
    /// One series in buckets of 1,000 steps: buckets read.
    fn downsample(&mut self, run: &str, key: &str) -> Result<usize, Failure>;
    /// The latest value of every metric of `run`: metrics read.
    fn latest(&mut self, run: &str) -> Result<usize, Failure>;
    /// Called once the read workloads' series are loaded.
    fn loaded(&mut self) -> Result<(), Failure> {
        Ok(())
    }
}

struct Sqlite {
    path: PathBuf,
    writers: Vec<Mutex<Connection>>,
    reader: Mutex<Connection>,
}

impl Sqlite {
    fn open(path: &Path, threads: usize) -> Result<Self, Failure> {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let writers = (0..threads).map(|_| Self::connect(path).map(Mutex::new)).collect::<Result<_, _>>()?;
        Ok(Self { path: path.to_owned(), writers, reader: Mutex::new(Self::connect(path)?) })
    }

    fn connect(path: &Path) -> Result<Connection, Failure> {
        let c = Connection::open(path)?;
        c.busy_timeout(Duration::from_secs(600))?;
        c.execute_batch(&format!("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; {SQL_SCHEMA}"))?;
        Ok(c)
    }

    fn insert(c: &mut Connection, run: &str, batch: &[MetricPoint]) -> Result<(), Failure> {
        let tx = c.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO metrics(run_uuid, key, value, timestamp, step) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for p in batch {
                st.execute(params![run, p.key, p.value, p.timestamp_ms, p.step])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl Sql for Sqlite {
    fn log(&self, thread: usize, run: &str, batch: &[MetricPoint]) -> Result<(), Failure> {
        let conn = self.writers.get(thread).ok_or("no connection for this thread")?;
        Self::insert(&mut lock(conn), run, batch)
    }

    fn disk_bytes(&mut self) -> Result<u64, Failure> {
        lock(&self.reader).execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        let wal = std::fs::metadata(format!("{}-wal", self.path.display())).map_or(0, |m| m.len());
        Ok(std::fs::metadata(&self.path)?.len() + wal)
    }

    fn history(&mut self, run: &str, key: &str) -> Result<usize, Failure> {
        let c = lock(&self.reader);
        let mut st = c.prepare_cached(
            "SELECT step, timestamp, value FROM metrics WHERE run_uuid = ?1 AND key = ?2 ORDER BY step",
        )?;
        let rows: Vec<(i64, i64, f64)> =
            st.query_map(params![run, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
        Ok(rows.len())
    }

    fn downsample(&mut self, run: &str, key: &str) -> Result<usize, Failure> {
        let c = lock(&self.reader);
        let mut st = c.prepare_cached(
            "SELECT step / 1000 AS b, count(*), min(value), max(value), avg(value) FROM metrics
             WHERE run_uuid = ?1 AND key = ?2 GROUP BY b",
        )?;
        let rows: Vec<i64> = st.query_map(params![run, key], |r| r.get(1))?.collect::<Result<_, _>>()?;
        Ok(rows.len())
    }

    fn latest(&mut self, run: &str) -> Result<usize, Failure> {
        let c = lock(&self.reader);
        let mut st =
            c.prepare_cached("SELECT key, MAX(step), timestamp, value FROM metrics WHERE run_uuid = ?1 GROUP BY key")?;
        let rows: Vec<f64> = st.query_map(params![run], |r| r.get(3))?.collect::<Result<_, _>>()?;
        Ok(rows.len())
    }
}

/// A connection to PostgreSQL with its own single-threaded runtime.
struct PgConn {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl PgConn {
    fn connect(url: &str) -> Result<Self, Failure> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (client, connection) = rt.block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))?;
        rt.spawn(connection);
        rt.block_on(client.batch_execute("SET synchronous_commit = on"))?;
        Ok(Self { rt, client })
    }
}

struct Postgres {
    writers: Vec<Mutex<PgConn>>,
    reader: PgConn,
}

impl Postgres {
    fn open(url: &str, threads: usize) -> Result<Self, Failure> {
        let reader = PgConn::connect(url)?;
        let schema = SQL_SCHEMA.replace("REAL", "DOUBLE PRECISION");
        reader.rt.block_on(reader.client.batch_execute(&format!("DROP TABLE IF EXISTS metrics; {schema}")))?;
        let writers = (0..threads).map(|_| PgConn::connect(url).map(Mutex::new)).collect::<Result<_, _>>()?;
        Ok(Self { writers, reader })
    }

    fn insert(c: &PgConn, run: &str, batch: &[MetricPoint]) -> Result<(), Failure> {
        c.rt.block_on(async {
            let sink = c
                .client
                .copy_in("COPY metrics (run_uuid, key, value, timestamp, step) FROM STDIN (FORMAT binary)")
                .await?;
            let writer = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::TEXT, Type::FLOAT8, Type::INT8, Type::INT8]);
            pin_mut!(writer);
            for p in batch {
                let row: [&(dyn ToSql + Sync); 5] = [&run, &p.key, &p.value, &p.timestamp_ms, &p.step];
                writer.as_mut().write(&row).await?;
            }
            writer.finish().await?;
            Ok(())
        })
    }

    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>, Failure> {
        Ok(self.reader.rt.block_on(self.reader.client.query(sql, params))?)
    }
}

impl Sql for Postgres {
    fn log(&self, thread: usize, run: &str, batch: &[MetricPoint]) -> Result<(), Failure> {
        let conn = self.writers.get(thread).ok_or("no connection for this thread")?;
        Self::insert(&lock(conn), run, batch)
    }

    fn disk_bytes(&mut self) -> Result<u64, Failure> {
        let rows = self.query("SELECT pg_total_relation_size('metrics')", &[])?;
        let bytes: i64 = rows.first().ok_or("no size")?.get(0);
        Ok(u64::try_from(bytes)?)
    }

    fn history(&mut self, run: &str, key: &str) -> Result<usize, Failure> {
        let rows = self.query(
            "SELECT step, timestamp, value FROM metrics WHERE run_uuid = $1 AND key = $2 ORDER BY step",
            &[&run, &key],
        )?;
        let points: Vec<(i64, i64, f64)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        Ok(points.len())
    }

    fn downsample(&mut self, run: &str, key: &str) -> Result<usize, Failure> {
        let rows = self.query(
            "SELECT step / 1000 AS b, count(*), min(value), max(value), avg(value) FROM metrics
             WHERE run_uuid = $1 AND key = $2 GROUP BY b",
            &[&run, &key],
        )?;
        let counts: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
        Ok(counts.len())
    }

    fn latest(&mut self, run: &str) -> Result<usize, Failure> {
        let rows = self.query(
            "SELECT DISTINCT ON (key) key, step, timestamp, value FROM metrics WHERE run_uuid = $1
             ORDER BY key, step DESC",
            &[&run],
        )?;
        let values: Vec<f64> = rows.iter().map(|r| r.get(3)).collect();
        Ok(values.len())
    }

    fn loaded(&mut self) -> Result<(), Failure> {
        self.reader.rt.block_on(self.reader.client.batch_execute("ANALYZE metrics"))?;
        Ok(())
    }
}

/// Logs every run from `threads` threads; returns the elapsed time.
fn log_all<F>(a: &Args, keys: &[String], log: F) -> Result<Duration, Failure>
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
                        for b in batches(run, keys, a.steps, steps_per) {
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

/// The `n` points of one metric loaded for the read workloads, in batches of 100,000.
fn series(n: usize) -> impl Iterator<Item = Vec<MetricPoint>> {
    (0..n).step_by(100_000).map(move |from| {
        (from..(from + 100_000).min(n))
            .map(|s| {
                let (ts, v) = sample(7, 0, s);
                MetricPoint::new("loss", s as i64, ts, v)
            })
            .collect()
    })
}

/// Loads the read workloads' data into `m` or `sql`, untimed: the `hist` and `big` series and 1,000 runs of
/// 10 metrics of 20 steps.
fn load_reads(m: Option<&Metrics>, sql: Option<&dyn Sql>, ids: &[String]) -> Result<(), Failure> {
    let log = |run: &str, b: &[MetricPoint]| -> Result<(), Failure> {
        if let Some(m) = m {
            m.log(run, b)?;
        }
        if let Some(sql) = sql {
            sql.log(0, run, b)?;
        }
        Ok(())
    };
    for b in series(100_000) {
        log("hist", &b)?;
    }
    for b in series(1_000_000) {
        log("big", &b)?;
    }
    let ten = keys(10);
    for (r, id) in ids.iter().enumerate() {
        let batch: Vec<MetricPoint> = batches(r, &ten, 20, 20).flatten().collect();
        log(id, &batch)?;
    }
    Ok(())
}

/// One workload's figures: Cairn, then each SQL peer (`None` if not run); `higher_is_better` for rates.
struct Row {
    name: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    cairn: Option<f64>,
    sqlite: Option<f64>,
    postgres: Option<f64>,
}

impl Row {
    fn print(&self) {
        let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} {}", self.unit));
        let ratio = |peer: Option<f64>| match (self.cairn, peer) {
            (Some(c), Some(p)) if self.higher_is_better => format!("{:.1}x", c / p),
            (Some(c), Some(p)) => format!("{:.1}x", p / c),
            _ => "-".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            self.name,
            cell(self.cairn),
            cell(self.sqlite),
            cell(self.postgres),
            ratio(self.sqlite),
            ratio(self.postgres)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
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

/// Figures of one system, in the order of the rows.
type Figures = [f64; 5];

fn run_cairn(a: &Args, base: &Path, keys: &[String], ids: &[String], points: f64) -> Result<Figures, Failure> {
    let dir = base.join("cairn");
    let _ = std::fs::remove_dir_all(&dir);
    let metrics = Metrics::new(Store::open(&dir)?);
    let log = log_all(a, keys, |_, run, b| metrics.log(run, b).map(|_| ()).map_err(Into::into))?;
    let s = metrics.store().db().stats();
    eprintln!(
        "cairn logging: {} commits in {} write groups, {} WAL syncs, {:.1} MB of WAL ({:.1} bytes a point)",
        s.commits,
        s.write_groups,
        s.wal_syncs,
        s.wal_bytes_written as f64 / 1e6,
        s.wal_bytes_written as f64 / points
    );
    metrics.store().db().flush()?;
    metrics.store().db().compact()?;
    let bytes = dir_size(&dir) as f64;
    load_reads(Some(&metrics), None, ids)?;
    metrics.store().db().flush()?;
    let hist = median(|| {
        let page = metrics.history(&HistoryRequest::new("hist", "loss").limit(100_000))?;
        assert_eq!(page.points.len(), 100_000);
        Ok(())
    })?;
    let ds = median(|| {
        let b = metrics.downsample(&DownsampleRequest::new("big", "loss", 1000))?;
        assert_eq!(b.len(), 1000);
        Ok(())
    })?;
    let latest = median(|| {
        for id in ids {
            assert_eq!(metrics.latest(id)?.len(), 10);
        }
        Ok(())
    })?;
    Ok([points / log.as_secs_f64(), bytes / points, ms(hist), ms(ds), ms(latest)])
}

fn run_sql(a: &Args, sql: &mut dyn Sql, keys: &[String], ids: &[String], points: f64) -> Result<Figures, Failure> {
    let log = {
        let shared: &dyn Sql = sql;
        log_all(a, keys, |t, run, b| shared.log(t, run, b))?
    };
    let bytes = sql.disk_bytes()? as f64;
    load_reads(None, Some(sql), ids)?;
    sql.loaded()?;
    let hist = median(|| {
        assert_eq!(sql.history("hist", "loss")?, 100_000);
        Ok(())
    })?;
    let ds = median(|| {
        assert_eq!(sql.downsample("big", "loss")?, 1000);
        Ok(())
    })?;
    let latest = median(|| {
        for id in ids {
            assert_eq!(sql.latest(id)?, 10);
        }
        Ok(())
    })?;
    Ok([points / log.as_secs_f64(), bytes / points, ms(hist), ms(ds), ms(latest)])
}

fn run() -> Result<(), Failure> {
    let a = parse_args()?;
    let tmp = tempfile::tempdir()?;
    let base = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&base)?;
    let keys = keys(a.metrics);
    let ids: Vec<String> = (0..1000).map(|r| format!("latest-{r:04}")).collect();
    let points = (a.runs * a.metrics * a.steps) as f64;
    println!(
        "{} runs x {} metrics x {} steps = {points} points, durable batches of {} points, {} threads\n",
        a.runs, a.metrics, a.steps, a.batch, a.threads
    );
    let has = |s: &str| a.systems.iter().any(|x| x == s);
    let cairn = if has("cairn") { Some(run_cairn(&a, &base, &keys, &ids, points)?) } else { None };
    let sqlite = if has("sqlite") {
        let mut db = Sqlite::open(&base.join("mlflow.sqlite"), a.threads)?;
        Some(run_sql(&a, &mut db, &keys, &ids, points)?)
    } else {
        None
    };
    let postgres = match (&a.postgres, has("postgres")) {
        (Some(url), true) => {
            let mut db = Postgres::open(url, a.threads)?;
            Some(run_sql(&a, &mut db, &keys, &ids, points)?)
        }
        _ => None,
    };
    println!("| workload | Cairn | SQLite | PostgreSQL | Cairn / SQLite | Cairn / PostgreSQL |");
    println!("|---|---|---|---|---|---|");
    let rows = [
        ("log (points/s)", "pts/s", true),
        ("disk (bytes/point)", "B", false),
        ("history of 100,000 points (ms)", "ms", false),
        ("1,000,000 points in 1,000 buckets (ms)", "ms", false),
        ("latest values of 1,000 runs (ms)", "ms", false),
    ];
    for (i, (name, unit, higher_is_better)) in rows.into_iter().enumerate() {
        let pick = |f: &Option<Figures>| f.as_ref().and_then(|f| f.get(i).copied());
        Row { name, unit, higher_is_better, cairn: pick(&cairn), sqlite: pick(&sqlite), postgres: pick(&postgres) }
            .print();
    }
    Ok(())
}
