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
//!    tasks, each with its own keep-alive HTTP/1.1 connection (hyper's client connection, one request at a
//!    time, reopened after an error), task `i` on the `i % n`-th of the `n` URLs of `--url` (servers sharing
//!    one backend):
//!    - `get`: `GET /v1/collections/load_jobs/records/{id}` of random ids (each answer's `id` checked);
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
//! expected status counts as an error and is reported, and so does a record (GET, PUT) answered for another
//! id than the one asked. `--backend` only labels the output. The client is lean on purpose: it shares the
//! cores with the server it measures.

use std::borrow::Cow;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, IF_MATCH};
use hyper::{Method, Request, StatusCode};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
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
    serde_json::to_value(Job::new(i, priority)).unwrap_or_default()
}

/// The job document of record `i`, serialized as [`doc`] would be (its fields in the order of a JSON
/// object's keys) without building a `Value` first.
#[derive(Serialize)]
struct Job {
    name: String,
    owner: &'static str,
    priority: u64,
    project: &'static str,
    resources: Resources,
    status: &'static str,
    submitted_at: u64,
}

#[derive(Serialize)]
struct Resources {
    gpus: u32,
    memory_gb: u32,
}

impl Job {
    fn new(i: usize, priority: u64) -> Self {
        Self {
            name: format!("train-resnet50-{i}"),
            owner: "alice",
            priority,
            project: "vision",
            resources: Resources { gpus: 4, memory_gb: 64 },
            status: "PENDING",
            submitted_at: 1_767_225_600_000u64 + i as u64,
        }
    }

    fn bytes(i: usize, priority: u64) -> Vec<u8> {
        serde_json::to_vec(&Self::new(i, priority)).unwrap_or_default()
    }
}

/// What the record routes answer, as far as the load checks it.
#[derive(Deserialize)]
struct RecordHead<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    version: u64,
}

/// The record answered in `body`, if it is the record `want`: its version.
fn record_version(body: &[u8], want: &str) -> Result<u64, String> {
    let head: RecordHead<'_> = serde_json::from_slice(body).map_err(|e| format!("unreadable record: {e}"))?;
    if head.id != want {
        return Err(format!("asked for {want}, answered {}", head.id));
    }
    Ok(head.version)
}

/// One server: where to connect, and what every request to it carries.
struct Server {
    /// `host:port`.
    authority: String,
    /// What precedes each path (a URL's own path, usually empty).
    prefix: String,
    host: HeaderValue,
    token: Option<HeaderValue>,
}

impl Server {
    fn new(url: &str, token: Option<&str>) -> Result<Self, Failure> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let token = token.map(|t| HeaderValue::from_str(&format!("Bearer {t}"))).transpose()?;
        let host = HeaderValue::from_str(authority)?;
        Ok(Self { authority: authority.to_owned(), prefix: prefix.to_owned(), host, token })
    }
}

/// A task's own keep-alive connection to one server, opened on first use and again after an error.
struct Client {
    server: Arc<Server>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    fn new(server: Arc<Server>) -> Self {
        Self { server, sender: None }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = tokio::net::TcpStream::connect(&self.server.authority).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// Sends one request and reads its answer to the end: the status and the body.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        if_match: Option<u64>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        let mut req = Request::builder().method(method).header(HOST, self.server.host.clone());
        req = if self.server.prefix.is_empty() {
            req.uri(path)
        } else {
            req.uri(format!("{}{path}", self.server.prefix))
        };
        if let Some(t) = &self.server.token {
            req = req.header(AUTHORIZATION, t.clone());
        }
        if let Some(v) = if_match {
            req = req.header(IF_MATCH, format!("\"{v}\""));
        }
        if body.is_some() {
            req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let req = req.body(Full::new(body.map(Bytes::from).unwrap_or_default()))?;
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        // Only a connection that carried its exchange to the end is used again.
        self.sender = Some(sender);
        Ok((status, body))
    }

    async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes), Failure> {
        self.send(Method::GET, path, None, None).await
    }

