//! `collections_perf`: throughput of Cairn's typed collections on the built-in `jobs` collection (six
//! indexes), printed as a markdown table.
//!
//! ```text
//! cargo run --release -p cairn-bench --bin collections_perf -- [--jobs 200000]
//! ```
//!
//! 1. insert jobs of about 500 bytes in durable transactions of 100 (`Durability::Immediate`);
//! 2. the scheduler query: top 50 PENDING jobs by priority, as a page and visited one job at a time;
//! 3. random gets by id;
//! 4. paging through one owner's jobs, 100 per page, and through jobs of conditions the index scanned does not
//!    answer (checked on each record), and counts;
//! 5. claims (version-checked status updates) from 1 thread and from 4 threads.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::thread;
use std::time::Instant;

use cairn_bench::compare::claim_next;
use cairn_platform::{Job, JobStatus};
use cairn_store::{Op, Query, Store};
use rand::{Rng, SeedableRng};

type Failure = Box<dyn std::error::Error>;

const TXN: usize = 100;
const SCHEDULER_QUERIES: usize = 2000;
const GETS: usize = 100_000;
const CLAIMS: usize = 10_000;

fn job(i: usize, rng: &mut rand::rngs::StdRng) -> Job {
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

fn rate(n: usize, secs: f64) -> String {
    format!("{:.0}", n as f64 / secs)
}

/// Pages through `q`, 100 jobs a page: `page` reads the page it is given and returns how many jobs it held
/// and the cursor of the next. Returns the jobs read and the seconds taken.
fn page_through(
    q: &Query,
    mut page: impl FnMut(Query) -> Result<(usize, Option<String>), Failure>,
) -> Result<(usize, f64), Failure> {
    let t = Instant::now();
    let (mut seen, mut cursor) = (0, None);
    loop {
        let (n, next) = page(q.clone().limit(100).after(cursor))?;
        seen += n;
        cursor = next;
        if cursor.is_none() {
            return Ok((seen, t.elapsed().as_secs_f64()));
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("collections_perf: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Failure> {
    let mut args = std::env::args().skip(1);
    let mut n = 200_000usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--jobs" => n = args.next().ok_or("--jobs needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let jobs = store.collection::<Job>()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xca1a17);
    let sample = serde_json::to_vec(&job(0, &mut rng))?.len();
    let mut rows: Vec<(String, usize, f64, String)> = Vec::new();

    let all: Vec<Job> = (0..n).map(|i| job(i, &mut rng)).collect();
    let t = Instant::now();
    for chunk in all.chunks(TXN) {
        store.transaction(|tx| {
            for j in chunk {
                tx.insert(j)?;
            }
            Ok(())
        })?;
    }
    let s = t.elapsed().as_secs_f64();
    rows.push((
        format!("insert jobs, durable transactions of {TXN} ({sample}-byte documents, 6 indexes)"),
        n,
        s,
        rate(n, s),
    ));

    let q = Query::new().eq("status", "PENDING").order_by("priority").descending().limit(50);
    let t = Instant::now();
    for _ in 0..SCHEDULER_QUERIES {
        let page = jobs.query(&q)?;
        assert_eq!(page.records.len(), 50);
    }
    let s = t.elapsed().as_secs_f64();
    rows.push(("scheduler query: top 50 PENDING by priority".into(), SCHEDULER_QUERIES, s, rate(SCHEDULER_QUERIES, s)));

    let t = Instant::now();
    for _ in 0..SCHEDULER_QUERIES {
        let mut seen = 0;
        jobs.query_each(&q, |r| seen += usize::from(r.doc.status == JobStatus::Pending))?;
        assert_eq!(seen, 50);
    }
    let s = t.elapsed().as_secs_f64();
    rows.push((
        "scheduler query, each job visited as it is read (`query_each`)".into(),
        SCHEDULER_QUERIES,
        s,
        rate(SCHEDULER_QUERIES, s),
    ));

    let t = Instant::now();
    for _ in 0..GETS {
        let id = format!("job-{:08}", rng.gen_range(0..n));
        jobs.get(&id)?.ok_or("missing job")?;
    }
    let s = t.elapsed().as_secs_f64();
    rows.push(("get by id".into(), GETS, s, rate(GETS, s)));

    let (seen, s) = page_through(&Query::new().eq("owner", "user7"), |q| {
        let page = jobs.query(&q)?;
        Ok((page.records.len(), page.next_cursor))
    })?;
    rows.push((format!("page through one owner's jobs ({seen} jobs, 100 per page)"), seen, s, rate(seen, s)));

    // Conditions the index does not answer, checked on every record the index scan reads.
    let checked = [
        ("RUNNING jobs of project5", Query::new().eq("status", "RUNNING").eq("project", "project5")),
        ("RUNNING jobs of priority 990 or more", Query::new().eq("status", "RUNNING").filter("priority", Op::Ge, 990)),
    ];
    for (what, q) in &checked {
        let plan = jobs.explain(q)?;
        let (seen, s) = page_through(q, |q| {
            let mut n = 0;
            let next = jobs.query_each(&q, |_| n += 1)?;
            Ok((n, next))
        })?;
        let how = format!("index {}, {} checked", plan.index.unwrap_or_default(), plan.filtered.join(", "));
        rows.push((format!("page through {what} ({seen} jobs, 100 per page; {how})"), seen, s, rate(seen, s)));
    }
    // Counts: of every job (a full scan), and of the first checked query's matches.
    for (what, q) in [("every job", Query::new()), (checked[0].0, checked[0].1.clone())] {
        let t = Instant::now();
        let counted = usize::try_from(jobs.count(&q)?)?;
        let s = t.elapsed().as_secs_f64();
        rows.push((format!("count {what} ({counted})"), counted, s, rate(counted, s)));
    }
    // The same pages as JSON trees, as the server reads them.
    let (what, q) = &checked[0];
    let (seen, s) = page_through(q, |q| {
        let mut n = 0;
        let next = jobs.as_dyn().query_each(&q, |_| n += 1)?;
        Ok((n, next))
    })?;
    rows.push((format!("page through {what} as JSON trees (`DynCollection`)"), seen, s, rate(seen, s)));

    let claims = std::env::var("CLAIMS").ok().and_then(|v| v.parse().ok()).unwrap_or(CLAIMS);
    for threads in [1usize, 4] {
        let per = claims / threads;
        let t = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|w| {
                let jobs = jobs.clone();
                thread::spawn(move || -> Result<usize, cairn_store::CollectionError> {
                    let mut got = 0;
                    for _ in 0..per {
                        // A claim that lost every race (`Contended`) is tried again.
                        let claimed = loop {
                            match claim_next(&jobs, &format!("node-{w}"), 1_800_000_000_000, 600_000) {
                                Err(e) if e.is_retryable() => continue,
                                other => break other?,
                            }
                        };
                        if claimed.is_some() {
                            got += 1;
                        }
                    }
                    Ok(got)
                })
            })
            .collect();
        let mut claimed = 0;
        for w in workers {
            claimed += w.join().map_err(|_| "claimer panicked")??;
        }
        let s = t.elapsed().as_secs_f64();
        rows.push((format!("claim (version-checked update), {threads} thread(s)"), claimed, s, rate(claimed, s)));
    }

    let stats = store.db().stats();
    println!("\n- jobs: {n}; machine: {} CPUs", thread::available_parallelism().map_or(0, |p| p.get()));
    println!(
        "- tables: {} ({:.1} MiB), WAL syncs: {}, commits: {}\n",
        stats.table_count(),
        stats.table_bytes() as f64 / 1048576.0,
        stats.wal_syncs,
        stats.commits
    );
    println!("| workload | ops | time (s) | ops/s |");
    println!("|---|---:|---:|---:|");
    for (name, ops, secs, r) in rows {
        println!("| {name} | {ops} | {secs:.3} | {r} |");
    }
    Ok(())
}
