//! `cairn demo`: loads synthetic compute jobs with a status index, then queries them and prints timings.
//!
//! Each job is stored twice, atomically in one batch:
//!
//! | key                                        | value                 |
//! |--------------------------------------------|-----------------------|
//! | `job/{id:08}`                              | the job as JSON       |
//! | `idx/status/{status}/{priority:04}/{id:08}` | empty (an index entry) |
//!
//! so a reverse prefix scan of `idx/status/PENDING/` yields pending jobs from the highest priority down.
//! A job is a pure function of its id: running the demo again overwrites identical keys, and the index
//! never points at a stale status.

use std::time::{Duration, Instant};

use cairn::{Db, WriteBatch};
use clap::Args;
use serde_json::Value;

use super::{format, DataDir, Failure};

/// Arguments of `cairn demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Number of jobs to load (ids 0 to N-1).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..100_000_000))]
    jobs: u32,
}

/// Jobs per write batch.
const BATCH_JOBS: u32 = 1000;
/// Point lookups timed for the queries/sec figure.
const TIMED_GETS: u32 = 10_000;
/// Repetitions of the top-10 query timed for its rate.
const TIMED_TOP10: u32 = 200;

const STATUSES: [&str; 5] = ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"];
const OWNERS: [&str; 8] = ["alice", "bob", "chen", "dana", "emeka", "farah", "goran", "hiro"];
const PROJECTS: [&str; 6] = ["vision", "speech", "ranking", "forecasting", "genomics", "llm-eval"];
const TASKS: [&str; 6] = ["train", "finetune", "evaluate", "preprocess", "sweep", "export"];
const MODELS: [&str; 6] = ["resnet50", "bert-base", "xgboost", "unet", "whisper-small", "gpt2-medium"];
const GPU_TYPES: [&str; 3] = ["a100", "h100", "l4"];
/// 2026-01-01T00:00:00Z, the first submission time.
const EPOCH: u64 = 1_767_225_600;

pub fn run(args: &DemoArgs) -> Result<(), Failure> {
    let dir = &args.dir.path;
    let db = Db::open(dir).map_err(|e| Failure::new(format_args!("cannot open {}", dir.display()), e))?;
    let jobs = args.jobs;

    let elapsed = load(&db, jobs)?;
    println!(
        "loaded {} jobs ({} keys) in {}: {} jobs/s",
        format::thousands(jobs.into()),
        format::thousands(2 * u64::from(jobs)),
        format::duration(elapsed),
        format::rate(jobs.into(), elapsed)
    );

    println!("\njobs by id:");
    for id in [0, jobs / 2, jobs - 1] {
        let job = db.get(job_key(id)).map_err(|e| Failure::new("get failed", e))?;
        let job = job.ok_or_else(|| Failure::new("lookup", format_args!("job {id} is missing")))?;
        println!("  {}", String::from_utf8_lossy(&job));
    }
    let elapsed = timed_gets(&db, jobs)?;
    println!(
        "{} random gets in {}: {} queries/s",
        format::thousands(TIMED_GETS.into()),
        format::duration(elapsed),
        format::rate(TIMED_GETS.into(), elapsed)
    );

    println!("\n10 highest-priority PENDING jobs:");
    for (priority, id) in top_pending(&db, 10)? {
        let job = get_job(&db, id)?.ok_or_else(|| Failure::new("index", format_args!("job {id} is missing")))?;
        println!("  priority {priority:>4}  job {id:08}  {}  owner {}", job["name"], job["owner"]);
    }
    let start = Instant::now();
    for _ in 0..TIMED_TOP10 {
        top_pending(&db, 10)?;
    }
    let elapsed = start.elapsed();
    println!("top-10 query x{TIMED_TOP10} in {}: {} queries/s", format::duration(elapsed), format::rate(TIMED_TOP10.into(), elapsed));

    println!("\njobs per status:");
    let start = Instant::now();
    let mut total = 0;
    for status in STATUSES {
        let n = count_prefix(&db, &format!("idx/status/{status}/"))?;
        total += n;
        println!("  {status:<10} {:>10}", format::thousands(n));
    }
    let elapsed = start.elapsed();
    println!("  {:<10} {:>10}", "total", format::thousands(total));
    println!("counted {} index entries in {}: {} entries/s", format::thousands(total), format::duration(elapsed), format::rate(total, elapsed));

    let stats = db.stats();
    println!(
        "\ntables: {} ({}), memtable {} (+{} frozen, flushing), write amplification {:.2}",
        stats.table_count(),
        format::bytes(stats.table_bytes()),
        format::bytes(stats.memtable_bytes),
        stats.immutable_memtables,
        stats.write_amplification()
    );
    db.close().map_err(|e| Failure::new("cannot close the database", e))
}

/// Writes jobs `0..jobs` in batches of [`BATCH_JOBS`]; returns the time taken.
fn load(db: &Db, jobs: u32) -> Result<Duration, Failure> {
    let start = Instant::now();
    let mut batch = WriteBatch::new();
    for id in 0..jobs {
        let job = Job::new(id);
        batch.put(job_key(id), job.to_json());
        batch.put(job.index_key(), b"");
        if (id + 1) % BATCH_JOBS == 0 || id + 1 == jobs {
            db.write(std::mem::take(&mut batch)).map_err(|e| Failure::new("load failed", e))?;
        }
    }
    Ok(start.elapsed())
}

fn timed_gets(db: &Db, jobs: u32) -> Result<Duration, Failure> {
    let start = Instant::now();
    for i in 0..TIMED_GETS {
        let id = (mix(u64::from(i) ^ 0x5eed) % u64::from(jobs)) as u32;
        if db.get(job_key(id)).map_err(|e| Failure::new("get failed", e))?.is_none() {
            return Err(Failure::new("get", format_args!("job {id} is missing")));
        }
    }
    Ok(start.elapsed())
}