    async fn post(&mut self, path: &str, body: &Value) -> Result<(StatusCode, Bytes), Failure> {
        self.send(Method::POST, path, None, Some(serde_json::to_vec(body)?)).await
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
async fn setup(c: &mut Client, collection: &str, records: usize) -> Result<(), Failure> {
    let spec = json!({"name": collection, "indexes": [{"name": "status_priority", "fields": ["status", "priority"]}]});
    let (status, body) = c.post("/v1/collections", &spec).await?;
    if !status.is_success() {
        return Err(format!("declaring {collection}: {status} {}", String::from_utf8_lossy(&body)).into());
    }
    let start = Instant::now();
    for first in (0..records).step_by(LOAD_BATCH) {
        let ops: Vec<Value> = (first..(first + LOAD_BATCH).min(records))
            .map(|i| json!({"op": "put", "collection": collection, "id": id(i), "document": doc(i, (i % 1000) as u64)}))
            .collect();
        let (status, body) = c.post("/v1/transactions", &json!({"operations": ops})).await?;
        if !status.is_success() {
            return Err(format!("loading {collection}: {status} {}", String::from_utf8_lossy(&body)).into());
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
async fn timed(
    t: &mut Tally,
    c: &mut Client,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    expect: u16,
    what: &str,
) -> Option<Bytes> {
    let start = Instant::now();
    match c.send(method, path, None, body).await {
        Ok((status, body)) if status == expect => {
            t.micros.push(start.elapsed().as_micros() as u32);
            Some(body)
        }
        Ok((status, _)) => {
            t.error(format!("{what} answered {status}"));
            None
        }
        Err(e) => {
            t.error(e.to_string());
            None
        }
    }
}

fn record_path(i: usize) -> String {
    format!("/v1/collections/{COLLECTION}/records/{}", id(i))
}

async fn upsert_task(mut c: Client, owned: Vec<usize>, until: Instant, seed: u64) -> Tally {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = Tally::default();
    while Instant::now() < until && !owned.is_empty() {
        let i = owned[rng.gen_range(0..owned.len())];
        let body = Job::bytes(i, rng.gen_range(0..1000));
        let start = Instant::now();
        match c.send(Method::PUT, &record_path(i), None, Some(body)).await {
            Ok((StatusCode::OK, body)) => match record_version(&body, &id(i)) {
                Ok(_) => t.micros.push(start.elapsed().as_micros() as u32),
                Err(e) => t.error(e),
            },
            Ok((status, _)) => t.error(format!("PUT answered {status}")),
            Err(e) => t.error(e.to_string()),
        }
    }
    t
}

async fn list_task(mut c: Client, until: Instant) -> Tally {
    let mut t = Tally::default();
    let path = format!("/v1/collections/{COLLECTION}/records?status=PENDING&order_by=priority&order=desc&limit=50");
    while Instant::now() < until {
        timed(&mut t, &mut c, Method::GET, &path, None, 200, "list").await;
    }
    t
}

async fn transaction_task(mut c: Client, owned: Vec<usize>, until: Instant, seed: u64) -> Tally {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = Tally::default();
    while Instant::now() < until && !owned.is_empty() {
        let ops: Vec<Value> = (0..2)
            .map(|_| {
                let i = owned[rng.gen_range(0..owned.len())];
                json!({"op": "put", "collection": COLLECTION, "id": id(i), "document": doc(i, rng.gen_range(0..1000))})
            })
            .collect();
        let body = serde_json::to_vec(&json!({"operations": ops})).unwrap_or_default();
        timed(&mut t, &mut c, Method::POST, "/v1/transactions", Some(body), 200, "transaction").await;
    }
    t
}

/// Enqueues `jobs` jobs into the job queue [`JOB_QUEUE`], in batches of 1,000.
async fn setup_job_queue(c: &mut Client, jobs: usize) -> Result<(), Failure> {
    let start = Instant::now();
    for first in (0..jobs).step_by(1000) {
        let batch: Vec<Value> = (first..(first + 1000).min(jobs))
            .map(|i| json!({"queue": JOB_QUEUE, "kind": "train", "payload": doc(i, 0), "priority": (i % 10) as u8}))
            .collect();
        let (status, body) = c.post("/v1/queue/jobs/batch", &json!({"jobs": batch})).await?;
        if !status.is_success() {
            return Err(format!("enqueueing: {status} {}", String::from_utf8_lossy(&body)).into());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("enqueued {jobs} jobs into queue {JOB_QUEUE} in {secs:.2} s ({:.0} jobs/s)", jobs as f64 / secs);
    Ok(())
}

/// Full cycles of the job queue until `until` or until it is empty: claims of up to `batch` jobs, then
/// their completion (one request per job with `batch` 1, one for all of them otherwise). Each job completed
/// counts once, with the latency of its claim and completion.
async fn queue_task(mut c: Client, until: Instant, w: usize, batch: usize) -> Tally {
    let mut t = Tally::default();
    let claim = json!({"queues": [JOB_QUEUE], "worker": format!("load-{w}"), "lease_ms": 60_000, "limit": batch});
    let claim = serde_json::to_vec(&claim).unwrap_or_default();
    while Instant::now() < until {
        let start = Instant::now();
        let mut scratch = Tally::default();
        let claimed =
            timed(&mut scratch, &mut c, Method::POST, "/v1/queue/claim", Some(claim.clone()), 200, "claim").await;
        let Some(claimed) = claimed.map(|b| serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null)) else {
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
            let body = serde_json::to_vec(&json!({"token": jobs[0]["token"]})).unwrap_or_default();
            timed(&mut scratch, &mut c, Method::POST, &path, Some(body), 200, "complete").await.is_some()
        } else {
            let ids: Vec<Value> = jobs.iter().map(|j| json!({"id": j["id"], "token": j["token"]})).collect();
            let body = serde_json::to_vec(&json!({"jobs": ids})).unwrap_or_default();
            match timed(&mut scratch, &mut c, Method::POST, "/v1/queue/complete", Some(body), 200, "complete").await {
                Some(body) => {
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
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
async fn claim_task(mut c: Client, until: Instant, w: usize) -> Tally {
    let mut t = Tally::default();
    let body = json!({"where": {"status": "PENDING"}, "order_by": "priority", "order": "desc",
                      "set": {"status": "RUNNING", "node": format!("load-{w}")}});
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let path = format!("/v1/collections/{QUEUE}/claim");
    while Instant::now() < until {
        let start = Instant::now();
        match c.send(Method::POST, &path, None, Some(body.clone())).await {
            Ok((StatusCode::OK, _)) => t.micros.push(start.elapsed().as_micros() as u32),
            Ok((StatusCode::NO_CONTENT, _)) => break,
            Ok((status, _)) => t.error(format!("claim answered {status}")),
            Err(e) => t.error(e.to_string()),
        }
    }
    t
}

async fn get_task(mut c: Client, records: usize, until: Instant, seed: u64) -> Tally {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = Tally::default();
    while Instant::now() < until {
        let i = rng.gen_range(0..records);
        let start = Instant::now();
        match c.get(&record_path(i)).await {
            Ok((StatusCode::OK, body)) => match record_version(&body, &id(i)) {
                Ok(_) => t.micros.push(start.elapsed().as_micros() as u32),
                Err(e) => t.error(e),
            },
            Ok((status, _)) => t.error(format!("GET answered {status}")),
            Err(e) => t.error(e.to_string()),
        }
    }
    t
}

async fn put_task(mut c: Client, owned: Vec<usize>, until: Instant, seed: u64) -> Tally {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = Tally::default();
    let mut versions: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
    while Instant::now() < until && !owned.is_empty() {
        let i = owned[rng.gen_range(0..owned.len())];
        let path = record_path(i);
        let version = match versions.get(&i) {
            Some(v) => *v,
            None => match c.get(&path).await {
                Ok((StatusCode::OK, body)) => match record_version(&body, &id(i)) {
                    Ok(v) => v,
                    Err(e) => {
                        t.error(e);
                        continue;
                    }
                },
                Ok((status, _)) => {
                    t.error(format!("GET answered {status}"));
                    continue;
                }
                Err(e) => {
                    t.error(e.to_string());
                    continue;
                }
            },
        };
        let body = Job::bytes(i, rng.gen_range(0..1000));
        let start = Instant::now();
        match c.send(Method::PUT, &path, Some(version), Some(body)).await {
            Ok((StatusCode::OK, body)) => match record_version(&body, &id(i)) {
                Ok(v) => {
                    t.micros.push(start.elapsed().as_micros() as u32);
                    versions.insert(i, v);
                }
                Err(e) => t.error(e),
            },
            Ok((status, _)) => {
                versions.remove(&i);
                t.error(format!("PUT answered {status}"));
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
/// Task `w` has a connection of its own to the `w % n`-th server, opened before the clock starts.
async fn workload<F, Fut>(name: &str, args: &Args, servers: &[Arc<Server>], task: F) -> Result<(), Failure>
where
    F: Fn(usize, Client, Instant) -> Fut,
    Fut: std::future::Future<Output = Tally> + Send + 'static,
{
    let mut clients = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        let mut c = Client::new(servers[w % servers.len()].clone());
        c.sender = Some(c.connect().await?);
        clients.push(c);
    }
    let start = Instant::now();
    let until = start + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = clients.into_iter().enumerate().map(|(w, c)| tokio::spawn(task(w, c, until))).collect();
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await?);
    }
    report(name, total, start.elapsed());
    Ok(())
}

async fn run(args: Args) -> Result<(), Failure> {
    let servers =
        args.urls.iter().map(|u| Server::new(u, args.token.as_deref()).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
    let mut setup_client = Client::new(servers[0].clone());
    let wants = |w: &str| args.workloads.iter().any(|x| x == w);
    setup(&mut setup_client, COLLECTION, args.records).await?;
    if wants("claim") {
        setup(&mut setup_client, QUEUE, args.queue).await?;
    }
    let queue_runs = usize::from(wants("queue")) + usize::from(wants("queue-batch"));
    if queue_runs > 0 {
        setup_job_queue(&mut setup_client, args.queue * queue_runs).await?;
    }
    println!();
    println!(
        "{}{} server(s), {} concurrent connections, {} s per workload, {} records",
        args.backend.as_ref().map_or(String::new(), |b| format!("backend {b}, ")),
        servers.len(),
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
                workload("GET by id", &args, &servers, |w, c, until| get_task(c, records, until, w as u64)).await?
            }
            "upsert" => {
                workload("PUT upsert", &args, &servers, |w, c, until| upsert_task(c, owned(w), until, 500 + w as u64))
                    .await?
            }
            "if-match" => {
                workload("PUT with If-Match", &args, &servers, |w, c, until| {
                    put_task(c, owned(w), until, 1000 + w as u64)
                })
                .await?
            }
            "list" => workload("list page (50)", &args, &servers, |_, c, until| list_task(c, until)).await?,
            "transaction" => {
                workload("transaction (2 puts)", &args, &servers, |w, c, until| {
                    transaction_task(c, owned(w), until, 2000 + w as u64)
                })
                .await?
            }
            "claim" => workload("claim", &args, &servers, |w, c, until| claim_task(c, until, w)).await?,
            "queue" => {
                workload("queue cycle (claim, complete)", &args, &servers, |w, c, until| queue_task(c, until, w, 1))
                    .await?
            }
            "queue-batch" => {
                let (batch, name) = (args.queue_batch, format!("queue cycle, batches of {}", args.queue_batch));
                workload(&name, &args, &servers, |w, c, until| queue_task(c, until, w, batch)).await?
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
