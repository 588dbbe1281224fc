//! `http_load`: load on one or several running `cairn serve` over HTTP, printed as a markdown table.
//!
//! ```text
//! cargo run --release -p cairn-server -- serve --data /tmp/cairn-load &
//! cargo run --release -p cairn-bench --bin http_load -- [--url http://127.0.0.1:7070[,URL...]]
//!     [--backend NAME] [--records 10000] [--queue 20000] [--concurrency 64] [--seconds 10]
//!     [--workloads get,upsert,if-match,list,transaction,claim,queue,queue-batch] [--queue-batch 10]
//!     [--token TOKEN]
//! ```
//!
//! 1. declares the `load_jobs` collection (index `(status, priority)`) and loads `--records` job documents
//!    (about 200 bytes each) in transactions of 500;
//! 2. runs each workload of `--workloads` (default: all, in this order) for `--seconds` from `--concurrency`
//!    tasks, each with its own connection, task `i` on the `i % n`-th of the `n` URLs of `--url` (servers
//!    sharing one backend):
//!    - `get`: `GET /v1/collections/load_jobs/records/{id}` of random ids;
//!    - `upsert`: `PUT` without precondition of random ids among the task's own;
//!    - `if-match`: `PUT` with `If-Match: "<version>"`, each task owning its ids (so every precondition should
//!      hold);
//!    - `list`: the first page (50 records) of `status=PENDING&order_by=priority&order=desc`;
//!    - `transaction`: `POST /v1/transactions` putting two of the task's own records;
//!    - `claim`: `POST /v1/collections/load_queue/claim` of the most urgent PENDING record of `load_queue`
//!      (`--queue` records loaded before it, each claimed once; the workload ends early if they run out);
//!    - `queue`: full cycles of the job queue: `POST /v1/queue/claim` of one job of queue `load` (lease
//!      60 s), then `POST /v1/queue/jobs/{id}/complete` with its token (`--queue` jobs enqueued before it, in
//!      batches of 1,000; the workload ends early if they run out);
//!    - `queue-batch`: the same with claims of up to `--queue-batch` jobs (default 10) and their completion
//!      in one `POST /v1/queue/complete`.
//!
//! Reports requests per second and the latency percentiles seen by the client (for `queue` and
//! `queue-batch`: full cycles, one per job completed, and the latency of claim plus completion). Any answer other than the
//! expected status counts as an error and is reported. `--backend` only labels the output.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const COLLECTION: &str = "load_jobs";
const QUEUE: &str = "load_queue";
const WORKLOADS: [&str; 8] = ["get", "upsert", "if-match", "list", "transaction", "claim", "queue", "queue-batch"];
/// The job queue the `queue` workloads use.
const JOB_QUEUE: &str = "load";
const LOAD_BATCH: usize = 500;

type Failure = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    urls: Vec<String>,
    backend: Option<String>,
    records: usize,
    queue: usize,
    queue_batch: usize,
    workloads: Vec<String>,
    concurrency: usize,
    seconds: u64,
    token: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        urls: vec!["http://127.0.0.1:7070".into()],
        backend: None,
        records: 10_000,
        queue: 20_000,
        queue_batch: 10,
        workloads: WORKLOADS.iter().map(|w| (*w).to_owned()).collect(),
        concurrency: 64,
        seconds: 10,
        token: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{flag} needs a number, not {v:?}"));
        match flag.as_str() {
            "--url" => args.urls = value()?.split(',').map(|u| u.trim_end_matches('/').to_owned()).collect(),
            "--backend" => args.backend = Some(value()?),
            "--records" => args.records = number(value()?)? as usize,
            "--queue" => args.queue = number(value()?)? as usize,
            "--queue-batch" => args.queue_batch = number(value()?)?.clamp(1, 1000) as usize,
            "--workloads" => args.workloads = value()?.split(',').map(str::to_owned).collect(),
            "--concurrency" => args.concurrency = number(value()?)? as usize,
            "--seconds" => args.seconds = number(value()?)?,
            "--token" => args.token = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.records == 0 || args.concurrency == 0 || args.seconds == 0 {
        return Err("--records, --concurrency and --seconds must be at least 1".into());
    }
    if let Some(w) = args.workloads.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
        return Err(format!("unknown workload {w:?} (known: {})", WORKLOADS.join(",")));
    }
    if args.urls.iter().any(String::is_empty) {
        return Err("--url needs one or more URLs, separated by commas".into());
    }
    Ok(args)
}

fn id(i: usize) -> String {
    format!("job-{i:08}")
}

fn doc(i: usize, priority: u64) -> Value {
    json!({
        "name": format!("train-resnet50-{i}"),
        "owner": "alice",
        "project": "vision",
        "status": "PENDING",
        "priority": priority,
        "resources": {"gpus": 4, "memory_gb": 64},
        "submitted_at": 1_767_225_600_000u64 + i as u64,
    })
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }
}

