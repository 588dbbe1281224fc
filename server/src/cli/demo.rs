//! `cairn demo`: Cairn's main job, scheduling compute jobs, shown on synthetic data through the typed
//! `jobs` collection.
//!
//! The demo opens a [`Store`] on the data directory and takes its [`Job`] collection, declaring it with
//! its six secondary indexes if needed (`status`, `owner`, `project`, `status_priority`,
//! `project_created`, `status_lease`), and the store's job queue ([`JobQueue::open`] declares the queue's
//! collections, `_queue_jobs` and `_queue_unique`). It then:
//!
//! 1. loads N synthetic jobs with `upsert`, 1,000 per transaction, each commit durable
//!    ([`Durability::Immediate`](cairn_engine::Durability::Immediate), the default); a record, its index entries
//!    and its change event are written atomically. Each QUEUED job the load creates gets a job on the job
//!    queue ([`JobQueue`], queue [`QUEUE`]) in the same transaction ([`JobQueue::enqueue_in`]): payload
//!    `{"job": <record id>}`, priority from the record's ([`queue_priority`]);
//! 2. reads three jobs by id, then times 10,000 random gets;
//! 3. lists the ten most urgent PENDING jobs (`status_priority` read backwards), printing the query plan,
//!    and times that query;
//! 4. counts the jobs in each status (the `status` index) and in total (a full scan);
//! 5. pages through one owner's jobs with cursors (the `owner` index);
//! 6. claims five queue jobs for a worker node with [`JobQueue::claim`] (the most urgent queue priority
//!    first, then the oldest; each leased, with a fencing token), and marks the job record each one names
//!    RUNNING on that node, leased as long as the queue job, by a version-checked update;
//! 7. reads the change feed written since the run started, and checks every index entry against the
//!    records.
//!
//! A job is a pure function of its id (see [`synthetic_job`]): running the demo again on the same directory
//! upserts identical documents, so records, index entries and counts come out the same, including for the
//! jobs the previous run claimed. Only the records' versions grow, and the change feed, which keeps every
//! write for the store's retention period. Queue jobs are enqueued only with the records they are about when
//! these are created, so a second run enqueues none and claims the next five; the queue jobs claimed before
//! stay running under their lease. The queue's collections write no change events, so the change feed
//! holds the same writes in every run.
//!
//! The counts per status are printed in a fixed format that the CLI tests parse: a line `jobs per status:`,
//! then one line per status and a `total` line, each `  NAME  COUNT` with the count in thousands-separated
//! digits, then an empty line.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_platform::{Job, JobStatus};
use cairn_store::queue::{ClaimRequest, Job as QueueJob, JobQueue, NewJob, QueueError, QueueOptions};
use cairn_store::{Collection, CollectionError, Plan, Query, Record, Store, Stored};
use clap::Args;
use serde_json::json;

use super::{format, DataDir, Failure};

/// Arguments of `cairn demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Number of jobs to load (ids job-00000000 to job-N-1).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..100_000_000))]
    jobs: u32,
}

/// Jobs per transaction while loading.
const BATCH_JOBS: u32 = 1000;
/// Point lookups timed for the gets/s figure.
const TIMED_GETS: u32 = 10_000;
/// Repetitions of the top-10 query timed for its rate.
const TIMED_TOP10: u32 = 200;
/// Page size when paging through one owner's jobs.
const OWNER_PAGE: usize = 100;
/// The queue that hands QUEUED jobs to workers, and the kind of its jobs.
const QUEUE: &str = "compute";
const QUEUE_KIND: &str = "run";
/// Jobs claimed, for [`CLAIM_NODE`], with a lease of [`LEASE_MS`].
const CLAIMS: usize = 5;
const CLAIM_NODE: &str = "demo-node";
const LEASE_MS: u64 = 60_000;
/// Change-feed entries read per page.
const CHANGES_PAGE: usize = 10_000;