fn get_job(db: &Db, id: u32) -> Result<Option<Value>, Failure> {
    let Some(bytes) = db.get(job_key(id)).map_err(|e| Failure::new("get failed", e))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| Failure::new(format_args!("job {id} is not JSON"), e))
}

/// `(priority, id)` of the `n` pending jobs of highest priority, highest first.
fn top_pending(db: &Db, n: usize) -> Result<Vec<(u32, u32)>, Failure> {
    let prefix = "idx/status/PENDING/";
    let scan = db.prefix_rev(prefix).map_err(|e| Failure::new("scan failed", e))?;
    let mut out = Vec::with_capacity(n);
    for pair in scan.take(n) {
        let (key, _) = pair.map_err(|e| Failure::new("scan failed", e))?;
        let rest = key.get(prefix.len()..).unwrap_or_default();
        let parsed = std::str::from_utf8(rest).ok().and_then(|rest| {
            let (priority, id) = rest.split_once('/')?;
            Some((priority.parse().ok()?, id.parse().ok()?))
        });
        let entry = parsed
            .ok_or_else(|| Failure::new("index", format_args!("malformed key {}", String::from_utf8_lossy(&key))))?;
        out.push(entry);
    }
    Ok(out)
}

fn count_prefix(db: &Db, prefix: &str) -> Result<u64, Failure> {
    let mut n = 0;
    for pair in db.prefix(prefix).map_err(|e| Failure::new("scan failed", e))? {
        pair.map_err(|e| Failure::new("scan failed", e))?;
        n += 1;
    }
    Ok(n)
}

fn job_key(id: u32) -> String {
    format!("job/{id:08}")
}

/// A synthetic compute job, derived from its id alone.
struct Job {
    id: u32,
    status: &'static str,
    priority: u32,
    seed: u64,
}

impl Job {
    fn new(id: u32) -> Self {
        let seed = mix(u64::from(id));
        let status = match seed % 100 {
            0..=19 => "PENDING",
            20..=34 => "RUNNING",
            35..=84 => "COMPLETED",
            85..=94 => "FAILED",
            _ => "CANCELLED",
        };
        Self { id, status, priority: ((seed >> 8) % 10_000) as u32, seed }
    }

    fn index_key(&self) -> String {
        format!("idx/status/{}/{:04}/{:08}", self.status, self.priority, self.id)
    }

    /// The job as a JSON object, fields in a readable order. Every string comes from the fixed ASCII lists
    /// above, so none needs escaping.
    fn to_json(&self) -> String {
        let pick = |list: &[&'static str], shift: u32| list[((self.seed >> shift) % list.len() as u64) as usize];
        let opt = |v: Option<u64>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
        let r = mix(self.seed);
        let gpus = [0, 0, 1, 1, 2, 4, 8][(r % 7) as usize];
        let gpu_type = if gpus > 0 { format!("\"{}\"", pick(&GPU_TYPES, 48)) } else { "null".to_owned() };
        let submitted = EPOCH + u64::from(self.id) * 30 + (r >> 40) % 30;
        let started = (self.status != "PENDING").then_some(submitted + 5 + (r >> 20) % 600);
        let finished = matches!(self.status, "COMPLETED" | "FAILED" | "CANCELLED")
            .then(|| started.unwrap_or(submitted) + 60 + (r >> 8) % 36_000);
        let exit_code = match self.status {
            "COMPLETED" => Some(0),
            "FAILED" => Some(1 + r % 137),
            _ => None,
        };
        format!(
            concat!(
                r#"{{"id":{id},"name":"{task}-{model}-{id}","owner":"{owner}","project":"{project}","#,
                r#""status":"{status}","priority":{priority},"#,
                r#""resources":{{"cpus":{cpus},"memory_gb":{memory},"gpus":{gpus},"gpu_type":{gpu_type}}},"#,
                r#""submitted_at":{submitted},"started_at":{started},"finished_at":{finished},"exit_code":{exit}}}"#
            ),
            id = self.id,
            task = pick(&TASKS, 16),
            model = pick(&MODELS, 24),
            owner = pick(&OWNERS, 32),
            project = pick(&PROJECTS, 40),
            status = self.status,
            priority = self.priority,
            cpus = 1 << ((r >> 4) % 6),
            memory = 4 << ((r >> 12) % 6),
            gpus = gpus,
            gpu_type = gpu_type,
            submitted = submitted,
            started = opt(started),
            finished = opt(finished),
            exit = opt(exit_code),
        )
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_deterministic_and_indexed_by_status() {
        let (a, b) = (Job::new(42), Job::new(42));
        assert_eq!(a.to_json(), b.to_json());
        assert_eq!(a.index_key(), b.index_key());
        let json: Value = serde_json::from_str(&a.to_json()).expect("a job is valid JSON");
        assert_eq!(json["status"], a.status);
        assert_eq!(json["id"], 42);
        assert!(a.index_key().starts_with(&format!("idx/status/{}/", a.status)));
        assert!(a.index_key().ends_with("/00000042"));
    }

    #[test]
    fn every_status_occurs_and_every_job_is_json() {
        for status in STATUSES {
            assert!((0..1000).any(|id| Job::new(id).status == status), "{status}");
        }
        for id in 0..1000 {
            let json: Value = serde_json::from_str(&Job::new(id).to_json()).expect("a job is valid JSON");
            assert!(json["resources"]["gpus"].is_u64());
        }
    }
}