/// What one task measured: latencies in microseconds, and errors.
#[derive(Default)]
struct Tally {
    micros: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

/// Declares `collection` (index `(status, priority)`) and loads `records` PENDING jobs into it.
async fn setup(c: &Client, collection: &str, records: usize) -> Result<(), Failure> {
    let spec = json!({"name": collection, "indexes": [{"name": "status_priority", "fields": ["status", "priority"]}]});
    let r = c.req(reqwest::Method::POST, "/v1/collections").json(&spec).send().await?;
    if !r.status().is_success() {
        return Err(format!("declaring {collection}: {} {}", r.status(), r.text().await?).into());
    }
    let start = Instant::now();
    for first in (0..records).step_by(LOAD_BATCH) {
        let ops: Vec<Value> = (first..(first + LOAD_BATCH).min(records))
            .map(|i| json!({"op": "put", "collection": collection, "id": id(i), "document": doc(i, (i % 1000) as u64)}))
            .collect();
        let r = c.req(reqwest::Method::POST, "/v1/transactions").json(&json!({"operations": ops})).send().await?;
        if !r.status().is_success() {
            return Err(format!("loading {collection}: {} {}", r.status(), r.text().await?).into());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "loaded {records} records into {collection} in {secs:.2} s ({:.0} records/s, transactions of {LOAD_BATCH})",
        records as f64 / secs
    );
    Ok(())
}

/// Sends one request and checks its status: its latency is counted, anything else is an error. The body is
/// read to its end (and returned).
async fn timed(t: &mut Tally, req: reqwest::RequestBuilder, expect: u16, what: &str) -> Option<Value> {
    let start = Instant::now();
    match req.send().await {
        Ok(r) if r.status() == expect => match r.bytes().await {
            Ok(body) => {
                t.micros.push(start.elapsed().as_micros() as u32);
                Some(serde_json::from_slice(&body).unwrap_or(Value::Null))
            }
            Err(e) => {
                t.error(e.to_string());
                None
            }
        },
        Ok(r) => {
            t.error(format!("{what} answered {}", r.status()));
            None
        }
        Err(e) => {
            t.error(e.to_string());
            None
        }
    }
}

async fn upsert_task(c: Arc<Client>, owned: Vec<usize>, until: Instant, seed: u64) -> Tally {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = Tally::default();
    while Instant::now() < until && !owned.is_empty() {
        let i = owned[rng.gen_range(0..owned.len())];
        let path = format!("/v1/collections/{COLLECTION}/records/{}", id(i));
        let req = c.req(reqwest::Method::PUT, &path).json(&doc(i, rng.gen_range(0..1000)));
        timed(&mut t, req, 200, "PUT").await;
    }
    t
}

async fn list_task(c: Arc<Client>, until: Instant) -> Tally {
    let mut t = Tally::default();
    let path = format!("/v1/collections/{COLLECTION}/records?status=PENDING&order_by=priority&order=desc&limit=50");
    while Instant::now() < until {
        timed(&mut t, c.req(reqwest::Method::GET, &path), 200, "list").await;
    }
    t
}

async fn transaction_task(c: Arc<Client>, owned: Vec<usize>, until: Instant, seed: u64) -> Tally {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = Tally::default();
    while Instant::now() < until && !owned.is_empty() {
        let ops: Vec<Value> = (0..2)
            .map(|_| {
                let i = owned[rng.gen_range(0..owned.len())];
                json!({"op": "put", "collection": COLLECTION, "id": id(i), "document": doc(i, rng.gen_range(0..1000))})
            })
            .collect();
        let req = c.req(reqwest::Method::POST, "/v1/transactions").json(&json!({"operations": ops}));
        timed(&mut t, req, 200, "transaction").await;
    }
    t
}

/// Enqueues `jobs` jobs into the job queue [`JOB_QUEUE`], in batches of 1,000.
async fn setup_job_queue(c: &Client, jobs: usize) -> Result<(), Failure> {
    let start = Instant::now();
    for first in (0..jobs).step_by(1000) {
        let batch: Vec<Value> = (first..(first + 1000).min(jobs))
            .map(|i| json!({"queue": JOB_QUEUE, "kind": "train", "payload": doc(i, 0), "priority": (i % 10) as u8}))
            .collect();
        let r = c.req(reqwest::Method::POST, "/v1/queue/jobs/batch").json(&json!({"jobs": batch})).send().await?;
        if !r.status().is_success() {
            return Err(format!("enqueueing: {} {}", r.status(), r.text().await?).into());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("enqueued {jobs} jobs into queue {JOB_QUEUE} in {secs:.2} s ({:.0} jobs/s)", jobs as f64 / secs);
    Ok(())
}

/// Full cycles of the job queue until `until` or until it is empty: claims of up to `batch` jobs, then
/// their completion (one request per job with `batch` 1, one for all of them otherwise). Each job completed
/// counts once, with the latency of its claim and completion.
async fn queue_task(c: Arc<Client>, until: Instant, w: usize, batch: usize) -> Tally {
    let mut t = Tally::default();
    let claim = json!({"queues": [JOB_QUEUE], "worker": format!("load-{w}"), "lease_ms": 60_000, "limit": batch});
    while Instant::now() < until {
        let start = Instant::now();
        let mut scratch = Tally::default();
        let Some(claimed) =
            timed(&mut scratch, c.req(reqwest::Method::POST, "/v1/queue/claim").json(&claim), 200, "claim").await
        else {
            scratch.micros.clear();
            t.merge(scratch);
            continue;
        };
        let jobs = claimed["jobs"].as_array().cloned().unwrap_or_default();
        if jobs.is_empty() {
            break;
        }
        let done = if batch == 1 {
            let path = format!("/v1/queue/jobs/{}/complete", jobs[0]["id"]);
            let req = c.req(reqwest::Method::POST, &path).json(&json!({"token": jobs[0]["token"]}));
            timed(&mut scratch, req, 200, "complete").await.is_some()
        } else {
            let ids: Vec<Value> = jobs.iter().map(|j| json!({"id": j["id"], "token": j["token"]})).collect();
            let req = c.req(reqwest::Method::POST, "/v1/queue/complete").json(&json!({"jobs": ids}));
            match timed(&mut scratch, req, 200, "complete").await {
                Some(body) => {
                    let refused =
                        body["results"].as_array().map_or(0, |r| r.iter().filter(|x| x.get("error").is_some()).count());
                    if refused > 0 {
                        scratch.error(format!("{refused} completions refused"));
                    }
                    true
                }
                None => false,
            }
        };
        if done {
            let micros = start.elapsed().as_micros() as u32;
            t.micros.extend(std::iter::repeat_n(micros, jobs.len()));
        }
        // The requests' own latencies are not reported, only the cycles'.
        scratch.micros.clear();
        t.merge(scratch);
    }
    t
}

/// Claims until `until` or until the queue is empty (204); 503 (every candidate's race lost) is an error.
async fn claim_task(c: Arc<Client>, until: Instant, w: usize) -> Tally {
    let mut t = Tally::default();
    let body = json!({"where": {"status": "PENDING"}, "order_by": "priority", "order": "desc",
                      "set": {"status": "RUNNING", "node": format!("load-{w}")}});
    let path = format!("/v1/collections/{QUEUE}/claim");
    while Instant::now() < until {
        let start = Instant::now();
        match c.req(reqwest::Method::POST, &path).json(&body).send().await {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(_) => t.micros.push(start.elapsed().as_micros() as u32),
                Err(e) => t.error(e.to_string()),
            },
            Ok(r) if r.status() == 204 => break,
            Ok(r) => t.error(format!("claim answered {}", r.status())),
            Err(e) => t.error(e.to_string()),
        }
    }
    t
}

async fn get_task(c: Arc<Client>, records: usize, until: Instant, seed: u64) -> Tally {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = Tally::default();
    while Instant::now() < until {
        let path = format!("/v1/collections/{COLLECTION}/records/{}", id(rng.gen_range(0..records)));
        let start = Instant::now();
        match c.req(reqwest::Method::GET, &path).send().await {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(_) => t.micros.push(start.elapsed().as_micros() as u32),
                Err(e) => t.error(e.to_string()),
            },
            Ok(r) => t.error(format!("GET answered {}", r.status())),
            Err(e) => t.error(e.to_string()),
        }
    }
    t
}

async fn put_task(c: Arc<Client>, owned: Vec<usize>, until: Instant, seed: u64) -> Tally {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = Tally::default();
    let mut versions: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
    while Instant::now() < until && !owned.is_empty() {
        let i = owned[rng.gen_range(0..owned.len())];
        let path = format!("/v1/collections/{COLLECTION}/records/{}", id(i));
        let version = match versions.get(&i) {
            Some(v) => *v,
            None => match c.req(reqwest::Method::GET, &path).send().await {
                Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                    Ok(v) => v["version"].as_u64().unwrap_or(0),
                    Err(e) => {
                        t.error(e.to_string());
                        continue;
                    }
                },
                Ok(r) => {
                    t.error(format!("GET answered {}", r.status()));
                    continue;
                }
                Err(e) => {
                    t.error(e.to_string());
                    continue;
                }
            },
        };
        let start = Instant::now();
        let sent = c
            .req(reqwest::Method::PUT, &path)
            .header("If-Match", format!("\"{version}\""))
            .json(&doc(i, rng.gen_range(0..1000)))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                Ok(v) => {
                    t.micros.push(start.elapsed().as_micros() as u32);
                    versions.insert(i, v["version"].as_u64().unwrap_or(0));
                }
                Err(e) => t.error(e.to_string()),
            },
            Ok(r) => {
                versions.remove(&i);
                t.error(format!("PUT answered {}", r.status()));
            }
            Err(e) => t.error(e.to_string()),
        }
    }
    t
}

