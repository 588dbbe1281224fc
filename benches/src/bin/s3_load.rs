//! `s3_load`: S3 workloads against a running S3 endpoint (Cairn's `cairn serve` S3 listener, or a peer
//! such as s3s-fs or moto's server), printed as a markdown table; run by `benches/s3-peers.sh`.
//!
//! ```text
//! cargo run --release -p cairn-bench --bin s3_load -- --endpoint http://127.0.0.1:9000 [--name NAME]
//!     [--bucket bench] [--access-key KEY --secret-key SECRET] [--concurrency 16] [--seconds 5]
//!     [--list-keys 100000] [--delete-keys 10000] [--workloads put-4k,get-4k,put-1m,get-1m,put-64m,get-64m,list,delete]
//! ```
//!
//! Workloads, in this order (each on objects of its own, in the bucket created first with a plain
//! `PUT /bucket`):
//! - `put-4k` / `get-4k`: PUT, then GET, of 4 KiB objects from `--concurrency` tasks for `--seconds` each:
//!   operations per second and the client's p50 and p99 latency;
//! - `put-1m` / `get-1m`: the same with 1 MiB objects from 4 tasks: MB/s;
//! - `put-64m` / `get-64m`: three 64 MiB objects one after another, each one PUT: MB/s;
//! - `list`: `--list-keys` keys of 16 bytes loaded first (not timed), then every page of a ListObjectsV2
//!   of all of them (1,000 per page): keys per second;
//! - `delete`: `--delete-keys` of those keys deleted from `--concurrency` tasks: deletes per second;
//! - `delete-half-1m`: every other object of `put-1m` deleted (for the disk-space measurement that
//!   `s3-peers.sh` makes after it).
//!
//! Every GET compares the bytes it got with the bytes put; a mismatch or a failed request ends the run with
//! an error.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use sha2::{Digest, Sha256};

type Failure = Box<dyn std::error::Error + Send + Sync>;

const WORKLOADS: [&str; 9] =
    ["put-4k", "get-4k", "put-1m", "get-1m", "put-64m", "get-64m", "list", "delete", "delete-half-1m"];

struct Args {
    endpoint: String,
    name: String,
    bucket: String,
    access_key: String,
    secret_key: String,
    concurrency: usize,
    seconds: u64,
    list_keys: usize,
    delete_keys: usize,
    workloads: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        endpoint: "http://127.0.0.1:9000".into(),
        name: "cairn".into(),
        bucket: "bench".into(),
        access_key: "bench".into(),
        secret_key: "benchsecret".into(),
        concurrency: 16,
        seconds: 5,
        list_keys: 100_000,
        delete_keys: 10_000,
        workloads: WORKLOADS.iter().map(|w| (*w).to_owned()).collect(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--endpoint" => args.endpoint = value()?,
            "--name" => args.name = value()?,
            "--bucket" => args.bucket = value()?,
            "--access-key" => args.access_key = value()?,
            "--secret-key" => args.secret_key = value()?,
            "--concurrency" => args.concurrency = number(value()?)?.max(1),
            "--seconds" => args.seconds = number(value()?)? as u64,
            "--list-keys" => args.list_keys = number(value()?)?,
            "--delete-keys" => args.delete_keys = number(value()?)?,
            "--workloads" => args.workloads = value()?.split(',').map(str::to_owned).collect(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if let Some(w) = args.workloads.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
        return Err(format!("unknown workload {w} (known: {})", WORKLOADS.join(",")));
    }
    Ok(args)
}

/// `n` bytes that differ with `seed`.
fn body(seed: u64, n: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    Bytes::from(out)
}

/// One row of the table.
struct Row {
    workload: String,
    ops: u64,
    bytes: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Row {
    fn percentile(&self, p: f64) -> String {
        if self.latencies.is_empty() {
            return "-".into();
        }
        let mut l = self.latencies.clone();
        l.sort_unstable();
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        format!("{:.2}", l[i].as_secs_f64() * 1000.0)
    }
}

/// Runs `op(task, i)` from `tasks` tasks, each counting its own `i`, until `deadline` or until `op` says
/// it is done (returns `Ok(None)`); collects the latencies and the bytes moved.
async fn run_tasks<F, Fut>(
    tasks: usize,
    deadline: Option<Instant>,
    op: F,
) -> Result<(Vec<u64>, u64, Vec<Duration>, Duration), Failure>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Option<u64>, Failure>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let (mut ops, mut bytes, mut lat) = (0u64, 0u64, Vec::new());
            let mut i = 0u64;
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let began = Instant::now();
                match op(t, i).await? {
                    Some(n) => {
                        lat.push(began.elapsed());
                        ops += 1;
                        bytes += n;
                    }
                    None => break,
                }
                i += 1;
            }
            Ok::<_, Failure>((ops, bytes, lat))
        }));
    }
    let (mut ops, mut bytes, mut lat) = (Vec::new(), 0, Vec::new());
    for h in handles {
        let (o, b, l) = h.await??;
        ops.push(o);
        bytes += b;
        lat.extend(l);
    }
    Ok((ops, bytes, lat, start.elapsed()))
}