const OWNERS: [&str; 8] = ["alice", "bob", "chen", "dana", "emeka", "farah", "goran", "hiro"];
const PROJECTS: [&str; 6] = ["vision", "speech", "ranking", "forecasting", "genomics", "llm-eval"];
const TEAMS: [&str; 4] = ["research", "platform", "applied", "infra"];
const TASKS: [&str; 6] = ["train", "finetune", "evaluate", "preprocess", "sweep", "export"];
const MODELS: [&str; 6] = ["resnet50", "bert-base", "xgboost", "unet", "whisper-small", "gpt2-medium"];
const GPU_TYPES: [&str; 3] = ["A100", "H100", "L4"];
const FAILURES: [&str; 4] = ["OOMKilled", "non-zero exit", "node lost", "unschedulable"];
/// 2026-01-01T00:00:00Z in milliseconds: job `i` is created about `30 * i` seconds later.
const EPOCH_MS: i64 = 1_767_225_600_000;
/// 2100-01-01T00:00:00Z in milliseconds. The leases of the synthetic RUNNING jobs end within an hour after
/// it: a fixed time, so the data does not depend on when the demo runs, and one far enough ahead that
/// these leases never lapse.
const LEASES_UNTIL_MS: i64 = 4_102_444_800_000;

pub fn run(args: &DemoArgs) -> Result<(), Failure> {
    let dir = &args.dir.path;
    let store = Store::open(dir).map_err(|e| Failure::new(format_args!("cannot open {}", dir.display()), e))?;
    let jobs = store.collection::<Job>().map_err(|e| Failure::new("cannot open the jobs collection", e))?;
    // No maintenance thread: the demo only enqueues and claims, and a claim promotes due jobs itself.
    let queue = JobQueue::open(store.clone(), QueueOptions::default().maintenance_interval(Duration::ZERO))
        .map_err(|e| Failure::new("cannot open the job queue", e))?;
    let n = args.jobs;

    // Everything committed after this sequence number was written by this run.
    let seq_before = store.db().last_sequence();
    let (elapsed, enqueued) = load(&store, &queue, n).map_err(|e| Failure::new("load failed", e))?;
    println!(
        "loaded {} jobs into collection {} ({} indexes) in {}: {} jobs/s ({} durable transactions of up to {})",
        format::thousands(n.into()),
        Job::COLLECTION,
        Job::indexes().len(),
        format::duration(elapsed),
        format::rate(n.into(), elapsed),
        format::thousands(n.div_ceil(BATCH_JOBS).into()),
        format::thousands(BATCH_JOBS.into()),
    );
    println!(
        "enqueued {} jobs on queue {QUEUE}, each in the transaction that created its QUEUED job",
        format::thousands(enqueued)
    );

    println!("\njobs by id:");
    for id in [0, n / 2, n - 1] {
        let job = get(&jobs, &job_id(id))?;
        println!("  {}", summary(&job));
    }
    let elapsed = timed_gets(&jobs, n)?;
    println!(
        "{} random gets in {}: {} gets/s",
        format::thousands(TIMED_GETS.into()),
        format::duration(elapsed),
        format::rate(TIMED_GETS.into(), elapsed)
    );

    let top10 = Query::new().eq("status", JobStatus::Pending.as_str()).order_by("priority").descending().limit(10);
    let plan = jobs.explain(&top10).map_err(|e| Failure::new("explain failed", e))?;
    println!("\n10 highest-priority PENDING jobs ({}):", describe(&plan));
    let page = jobs.query(&top10).map_err(|e| Failure::new("query failed", e))?;
    for job in &page.records {
        println!("  priority {:>4}  {}  {}  owner {}", job.doc.priority, job.id, job.doc.name, job.doc.owner);
    }
    let start = Instant::now();
    for _ in 0..TIMED_TOP10 {
        jobs.query(&top10).map_err(|e| Failure::new("query failed", e))?;
    }
    let elapsed = start.elapsed();
    println!(
        "top-10 query x{TIMED_TOP10} in {}: {} queries/s",
        format::duration(elapsed),
        format::rate(TIMED_TOP10.into(), elapsed)
    );

    count_by_status(&jobs)?;
    page_owner(&jobs, OWNERS[0])?;

    claim(&queue, &jobs)?;

    let start = Instant::now();
    let changes = count_changes(&store, seq_before).map_err(|e| Failure::new("reading the change feed failed", e))?;
    println!(
        "\nchange feed: {} changes since sequence {} (this run), read in {}",
        format::thousands(changes),
        format::thousands(seq_before),
        format::duration(start.elapsed())
    );
    let start = Instant::now();
    let checked = store.check_indexes().map_err(|e| Failure::new("index check failed", e))?;
    println!(
        "index check: {} index entries agree with the records ({})",
        format::thousands(checked),
        format::duration(start.elapsed())
    );

    // The queue's handle on the store goes before the database closes.
    drop(queue);
    let db = store.db();
    let stats = db.stats();
    println!(
        "\ndatabase: last sequence {}; tables: {} ({}), memtable {} (+{} frozen, flushing), write amplification {:.2}",
        format::thousands(stats.last_sequence),
        stats.table_count(),
        format::bytes(stats.table_bytes()),
        format::bytes(stats.memtable_bytes),
        stats.immutable_memtables,
        stats.write_amplification()
    );
    db.clone().close().map_err(|e| Failure::new("cannot close the database", e))
}