fn report(name: &str, mut t: Tally, elapsed: Duration) {
    t.micros.sort_unstable();
    let pct = |p: f64| -> f64 {
        let i = ((t.micros.len() as f64 * p).ceil() as usize).saturating_sub(1);
        t.micros.get(i).map_or(0.0, |m| f64::from(*m) / 1000.0)
    };
    let rps = t.micros.len() as f64 / elapsed.as_secs_f64();
    println!(
        "| {name} | {} | {rps:.0} | {:.2} | {:.2} | {:.2} | {} |",
        t.micros.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        t.errors
    );
    if let Some(e) = t.first_error {
        println!("first error of {name}: {e}");
    }
}

/// Runs `task(w, client of task w)` for the `--concurrency` tasks, for `--seconds`, and reports the total.
async fn workload<F, Fut>(name: &str, args: &Args, clients: &[Arc<Client>], task: F) -> Result<(), Failure>
where
    F: Fn(usize, Arc<Client>, Instant) -> Fut,
    Fut: std::future::Future<Output = Tally> + Send + 'static,
{
    let start = Instant::now();
    let until = start + Duration::from_secs(args.seconds);
    let tasks: Vec<_> =
        (0..args.concurrency).map(|w| tokio::spawn(task(w, clients[w % clients.len()].clone(), until))).collect();
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await?);
    }
    report(name, total, start.elapsed());
    Ok(())
}

