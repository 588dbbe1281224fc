//! `http_load`: load on a running `cairn serve` over HTTP, printed as a markdown table.
//!
//! ```text
//! cargo run --release -p cairn-server -- serve --data /tmp/cairn-load &
//! cargo run --release -p cairn-bench --bin http_load -- [--url http://127.0.0.1:7070] [--records 10000]
//!     [--concurrency 64] [--seconds 10] [--token TOKEN]
//! ```
//!
//! 1. declares the `load_jobs` collection (index `(status, priority)`) and loads `--records` job documents
//!    (about 200 bytes each) in transactions of 500;
//! 2. `GET /v1/collections/load_jobs/records/{id}` of random ids from `--concurrency` tasks, each with its own
//!    connection, for `--seconds`;
//! 3. `PUT` of the same records with `If-Match: "<version>"`, each task owning its own ids (so every
//!    precondition should hold), for `--seconds`.
//!
//! Reports requests per second and the latency percentiles seen by the client. Any answer other than the
//! expected status counts as an error and is reported.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const COLLECTION: &str = "load_jobs";
const LOAD_BATCH: usize = 500;

type Failure = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    url: String,
    records: usize,
    concurrency: usize,
    seconds: u64,
    token: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args =
        Args { url: "http://127.0.0.1:7070".into(), records: 10_000, concurrency: 64, seconds: 10, token: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{flag} needs a number, not {v:?}"));
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--records" => args.records = number(value()?)? as usize,
            "--concurrency" => args.concurrency = number(value()?)? as usize,
            "--seconds" => args.seconds = number(value()?)?,
            "--token" => args.token = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.records == 0 || args.concurrency == 0 || args.seconds == 0 {
        return Err("--records, --concurrency and --seconds must be at least 1".into());
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

async fn setup(c: &Client, records: usize) -> Result<(), Failure> {
    let spec = json!({"name": COLLECTION, "indexes": [{"name": "status_priority", "fields": ["status", "priority"]}]});
    let r = c.req(reqwest::Method::POST, "/v1/collections").json(&spec).send().await?;
    if !r.status().is_success() {
        return Err(format!("declaring {COLLECTION}: {} {}", r.status(), r.text().await?).into());
    }
    let start = Instant::now();
    for first in (0..records).step_by(LOAD_BATCH) {
        let ops: Vec<Value> = (first..(first + LOAD_BATCH).min(records))
            .map(|i| json!({"op": "put", "collection": COLLECTION, "id": id(i), "document": doc(i, (i % 1000) as u64)}))
            .collect();
        let r = c.req(reqwest::Method::POST, "/v1/transactions").json(&json!({"operations": ops})).send().await?;
        if !r.status().is_success() {
            return Err(format!("loading: {} {}", r.status(), r.text().await?).into());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "loaded {records} records in {secs:.2} s ({:.0} records/s, transactions of {LOAD_BATCH})",
        records as f64 / secs
    );
    Ok(())
}

async fn get_task(c: std::sync::Arc<Client>, records: usize, until: Instant, seed: u64) -> Tally {
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

async fn put_task(c: std::sync::Arc<Client>, owned: Vec<usize>, until: Instant, seed: u64) -> Tally {
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

async fn run(args: Args) -> Result<(), Failure> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let c = std::sync::Arc::new(Client {
        http,
        base: args.url.trim_end_matches('/').to_owned(),
        token: args.token.clone(),
    });
    setup(&c, args.records).await?;
    println!();
    println!("{} concurrent connections, {} s per workload, {} records", args.concurrency, args.seconds, args.records);
    println!();
    println!("| workload | requests | requests/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let duration = Duration::from_secs(args.seconds);

    let start = Instant::now();
    let until = start + duration;
    let tasks: Vec<_> =
        (0..args.concurrency).map(|w| tokio::spawn(get_task(c.clone(), args.records, until, w as u64))).collect();
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await?);
    }
    report("GET by id", total, start.elapsed());

    let start = Instant::now();
    let until = start + duration;
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let owned: Vec<usize> = (w..args.records).step_by(args.concurrency).collect();
            tokio::spawn(put_task(c.clone(), owned, until, 1000 + w as u64))
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await?);
    }
    report("PUT with If-Match", total, start.elapsed());
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