/// Upserts jobs `0..n`, [`BATCH_JOBS`] per transaction, enqueueing a queue job ([`queue_job`]) for each
/// QUEUED job created (an upsert that writes version 1) in the same transaction; returns the time taken and
/// the number of queue jobs enqueued.
fn load(store: &Store, queue: &JobQueue, n: u32) -> Result<(Duration, u64), QueueError> {
    let start = Instant::now();
    let mut enqueued = 0;
    for first in (0..n).step_by(BATCH_JOBS as usize) {
        let last = first.saturating_add(BATCH_JOBS).min(n);
        let mut tx = store.begin();
        let mut staged = 0;
        for id in first..last {
            let job = synthetic_job(id);
            let created = tx.upsert(&job)? == 1;
            if created && job.status == JobStatus::Queued {
                queue.enqueue_in(&mut tx, &queue_job(&job))?;
                staged += 1;
            }
        }
        tx.commit()?;
        enqueued += staged;
    }
    Ok((start.elapsed(), enqueued))
}

/// The queue job that hands `job` to a worker: kind [`QUEUE_KIND`] on [`QUEUE`], payload
/// `{"job": <record id>}`, priority [`queue_priority`] of the record's.
fn queue_job(job: &Job) -> NewJob {
    NewJob::new(QUEUE, QUEUE_KIND, json!({ "job": job.id })).priority(queue_priority(job.priority))
}

/// The queue priority (0, the most urgent, to 9) of a job record's priority (higher is more urgent; 0 to
/// 9,999 in the synthetic data), in bands of 1,000: 9,000 and above is 0, below 1,000 (negative too) is 9.
fn queue_priority(priority: i64) -> u8 {
    (9 - priority.clamp(0, 9_999) / 1_000) as u8
}

/// Claims up to [`CLAIMS`] queue jobs for [`CLAIM_NODE`] and starts the job record each names
/// ([`start_job`]), printing each; a queue job whose record cannot start is cancelled. Then prints the
/// queue's counts.
fn claim(queue: &JobQueue, jobs: &Collection<Job>) -> Result<(), Failure> {
    let request = ClaimRequest::new(&[QUEUE], CLAIM_NODE, LEASE_MS);
    println!(
        "\nclaimed from queue {QUEUE} for {CLAIM_NODE} (lease {} s; most urgent queue priority first, then oldest):",
        LEASE_MS / 1000
    );
    let mut started = 0;
    while started < CLAIMS {
        let Some(work) = queue.claim(&request).map_err(|e| Failure::new("claim failed", e))? else {
            println!("  (nothing left to claim)");
            break;
        };
        let Some(job) = start_job(jobs, &work)? else {
            queue.cancel(work.id).map_err(|e| Failure::new("cancel failed", e))?;
            println!("  queue job {}: {} cannot start; cancelled", work.id, work.payload);
            continue;
        };
        started += 1;
        println!(
            "  {}  node {}  attempts {}  queue job {} token {}",
            summary(&job),
            job.doc.node.as_deref().unwrap_or("-"),
            job.doc.attempts,
            work.id,
            work.token
        );
    }
    let counts = queue.counts(QUEUE).map_err(|e| Failure::new("queue counts failed", e))?;
    println!(
        "queue {QUEUE}: {} available, {} running, {} in all",
        format::thousands(counts.available),
        format::thousands(counts.running),
        format::thousands(counts.total())
    );
    Ok(())
}

