//! `queue_load`: the job queue (`cairn_store::queue`) beside queues on SQLite and PostgreSQL with the same
//! durability, in one run; prints a markdown table.
//!
//! ```text
//! cargo run --release -p cairn-bench --bin queue_load -- [--jobs 20000] [--enqueue 10000]
//!     [--workers 1,4,16] [--batch 1] [--systems cairn,sqlite,postgres] [--postgres URL] [--disk-cycles 0]
//!     [--dir DIR]
//! ```
//!
//! Workloads, each on a fresh database, each run by every system in turn before the next:
//! - `enqueue-1`: `--enqueue` jobs enqueued one commit each from one thread: jobs per second;
//! - `enqueue-100`: the same in batches of 100 jobs per commit;
//! - `cycle-W` for each `--workers` W: `--jobs` jobs loaded first (not timed), then W threads each claim a
//!   job (lease 60 s), complete it, and claim again until none is left: full cycles per second, with the
//!   p50 and p99 of the claim's latency as its caller sees it; with `--batch N`, each claim takes up to N
//!   jobs in one commit and each completion completes them in one commit (`cycle-W-batch-N`);
//! - `--disk-cycles N` (Cairn only, off by default): a backlog of 10,000 jobs kept while N cycles of
//!   enqueue, claim and complete run from 4 threads, completed jobs pruned at once; prints the live keys'
//!   and values' bytes, the directory's bytes after the backlog was loaded and after the run (flushed, and
//!   compactions settled), and the tables' bytes.
//!
//! Durability is the same everywhere: every commit is on disk before it returns. Cairn's default (a synced
//! write-ahead log, concurrent committers sharing one `fdatasync`); SQLite in WAL mode with
//! `synchronous=FULL`, one connection per thread, each claim a `BEGIN IMMEDIATE` transaction; PostgreSQL
//! with `fsync` and `synchronous_commit` on (`scripts/postgres-for-tests.sh` with `CAIRN_PG_FSYNC=1`),
//! each claim one `UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)` statement. The jobs, index
//! and claim order (queue, state, priority, id) are the same in the three.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_store::engine::Db;
use cairn_store::queue::{ClaimRequest, JobQueue, NewJob, QueueOptions};
use cairn_store::{Store, StoreOptions};
use serde_json::json;

type Failure = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str =
    "usage: queue_load [--jobs N] [--enqueue N] [--workers 1,4,16] [--batch N] [--systems cairn,sqlite,postgres] \
[--postgres URL] [--disk-cycles N] [--dir DIR]";
const LEASE_MS: u64 = 60_000;
const QUEUE: &str = "default";

struct Args {
    jobs: u64,
    enqueue: u64,
    workers: Vec<usize>,
    systems: Vec<String>,
    postgres: Option<String>,
    disk_cycles: u64,
    batch: usize,
    dir: Option<PathBuf>,
}

fn number(flag: &str, value: &str) -> Result<u64, String> {
    value.replace('_', "").parse::<u64>().map_err(|e| format!("{flag} {value}: {e}"))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        jobs: 20_000,
        enqueue: 10_000,
        workers: vec![1, 4, 16],
        systems: vec!["cairn".into(), "sqlite".into()],
        postgres: std::env::var("CAIRN_TEST_POSTGRES").ok(),
        disk_cycles: 0,
        batch: 1,
        dir: None,
    };
    let mut systems_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "-h" | "--help" => return Err(USAGE.to_owned()),
            "--jobs" => args.jobs = number(&flag, &value()?)?.max(1),
            "--enqueue" => args.enqueue = number(&flag, &value()?)?.max(100),
            "--disk-cycles" => args.disk_cycles = number(&flag, &value()?)?,
            "--batch" => args.batch = number(&flag, &value()?)?.clamp(1, 1000) as usize,
            "--workers" => {
                args.workers = value()?
                    .split(',')
                    .map(|w| number("--workers", w).map(|n| n.max(1) as usize))
                    .collect::<Result<_, _>>()?;
            }
            "--systems" => {
                systems_given = true;
                args.systems = value()?.split(',').map(str::to_owned).collect();
            }
            "--postgres" => args.postgres = Some(value()?),
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if !systems_given && args.postgres.is_some() {
        args.systems.push("postgres".into());
    }
    if let Some(s) = args.systems.iter().find(|s| !["cairn", "sqlite", "postgres"].contains(&s.as_str())) {
        return Err(format!("unknown system {s} (cairn, sqlite, postgres)"));
    }
    if args.systems.iter().any(|s| s == "postgres") && args.postgres.is_none() {
        return Err("postgres needs --postgres URL (or CAIRN_TEST_POSTGRES)".into());
    }
    Ok(args)
}