fn key(prefix: &str, task: usize, i: u64) -> Path {
    Path::from(format!("{prefix}/{task:03}/{i:08}"))
}

async fn sized(
    store: Arc<dyn ObjectStore>,
    name: &str,
    size: usize,
    tasks: usize,
    seconds: u64,
    put: bool,
    written: &mut Vec<u64>,
) -> Result<Row, Failure> {
    let prefix = format!("sized-{size}");
    let deadline = Some(Instant::now() + Duration::from_secs(seconds));
    let (ops, bytes, latencies, elapsed) = if put {
        let (store, prefix) = (store.clone(), prefix.clone());
        let r = run_tasks(tasks, deadline, move |t, i| {
            let (store, path) = (store.clone(), key(&prefix, t, i));
            async move {
                store.put(&path, PutPayload::from(body(t as u64 * 1_000_000 + i, size))).await?;
                Ok(Some(size as u64))
            }
        })
        .await?;
        // How many each task wrote, for the GETs.
        written.clone_from(&r.0);
        r
    } else {
        let counts = Arc::new(written.clone());
        let (store, prefix) = (store.clone(), prefix.clone());
        run_tasks(tasks, deadline, move |t, i| {
            let (store, counts, prefix) = (store.clone(), counts.clone(), prefix.clone());
            async move {
                let n = counts.get(t).copied().unwrap_or(0).max(1);
                let i = i % n;
                let got = store.get(&key(&prefix, t, i)).await?.bytes().await?;
                if got != body(t as u64 * 1_000_000 + i, size) {
                    return Err(format!("{}: GET of {prefix}/{t}/{i} returned other bytes", "s3_load").into());
                }
                Ok(Some(size as u64))
            }
        })
        .await?
    };
    let ops = ops.iter().sum();
    let label = if size >= 1 << 20 { format!("{}m", size >> 20) } else { format!("{}k", size >> 10) };
    let _ = name;
    Ok(Row { workload: format!("{}-{label}", if put { "put" } else { "get" }), ops, bytes, elapsed, latencies })
}

async fn list(store: Arc<dyn ObjectStore>, keys: usize, tasks: usize) -> Result<Row, Failure> {
    let per_task = keys.div_ceil(tasks) as u64;
    run_tasks(tasks, None, {
        let store = store.clone();
        move |t, i| {
            let store = store.clone();
            async move {
                if i >= per_task {
                    return Ok(None);
                }
                store.put(&Path::from(format!("list/{t:03}-{i:08}")), PutPayload::from_static(b"x")).await?;
                Ok(Some(1))
            }
        }
    })
    .await?;
    let start = Instant::now();
    let mut listed = 0u64;
    let mut stream = store.list(Some(&Path::from("list")));
    while let Some(meta) = stream.next().await {
        meta?;
        listed += 1;
    }
    let elapsed = start.elapsed();
    if listed != per_task * tasks as u64 {
        return Err(format!("listed {listed} keys, {} were put", per_task * tasks as u64).into());
    }
    Ok(Row { workload: "list".into(), ops: listed, bytes: 0, elapsed, latencies: Vec::new() })
}

async fn delete(store: Arc<dyn ObjectStore>, keys: usize, tasks: usize, list_keys: usize) -> Result<Row, Failure> {
    let per_list_task = list_keys.div_ceil(tasks) as u64;
    let per_task = (keys.div_ceil(tasks) as u64).min(per_list_task);
    let (ops, bytes, latencies, elapsed) = run_tasks(tasks, None, move |t, i| {
        let store = store.clone();
        async move {
            if i >= per_task {
                return Ok(None);
            }
            store.delete(&Path::from(format!("list/{t:03}-{i:08}"))).await?;
            Ok(Some(0))
        }
    })
    .await?;
    Ok(Row { workload: "delete".into(), ops: ops.iter().sum(), bytes, elapsed, latencies })
}