async fn run(args: Args) -> Result<(), Failure> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let clients: Vec<Arc<Client>> = args
        .urls
        .iter()
        .map(|u| Arc::new(Client { http: http.clone(), base: u.clone(), token: args.token.clone() }))
        .collect();
    let wants = |w: &str| args.workloads.iter().any(|x| x == w);
    setup(&clients[0], COLLECTION, args.records).await?;
    if wants("claim") {
        setup(&clients[0], QUEUE, args.queue).await?;
    }
    let queue_runs = usize::from(wants("queue")) + usize::from(wants("queue-batch"));
    if queue_runs > 0 {
        setup_job_queue(&clients[0], args.queue * queue_runs).await?;
    }
    println!();
    println!(
        "{}{} server(s), {} concurrent connections, {} s per workload, {} records",
        args.backend.as_ref().map_or(String::new(), |b| format!("backend {b}, ")),
        clients.len(),
        args.concurrency,
        args.seconds,
        args.records
    );
    println!();
    println!("| workload | requests | requests/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let (records, concurrency) = (args.records, args.concurrency);
    let owned = move |w: usize| -> Vec<usize> { (w..records).step_by(concurrency).collect() };
    for name in &args.workloads {
        match name.as_str() {
            "get" => {
                workload("GET by id", &args, &clients, |w, c, until| get_task(c, records, until, w as u64)).await?
            }
            "upsert" => {
                workload("PUT upsert", &args, &clients, |w, c, until| upsert_task(c, owned(w), until, 500 + w as u64))
                    .await?
            }
            "if-match" => {
                workload("PUT with If-Match", &args, &clients, |w, c, until| {
                    put_task(c, owned(w), until, 1000 + w as u64)
                })
                .await?
            }
            "list" => workload("list page (50)", &args, &clients, |_, c, until| list_task(c, until)).await?,
            "transaction" => {
                workload("transaction (2 puts)", &args, &clients, |w, c, until| {
                    transaction_task(c, owned(w), until, 2000 + w as u64)
                })
                .await?
            }
            "claim" => workload("claim", &args, &clients, |w, c, until| claim_task(c, until, w)).await?,
            "queue" => {
                workload("queue cycle (claim, complete)", &args, &clients, |w, c, until| queue_task(c, until, w, 1))
                    .await?
            }
            "queue-batch" => {
                let (batch, name) = (args.queue_batch, format!("queue cycle, batches of {}", args.queue_batch));
                workload(&name, &args, &clients, |w, c, until| queue_task(c, until, w, batch)).await?
            }
            other => return Err(format!("unknown workload {other}").into()),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("http_load: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("http_load: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_load: {e}");
            ExitCode::FAILURE
        }
    }
}