/// Marks the job record that the claimed queue job `work` names RUNNING on the worker that claimed it,
/// leased until the queue job's lease ends, with `started_at` set on its first start and `attempts`
/// counted, by a version-checked update. `None` if the record is missing or cannot start (it is neither
/// PENDING nor QUEUED, nor RUNNING with a lapsed lease).
fn start_job(jobs: &Collection<Job>, work: &QueueJob) -> Result<Option<Stored<Job>>, Failure> {
    let Some(id) = work.payload.get("job").and_then(|id| id.as_str()) else { return Ok(None) };
    let Some(mut job) = jobs.get(id).map_err(|e| Failure::new("get failed", e))? else { return Ok(None) };
    let now = now_ms();
    let lapsed = job.doc.status == JobStatus::Running && job.doc.lease_expires_at.is_some_and(|t| t < now);
    if !(job.doc.status.can_transition_to(JobStatus::Running) || lapsed) {
        return Ok(None);
    }
    job.doc.status = JobStatus::Running;
    job.doc.node = work.worker.clone();
    job.doc.started_at.get_or_insert(now);
    job.doc.lease_expires_at = work.lease_until_ms;
    job.doc.attempts += 1;
    jobs.update(&job.doc, job.version).map(Some).map_err(|e| Failure::new("starting a claimed job failed", e))
}

fn get(jobs: &Collection<Job>, id: &str) -> Result<Stored<Job>, Failure> {
    jobs.get(id)
        .map_err(|e| Failure::new("get failed", e))?
        .ok_or_else(|| Failure::new("lookup", format_args!("job {id} is missing")))
}

fn timed_gets(jobs: &Collection<Job>, n: u32) -> Result<Duration, Failure> {
    let ids: Vec<String> =
        (0..TIMED_GETS).map(|i| job_id((mix(u64::from(i) ^ 0x5eed) % u64::from(n)) as u32)).collect();
    let start = Instant::now();
    for id in &ids {
        get(jobs, id)?;
    }
    Ok(start.elapsed())
}

/// Prints the `jobs per status:` table (see the module documentation for its format) and checks that the
/// counts add up to the total.
fn count_by_status(jobs: &Collection<Job>) -> Result<(), Failure> {
    let count = |q: &Query| jobs.count(q).map_err(|e| Failure::new("count failed", e));
    println!("\njobs per status:");
    let start = Instant::now();
    let mut sum = 0;
    for status in JobStatus::ALL {
        let n = count(&Query::new().eq("status", status.as_str()))?;
        sum += n;
        println!("  {:<10} {:>10}", status.as_str(), format::thousands(n));
    }
    let by_status = start.elapsed();
    let start = Instant::now();
    let total = count(&Query::new())?;
    let full_scan = start.elapsed();
    println!("  {:<10} {:>10}", "total", format::thousands(total));
    println!();
    if sum != total {
        return Err(Failure::new(
            "count",
            format_args!("the statuses add up to {sum} jobs, the collection holds {total}"),
        ));
    }
    println!(
        "counted {} statuses from the status index in {}; the total by a full scan in {}",
        JobStatus::ALL.len(),
        format::duration(by_status),
        format::duration(full_scan)
    );
    Ok(())
}