async fn delete_half(store: Arc<dyn ObjectStore>, size: usize) -> Result<Row, Failure> {
    let listed: Vec<Path> =
        store.list(Some(&Path::from(format!("sized-{size}")))).map_ok(|m| m.location).try_collect().await?;
    let start = Instant::now();
    let mut row =
        Row { workload: "delete-half-1m".into(), ops: 0, bytes: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    for path in listed.iter().step_by(2) {
        let began = Instant::now();
        store.delete(path).await?;
        row.latencies.push(began.elapsed());
        row.ops += 1;
        row.bytes += size as u64;
    }
    row.elapsed = start.elapsed();
    Ok(row)
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// `PUT /bucket`, signed with AWS Signature Version 4 (object_store has no call to create a bucket).
async fn create_bucket(args: &Args) -> Result<reqwest::Response, Failure> {
    let url = reqwest::Url::parse(&format!("{}/{}", args.endpoint.trim_end_matches('/'), args.bucket))?;
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let now = chrono::Utc::now();
    let (amz_date, date) = (now.format("%Y%m%dT%H%M%SZ").to_string(), now.format("%Y%m%d").to_string());
    let payload = hex::encode(Sha256::digest(b""));
    let signed = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!(
        "PUT\n{}\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n\n{signed}\n{payload}",
        url.path()
    );
    let scope = format!("{date}/us-east-1/s3/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical)));
    let mut key = hmac(format!("AWS4{}", args.secret_key).as_bytes(), date.as_bytes());
    for part in ["us-east-1", "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        args.access_key
    );
    Ok(reqwest::Client::new()
        .put(url)
        .header("x-amz-date", amz_date)
        .header("x-amz-content-sha256", payload)
        .header("authorization", authorization)
        .send()
        .await?)
}

async fn run(args: Args) -> Result<(), Failure> {
    let created = create_bucket(&args).await?;
    if !(created.status().is_success() || created.status().as_u16() == 409) {
        eprintln!("s3_load: PUT /{} answered {}; going on (the bucket may exist)", args.bucket, created.status());
    }
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(&args.endpoint)
            .with_allow_http(true)
            .with_bucket_name(&args.bucket)
            .with_access_key_id(&args.access_key)
            .with_secret_access_key(&args.secret_key)
            .with_region("us-east-1")
            .with_virtual_hosted_style_request(false)
            .build()?,
    );
    let mut rows = Vec::new();
    let mut written = Vec::new();
    for w in &args.workloads {
        let row = match w.as_str() {
            "put-4k" => {
                sized(store.clone(), &args.name, 4 << 10, args.concurrency, args.seconds, true, &mut written).await?
            }
            "get-4k" => {
                sized(store.clone(), &args.name, 4 << 10, args.concurrency, args.seconds, false, &mut written).await?
            }
            "put-1m" => sized(store.clone(), &args.name, 1 << 20, 4, args.seconds, true, &mut written).await?,
            "get-1m" => sized(store.clone(), &args.name, 1 << 20, 4, args.seconds, false, &mut written).await?,
            "put-64m" | "get-64m" => {
                let put = w == "put-64m";
                let size = 64usize << 20;
                let mut row =
                    Row { workload: w.clone(), ops: 0, bytes: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
                for i in 0..3u64 {
                    let path = Path::from(format!("large/{i}"));
                    let began = Instant::now();
                    if put {
                        store.put(&path, PutPayload::from(body(7_000 + i, size))).await?;
                    } else {
                        let got = store.get(&path).await?.bytes().await?;
                        if got != body(7_000 + i, size) {
                            return Err(format!("GET of large/{i} returned other bytes").into());
                        }
                    }
                    row.elapsed += began.elapsed();
                    row.latencies.push(began.elapsed());
                    row.ops += 1;
                    row.bytes += size as u64;
                }
                row
            }
            "list" => list(store.clone(), args.list_keys, args.concurrency).await?,
            "delete" => delete(store.clone(), args.delete_keys, args.concurrency, args.list_keys).await?,
            "delete-half-1m" => delete_half(store.clone(), 1 << 20).await?,
            _ => continue,
        };
        rows.push(row);
    }
    println!("| {} | ops | ops/s | MB/s | p50 ms | p99 ms |", args.name);
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        println!(
            "| {} | {} | {:.0} | {:.1} | {} | {} |",
            r.workload,
            r.ops,
            r.ops as f64 / secs,
            r.bytes as f64 / secs / 1e6,
            r.percentile(0.5),
            r.percentile(0.99)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("s3_load: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("s3_load: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s3_load: {e}");
            ExitCode::FAILURE
        }
    }
}