/// What one workload measured.
struct Row {
    system: String,
    workload: String,
    per_second: f64,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
}

/// A queue under test: one per system, opened fresh for each workload.
trait System: Send + Sync {
    /// Enqueues `payloads` in one commit.
    fn enqueue(&self, payloads: &[u64]) -> Result<(), Failure>;
    /// A worker's connection.
    fn worker(&self) -> Result<Box<dyn Worker + '_>, Failure>;
    /// What the system counts of its commits and syncs so far, if it does.
    fn sync_stats(&self) -> Option<String> {
        None
    }
}

trait Worker {
    /// Claims up to `n` jobs in one commit: their ids and tokens.
    fn claim(&mut self, n: usize) -> Result<Vec<(u64, u64)>, Failure>;
    /// Completes claimed jobs in one commit.
    fn complete(&mut self, jobs: &[(u64, u64)]) -> Result<(), Failure>;
}

struct Cairn(JobQueue);

impl Cairn {
    fn open(dir: &Path, opts: QueueOptions) -> Result<Self, Failure> {
        let store = Store::with_db(Store::engine_options().open(dir)?, StoreOptions::default())?;
        Ok(Self(JobQueue::open(store, opts)?))
    }
}

impl System for Cairn {
    fn enqueue(&self, payloads: &[u64]) -> Result<(), Failure> {
        let jobs: Vec<NewJob> = payloads.iter().map(|n| NewJob::new(QUEUE, "bench", json!({ "n": n }))).collect();
        self.0.enqueue_batch(&jobs)?;
        Ok(())
    }
    fn worker(&self) -> Result<Box<dyn Worker + '_>, Failure> {
        Ok(Box::new(CairnWorker(&self.0, ClaimRequest::new(&[QUEUE], "bench", LEASE_MS))))
    }
    fn sync_stats(&self) -> Option<String> {
        let s = self.0.store().db().stats();
        Some(format!("{} commits, {} write groups, {} WAL syncs", s.commits, s.write_groups, s.wal_syncs))
    }
}

struct CairnWorker<'a>(&'a JobQueue, ClaimRequest);

impl Worker for CairnWorker<'_> {
    fn claim(&mut self, n: usize) -> Result<Vec<(u64, u64)>, Failure> {
        if n == 1 {
            return Ok(self.0.claim(&self.1)?.map(|j| (j.id, j.token)).into_iter().collect());
        }
        let jobs = self.0.claim_batch(&self.1.clone().limit(n))?;
        Ok(jobs.into_iter().map(|j| (j.id, j.token)).collect())
    }
    fn complete(&mut self, jobs: &[(u64, u64)]) -> Result<(), Failure> {
        if let [(id, token)] = jobs {
            self.0.complete(*id, *token)?;
            return Ok(());
        }
        for outcome in self.0.complete_batch(jobs)? {
            outcome?;
        }
        Ok(())
    }
}

const SQL_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY, queue TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
    priority INTEGER NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL, max_attempts INTEGER NOT NULL,
    scheduled_at BIGINT NOT NULL, lease_until BIGINT, token BIGINT NOT NULL, worker TEXT,
    inserted_at BIGINT NOT NULL, finished_at BIGINT);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, state, priority, id);";

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

struct Sqlite(PathBuf);

impl Sqlite {
    fn open(dir: &Path) -> Result<Self, Failure> {
        let s = Sqlite(dir.join("queue.sqlite"));
        s.connect()?.execute_batch(SQL_SCHEMA)?;
        Ok(s)
    }
    fn connect(&self) -> Result<rusqlite::Connection, Failure> {
        let c = rusqlite::Connection::open(&self.0)?;
        c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")?;
        c.busy_timeout(Duration::from_secs(60))?;
        Ok(c)
    }
}