/// Pages through `owner`'s jobs with cursors and checks the result against a count.
fn page_owner(jobs: &Collection<Job>, owner: &str) -> Result<(), Failure> {
    let query = Query::new().eq("owner", owner).limit(OWNER_PAGE);
    let plan = jobs.explain(&query).map_err(|e| Failure::new("explain failed", e))?;
    let start = Instant::now();
    let (mut seen, mut pages, mut cursor) = (0u64, 0u64, None);
    loop {
        let page = jobs.query(&query.clone().after(cursor)).map_err(|e| Failure::new("query failed", e))?;
        seen += page.records.len() as u64;
        pages += 1;
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let elapsed = start.elapsed();
    let expected = jobs.count(&Query::new().eq("owner", owner)).map_err(|e| Failure::new("count failed", e))?;
    if seen != expected {
        return Err(Failure::new("paging", format_args!("{seen} jobs of {owner} in pages, {expected} counted")));
    }
    println!(
        "\n{owner}'s jobs ({}): {} in {} of up to {OWNER_PAGE} in {}: {} jobs/s",
        describe(&plan),
        format::thousands(seen),
        if pages == 1 { "1 page".to_owned() } else { format!("{} pages", format::thousands(pages)) },
        format::duration(elapsed),
        format::rate(seen, elapsed)
    );
    Ok(())
}

/// Number of changes committed after sequence `after`, read in pages.
fn count_changes(store: &Store, after: u64) -> Result<u64, CollectionError> {
    let (mut n, mut after) = (0, after);
    loop {
        let page = store.changes_since(after, CHANGES_PAGE)?;
        let Some(last) = page.last() else { return Ok(n) };
        after = last.seq;
        n += page.len() as u64;
    }
}

/// A plan in words: `plan: index status_priority, equality on status, descending`.
fn describe(plan: &Plan) -> String {
    let mut out = match &plan.index {
        Some(index) => format!("plan: index {index}"),
        None => "plan: full scan".to_owned(),
    };
    if !plan.equality.is_empty() {
        out += &format!(", equality on {}", plan.equality.join(", "));
    }
    if let Some(range) = &plan.range {
        out += &format!(", range on {range}");
    }
    if !plan.filtered.is_empty() {
        out += &format!(", filtering {}", plan.filtered.join(", "));
    }
    if plan.descending {
        out += ", descending";
    }
    out
}

/// One line about a stored job: id, status, priority, owner and version.
fn summary(job: &Stored<Job>) -> String {
    format!(
        "{}  {:<9}  priority {:>4}  owner {:<5}  v{}",
        job.id,
        job.doc.status.as_str(),
        job.doc.priority,
        job.doc.owner,
        job.version
    )
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn job_id(id: u32) -> String {
    format!("job-{id:08}")
}

/// The synthetic job with number `id`, a pure function of it: every field comes from a hash of the id.
///
/// Statuses: 20% PENDING, 10% QUEUED, 10% RUNNING, 40% COMPLETED, 12% FAILED, 8% CANCELLED, with times
/// to match (submitted, started, completed). RUNNING jobs hold a lease on a node until shortly after
/// [`LEASES_UNTIL_MS`]; finished jobs that ran carry usage metrics.
fn synthetic_job(id: u32) -> Job {
    let seed = mix(u64::from(id));
    let r = mix(seed);
    let pick = |list: &[&'static str], shift: u32| list[((seed >> shift) % list.len() as u64) as usize];
    let (task, model) = (pick(&TASKS, 16), pick(&MODELS, 24));
    let status = match seed % 100 {
        0..=19 => JobStatus::Pending,
        20..=29 => JobStatus::Queued,
        30..=39 => JobStatus::Running,
        40..=79 => JobStatus::Completed,
        80..=91 => JobStatus::Failed,
        _ => JobStatus::Cancelled,
    };
    let created_at = EPOCH_MS + i64::from(id) * 30_000 + ((r >> 40) % 30_000) as i64;
    let mut job = Job::new(
        job_id(id),
        format!("{task}-{model}-{id}"),
        pick(&OWNERS, 32),
        pick(&PROJECTS, 40),
        ((seed >> 8) % 10_000) as i64,
        created_at,
    );
    job.status = status;

    let gpus = [0, 0, 1, 1, 2, 4, 8][(r % 7) as usize];
    job.resources.cpus = 1 << ((r >> 4) % 6);
    job.resources.memory_mb = 4096 << ((r >> 12) % 6);
    job.resources.gpus = gpus;
    job.resources.gpu_type = (gpus > 0).then(|| pick(&GPU_TYPES, 48).to_owned());

    job.environment.image = format!("registry.example/{task}:1.{}", (r >> 52) % 8);
    job.environment.command = vec!["python".to_owned(), format!("{task}.py"), format!("--model={model}")];
    job.environment.env = BTreeMap::from([("CAIRN_JOB_ID".to_owned(), job.id.clone())]);
    if gpus > 0 {
        job.environment.env.insert("NCCL_DEBUG".to_owned(), "WARN".to_owned());
    }
    job.labels =
        BTreeMap::from([("team".to_owned(), pick(&TEAMS, 56).to_owned()), ("model".to_owned(), model.to_owned())]);

    // Times: submitted a few seconds after creation, started up to ten minutes later, finished up to ten
    // hours after that. A cancelled job was cancelled before it started in half the cases.
    let submitted = created_at + 1_000 + ((r >> 20) % 60_000) as i64;
    let started = submitted + 5_000 + ((r >> 28) % 600_000) as i64;
    let ran_for = 60_000 + ((r >> 8) % 36_000_000) as i64;
    let ran = match status {
        JobStatus::Pending | JobStatus::Queued => false,
        JobStatus::Cancelled => r.is_multiple_of(2),
        JobStatus::Failed => (r >> 3) % 4 != 3, // the others were unschedulable
        JobStatus::Running | JobStatus::Completed => true,
    };
    if status != JobStatus::Pending {
        job.submitted_at = Some(submitted);
    }
    if ran {
        job.started_at = Some(started);
        job.attempts = 1 + u32::from((r >> 36).is_multiple_of(10));
    }
    if status.is_terminal() {
        job.completed_at = Some(if ran { started + ran_for } else { submitted + 30_000 });
    }
    if status == JobStatus::Running {
        job.node = Some(format!("node-{:03}", (r >> 44) % 200));
        job.container_id = Some(format!("{:012x}", r & 0xffff_ffff_ffff));
        job.lease_expires_at = Some(LEASES_UNTIL_MS + ((r >> 24) % 3_600_000) as i64);
    }
    if ran && status.is_terminal() {
        let secs = ran_for as f64 / 1000.0;
        job.metrics.cpu_seconds = secs * f64::from(job.resources.cpus) * 0.8;
        job.metrics.gpu_seconds = secs * f64::from(gpus);
        job.metrics.peak_memory_mb = job.resources.memory_mb / 2 + (r >> 16) % (job.resources.memory_mb / 2);
        job.metrics.cost =
            (secs / 3600.0 * (0.05 * f64::from(job.resources.cpus) + 2.5 * f64::from(gpus)) * 100.0).round() / 100.0;
    }
    match status {
        JobStatus::Completed => job.exit_code = Some(0),
        JobStatus::Failed if ran => {
            let reason = pick(&FAILURES[..3], 60);
            job.exit_code = Some(if reason == "OOMKilled" { 137 } else { 1 + ((r >> 32) % 126) as i32 });
            job.failure_reason = Some(reason.to_owned());
        }
        JobStatus::Failed => job.failure_reason = Some(FAILURES[3].to_owned()),
        _ => {}
    }
    job
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
    fn jobs_are_deterministic() {
        assert_eq!(synthetic_job(42), synthetic_job(42));
        let job = synthetic_job(42);
        assert_eq!(job.id, "job-00000042");
        assert!(job.name.ends_with("-42"), "{}", job.name);
        assert_eq!(job.environment.env.get("CAIRN_JOB_ID").map(String::as_str), Some("job-00000042"));
    }

    #[test]
    fn every_status_occurs_with_consistent_fields() {
        let jobs: Vec<Job> = (0..2000).map(synthetic_job).collect();
        for &status in JobStatus::ALL {
            assert!(jobs.iter().any(|j| j.status == status), "{status}");
        }
        for job in &jobs {
            let running = job.status == JobStatus::Running;
            assert_eq!(job.node.is_some(), running, "{job:?}");
            assert_eq!(job.lease_expires_at.is_some_and(|t| t >= LEASES_UNTIL_MS), running, "{job:?}");
            assert_eq!(job.completed_at.is_some(), job.status.is_terminal(), "{job:?}");
            assert_eq!(job.submitted_at.is_none(), job.status == JobStatus::Pending, "{job:?}");
            assert_eq!(job.exit_code == Some(0), job.status == JobStatus::Completed, "{job:?}");
            assert_eq!(job.resources.gpu_type.is_some(), job.resources.gpus > 0, "{job:?}");
            if let (Some(started), Some(done)) = (job.started_at, job.completed_at) {
                assert!(job.created_at < started && started < done, "{job:?}");
            }
        }
    }

    #[test]
    fn queue_priorities_are_bands_of_a_thousand_most_urgent_first() {
        let cases =
            [(-5, 9), (0, 9), (999, 9), (1_000, 8), (5_500, 4), (8_999, 1), (9_000, 0), (9_999, 0), (50_000, 0)];
        for (priority, expected) in cases {
            assert_eq!(queue_priority(priority), expected, "priority {priority}");
        }
    }

    #[test]
    fn the_top10_plan_reads_as_words() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let jobs = store.collection::<Job>()?;
        let plan = jobs.explain(&Query::new().eq("status", "PENDING").order_by("priority").descending())?;
        assert_eq!(describe(&plan), "plan: index status_priority, equality on status, descending");
        let plan = jobs.explain(&Query::new().eq("owner", "alice"))?;
        assert_eq!(describe(&plan), "plan: index owner, equality on owner");
        Ok(())
    }
}