impl System for Sqlite {
    fn enqueue(&self, payloads: &[u64]) -> Result<(), Failure> {
        thread_local! {
            static CONN: std::cell::RefCell<Option<(PathBuf, rusqlite::Connection)>> = const { std::cell::RefCell::new(None) };
        }
        CONN.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(p, _)| *p != self.0) {
                *slot = Some((self.0.clone(), self.connect()?));
            }
            let Some((_, c)) = slot.as_mut() else { return Err("no connection".into()) };
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO jobs (queue, kind, payload, priority, state, attempt, max_attempts, scheduled_at, \
                     token, inserted_at) VALUES (?1, 'bench', ?2, 0, 'available', 0, 20, ?3, 0, ?3)",
                )?;
                let now = now_ms();
                for n in payloads {
                    insert.execute(rusqlite::params![QUEUE, json!({ "n": n }).to_string(), now])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
    fn worker(&self) -> Result<Box<dyn Worker + '_>, Failure> {
        Ok(Box::new(SqliteWorker(self.connect()?)))
    }
}

struct SqliteWorker(rusqlite::Connection);

impl Worker for SqliteWorker {
    fn claim(&mut self, n: usize) -> Result<Vec<(u64, u64)>, Failure> {
        let tx = self.0.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut claimed = Vec::new();
        {
            let mut claim = tx.prepare_cached(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, token = token + 1, lease_until = ?1, \
                 worker = 'bench' WHERE id IN (SELECT id FROM jobs WHERE queue = ?2 AND state = 'available' \
                 ORDER BY priority, id LIMIT ?3) RETURNING id, token, payload",
            )?;
            let mut rows = claim.query(rusqlite::params![now_ms() + LEASE_MS as i64, QUEUE, n as i64])?;
            while let Some(row) = rows.next()? {
                let _payload: String = row.get(2)?;
                claimed.push((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64));
            }
        }
        tx.commit()?;
        Ok(claimed)
    }
    fn complete(&mut self, jobs: &[(u64, u64)]) -> Result<(), Failure> {
        let tx = self.0.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut complete = tx.prepare_cached(
                "UPDATE jobs SET state = 'completed', lease_until = NULL, finished_at = ?1 \
                 WHERE id = ?2 AND token = ?3 AND state = 'running'",
            )?;
            for (id, token) in jobs {
                if complete.execute(rusqlite::params![now_ms(), *id as i64, *token as i64])? != 1 {
                    return Err(format!("sqlite: job {id} not completed").into());
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

struct Postgres {
    url: String,
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Postgres {
    fn open(url: &str) -> Result<Self, Failure> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = Self::connect_on(&rt, url)?;
        rt.block_on(client.batch_execute(&format!(
            "DROP TABLE IF EXISTS jobs; {}",
            SQL_SCHEMA.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")
        )))?;
        Ok(Self { url: url.to_owned(), rt, client })
    }
    fn connect_on(rt: &tokio::runtime::Runtime, url: &str) -> Result<tokio_postgres::Client, Failure> {
        let (client, connection) = rt.block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))?;
        rt.spawn(connection);
        rt.block_on(client.batch_execute("SET synchronous_commit = on"))?;
        Ok(client)
    }
}

impl System for Postgres {
    fn enqueue(&self, payloads: &[u64]) -> Result<(), Failure> {
        let docs: Vec<String> = payloads.iter().map(|n| json!({ "n": n }).to_string()).collect();
        self.rt.block_on(self.client.execute(
            "INSERT INTO jobs (queue, kind, payload, priority, state, attempt, max_attempts, scheduled_at, token, \
             inserted_at) SELECT $1, 'bench', p, 0, 'available', 0, 20, $2, 0, $2 FROM unnest($3::text[]) AS p",
            &[&QUEUE, &now_ms(), &docs],
        ))?;
        Ok(())
    }
    fn worker(&self) -> Result<Box<dyn Worker + '_>, Failure> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = Self::connect_on(&rt, &self.url)?;
        Ok(Box::new(PostgresWorker { rt, client }))
    }
}

struct PostgresWorker {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Worker for PostgresWorker {
    fn claim(&mut self, n: usize) -> Result<Vec<(u64, u64)>, Failure> {
        let rows = self.rt.block_on(self.client.query(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, token = token + 1, lease_until = $1, \
             worker = 'bench' WHERE id IN (SELECT id FROM jobs WHERE queue = $2 AND state = 'available' \
             ORDER BY priority, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id, token, payload",
            &[&(now_ms() + LEASE_MS as i64), &QUEUE, &(n as i64)],
        ))?;
        Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64)).collect())
    }
    fn complete(&mut self, jobs: &[(u64, u64)]) -> Result<(), Failure> {
        let ids: Vec<i64> = jobs.iter().map(|j| j.0 as i64).collect();
        let tokens: Vec<i64> = jobs.iter().map(|j| j.1 as i64).collect();
        let n = self.rt.block_on(self.client.execute(
            "UPDATE jobs SET state = 'completed', lease_until = NULL, finished_at = $1 \
             FROM unnest($2::bigint[], $3::bigint[]) AS done(id, token) \
             WHERE jobs.id = done.id AND jobs.token = done.token AND jobs.state = 'running'",
            &[&now_ms(), &ids, &tokens],
        ))?;
        if n != jobs.len() as u64 {
            return Err(format!("postgres: {n} of {} jobs completed", jobs.len()).into());
        }
        Ok(())
    }
}

/// A fresh system of kind `name` in `dir`.
fn open(name: &str, dir: &Path, args: &Args) -> Result<Box<dyn System>, Failure> {
    std::fs::create_dir_all(dir)?;
    Ok(match name {
        "cairn" => Box::new(Cairn::open(dir, QueueOptions::default())?),
        "sqlite" => Box::new(Sqlite::open(dir)?),
        _ => Box::new(Postgres::open(args.postgres.as_deref().unwrap_or_default())?),
    })
}

fn enqueue_rate(system: &dyn System, n: u64, batch: u64) -> Result<f64, Failure> {
    let started = Instant::now();
    let mut next = 0;
    while next < n {
        let ids: Vec<u64> = (next..(next + batch).min(n)).collect();
        system.enqueue(&ids)?;
        next += batch;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Loads `jobs` jobs, then runs `workers` threads of claim and complete until none is left: cycles per
/// second and every claim's latency (µs).
fn cycles(system: &dyn System, jobs: u64, workers: usize, batch: usize) -> Result<(f64, Vec<u64>), Failure> {
    let ids: Vec<u64> = (0..jobs).collect();
    for chunk in ids.chunks(1000) {
        system.enqueue(chunk)?;
    }
    let done = AtomicU64::new(0);
    let complete_us = AtomicU64::new(0);
    let started = Instant::now();
    let latencies = std::thread::scope(|s| -> Result<Vec<u64>, Failure> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (done, complete_us) = (&done, &complete_us);
                s.spawn(move || -> Result<Vec<u64>, Failure> {
                    let mut worker = system.worker()?;
                    let mut lat = Vec::new();
                    loop {
                        let t = Instant::now();
                        let claimed = worker.claim(batch)?;
                        lat.push(t.elapsed().as_micros() as u64);
                        if claimed.is_empty() {
                            return Ok(lat);
                        }
                        let t = Instant::now();
                        worker.complete(&claimed)?;
                        complete_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                        done.fetch_add(claimed.len() as u64, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| "a worker panicked")??);
        }
        Ok(all)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    if done != jobs {
        return Err(format!("{done} of {jobs} jobs completed").into());
    }
    let completions = jobs.div_ceil(batch as u64).max(1);
    eprintln!("  mean completion commit: {} µs", complete_us.load(Ordering::Relaxed) / completions);
    Ok((jobs as f64 / elapsed, latencies))
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied()
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The disk workload: a backlog of 10,000 jobs kept while `n` cycles run from 4 threads, completed jobs
/// pruned at once. Prints the directory's bytes after the backlog was loaded and after the run.
fn disk(dir: &Path, n: u64) -> Result<(), Failure> {
    const BACKLOG: u64 = 10_000;
    let opts =
        QueueOptions::default().completed_retention(Duration::ZERO).maintenance_interval(Duration::from_millis(200));
    let cairn = Cairn::open(dir, opts)?;
    let ids: Vec<u64> = (0..BACKLOG).collect();
    for chunk in ids.chunks(1000) {
        cairn.enqueue(chunk)?;
    }
    let tables_loaded = settle(cairn.0.store().db())?;
    let loaded = dir_bytes(dir);
    let next = AtomicU64::new(BACKLOG);
    let started = Instant::now();
    std::thread::scope(|s| -> Result<(), Failure> {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (cairn, next) = (&cairn, &next);
                s.spawn(move || -> Result<(), Failure> {
                    let mut worker = cairn.worker()?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= BACKLOG + n {
                            return Ok(());
                        }
                        cairn.enqueue(&[i])?;
                        let claimed = worker.claim(1)?;
                        if claimed.is_empty() {
                            return Err("no job".into());
                        }
                        worker.complete(&claimed)?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a worker panicked")??;
        }
        Ok(())
    })?;
    let ran = started.elapsed();
    cairn.0.maintain()?;
    let db = cairn.0.store().db();
    let tables_after = settle(db)?;
    let live: u64 = db.prefix(b"")?.map(|p| p.map(|(k, v)| (k.len() + v.len()) as u64)).sum::<Result<u64, _>>()?;
    println!(
        "disk: {n} cycles in {:.1} s with a backlog of {BACKLOG} jobs ({:?}); live keys and values {live} bytes; \
         after loading the backlog: directory {loaded} bytes, tables {tables_loaded} bytes; after the run: \
         directory {} bytes, tables {tables_after} bytes ({:.2}x); {} bytes written by the commits",
        ran.as_secs_f64(),
        cairn.0.counts(QUEUE)?,
        dir_bytes(dir),
        tables_after as f64 / tables_loaded.max(1) as f64,
        db.stats().user_bytes_written,
    );
    Ok(())
}

/// Flushes the memtable and waits until the compaction worker has been quiet for 2 s (at most 60 s);
/// returns the tables' bytes.
fn settle(db: &Db) -> Result<u64, Failure> {
    db.flush()?;
    let (mut last, mut quiet, settling) = (db.stats(), Instant::now(), Instant::now());
    while settling.elapsed() < Duration::from_secs(60) && quiet.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
        let now = db.stats();
        if now.compactions != last.compactions || now.flushes != last.flushes {
            quiet = Instant::now();
        }
        last = now;
    }
    Ok(db.stats().table_bytes())
}

fn run(args: &Args, root: &Path) -> Result<Vec<Row>, Failure> {
    let mut rows = Vec::new();
    // Workload by workload, every system in turn: the systems meet the same load of the machine.
    for (workload, batch) in [("enqueue-1", 1u64), ("enqueue-100", 100)] {
        for system in &args.systems {
            let dir = root.join(format!("{system}-{workload}"));
            let s = open(system, &dir, args)?;
            let rate = enqueue_rate(s.as_ref(), args.enqueue, batch)?;
            eprintln!("{system} {workload}: {rate:.0} jobs/s");
            rows.push(Row {
                system: system.clone(),
                workload: workload.into(),
                per_second: rate,
                p50_us: None,
                p99_us: None,
            });
            drop(s);
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    for &workers in &args.workers {
        let name = match args.batch {
            1 => format!("cycle-{workers}"),
            b => format!("cycle-{workers}-batch-{b}"),
        };
        for system in &args.systems {
            let dir = root.join(format!("{system}-{name}"));
            let s = open(system, &dir, args)?;
            let (rate, mut lat) = cycles(s.as_ref(), args.jobs, workers, args.batch)?;
            if let Some(stats) = s.sync_stats() {
                eprintln!("  {stats}");
            }
            lat.sort_unstable();
            let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
            eprintln!("{system} {name}: {rate:.0} cycles/s, claim p50 {p50:?} µs p99 {p99:?} µs");
            rows.push(Row {
                system: system.clone(),
                workload: name.clone(),
                per_second: rate,
                p50_us: p50,
                p99_us: p99,
            });
            drop(s);
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    if args.disk_cycles > 0 {
        let dir = root.join("cairn-disk");
        disk(&dir, args.disk_cycles)?;
    }
    Ok(rows)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let temp = match &args.dir {
        Some(_) => None,
        None => match tempfile::Builder::new().prefix("cairn-queue-load").tempdir() {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("queue_load: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let root = args.dir.clone().or_else(|| temp.as_ref().map(|t| t.path().to_path_buf())).unwrap_or_default();
    match run(&args, &root) {
        Ok(rows) => {
            println!("| system | workload | per second | claim p50 (µs) | claim p99 (µs) |");
            println!("|---|---|---:|---:|---:|");
            let show = |v: Option<u64>| v.map_or_else(|| "".to_owned(), |v| v.to_string());
            for r in rows {
                println!(
                    "| {} | {} | {:.0} | {} | {} |",
                    r.system,
                    r.workload,
                    r.per_second,
                    show(r.p50_us),
                    show(r.p99_us)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("queue_load: {e}");
            ExitCode::FAILURE
        }
    }
}
