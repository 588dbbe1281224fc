//! A soak of the real server: writers, claimers, transactions, queries and change-feed readers on many
//! connections at once, the server killed with SIGKILL at random moments and restarted, and after each
//! restart the invariants checked:
//!
//! - every acknowledged write is there, at its version or a later one;
//! - every claim answered 200 took a record no other claim took, and the record says so;
//! - every transaction is whole (its two records both there, or neither);
//! - a change-feed reader sees sequences only increase (skipping, with a 410, what was trimmed);
//! - the change feed stays within its retention bound: the server runs with `[changes]` bounds of
//!   [`FEED_BOUND`] bytes, and `cairn_changes_bytes` never exceeds twice that plus a margin;
//! - after the last stop, `cairn check` finds the directory healthy (indexes agree with records).
//!
//! `CAIRN_SOAK_SECONDS` sets the duration (default 40; `scripts/long-tests.sh` runs it longer).

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

#[allow(dead_code, reason = "the soak uses part of the shared harness")]
mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

/// The change feed's retention bound, in bytes (`retention_bytes` and `max_consumer_lag_bytes`).
const FEED_BOUND: u64 = 256 * 1024;

/// The server's configuration: a small feed bound, trimmed often.
fn config() -> String {
    format!(
        "[changes]\nretention_bytes = {FEED_BOUND}\nmax_consumer_lag_bytes = {FEED_BOUND}\ntrim_interval_ms = 200\n"
    )
}

/// What the clients were told, across every life of the server.
#[derive(Default)]
struct Acked {
    /// Record id -> the version its last acknowledged write made, and the server's life it was made in.
    writes: BTreeMap<String, (u64, u32)>,
    /// Record id -> the claimer whose claim was answered 200, and the version the claim wrote.
    claims: BTreeMap<String, (String, u64)>,
    /// Transactions acknowledged: the pair of ids each created.
    pairs: Vec<(String, String)>,
}

struct Run {
    base: String,
    client: Client,
    acked: Mutex<Acked>,
    stop: AtomicBool,
    seq: AtomicU64,
    /// Which life of the server this is (1 for the first).
    life: u32,
}

impl Run {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Option<(StatusCode, Value)> {
        let mut req = self.client.request(method, self.url(path)).timeout(Duration::from_secs(10));
        if let Some(b) = body {
            req = req.json(b);
        }
        // The server may be gone (killed): no answer, nothing acknowledged.
        let resp = req.send().await.ok()?;
        let status = resp.status();
        let bytes = resp.bytes().await.ok()?;
        Some((status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).ok()? }))
    }
}

fn job(status: &str, priority: u64) -> Value {
    json!({"name": "train", "owner": "alice", "project": "p1", "status": status, "priority": priority})
}

async fn writer(run: Arc<Run>, w: usize) {
    let mut n = 0u64;
    while !run.stop.load(Ordering::Acquire) {
        n += 1;
        let id = format!("w{w}-{}", run.seq.fetch_add(1, Ordering::Relaxed));
        let path = format!("/v1/collections/jobs/records/{id}");
        let Some((status, body)) = run.send(Method::PUT, &path, Some(&job("PENDING", n % 100))).await else { continue };
        if status == StatusCode::CREATED {
            run.acked.lock().unwrap().writes.insert(id.clone(), (body["version"].as_u64().unwrap(), run.life));
        }
        // Now and then a version-checked update of a record written before.
        if n.is_multiple_of(4) {
            let mine = format!("w{w}-");
            let old = {
                let acked = run.acked.lock().unwrap();
                let count = acked.writes.keys().filter(|k| k.starts_with(&mine)).count().max(1);
                let pick = (n / 4) as usize % count;
                acked.writes.iter().filter(|(k, _)| k.starts_with(&mine)).nth(pick).map(|(k, v)| (k.clone(), v.0))
            };
            if let Some((id, version)) = old {
                let resp = run
                    .client
                    .put(run.url(&format!("/v1/collections/jobs/records/{id}")))
                    .header("if-match", format!("\"{version}\""))
                    .json(&job("DONE", 0))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                if let Ok(resp) = resp {
                    if resp.status() == StatusCode::OK {
                        if let Ok(body) = resp.json::<Value>().await {
                            run.acked.lock().unwrap().writes.insert(id, (body["version"].as_u64().unwrap(), run.life));
                        }
                    }
                }
            }
        }
    }
}

async fn claimer(run: Arc<Run>, c: usize) {
    let name = format!("claimer-{c}");
    let body = json!({"where": {"status": "PENDING"}, "order_by": "priority", "order": "desc",
        "set": {"status": "RUNNING", "node": name}});
    while !run.stop.load(Ordering::Acquire) {
        match run.send(Method::POST, "/v1/collections/jobs/claim", Some(&body)).await {
            Some((StatusCode::OK, record)) => {
                let id = record["id"].as_str().unwrap().to_owned();
                assert_eq!(record["document"]["node"], name.as_str());
                let version = record["version"].as_u64().unwrap();
                let mut acked = run.acked.lock().unwrap();
                if let Some((first, _)) = acked.claims.insert(id.clone(), (name.clone(), version)) {
                    panic!("{id} claimed by {first} and again by {name}");
                }
                acked.writes.insert(id, (version, run.life));
            }
            Some((StatusCode::NO_CONTENT, _)) => tokio::time::sleep(Duration::from_millis(5)).await,
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

async fn transactor(run: Arc<Run>, t: usize) {
    while !run.stop.load(Ordering::Acquire) {
        let n = run.seq.fetch_add(1, Ordering::Relaxed);
        let (a, b) = (format!("ta{t}-{n}"), format!("tb{t}-{n}"));
        let ops = json!({"operations": [
            {"op": "put", "collection": "jobs", "id": a, "document": job("DONE", 1), "if_none_match": true},
            {"op": "put", "collection": "jobs", "id": b, "document": job("DONE", 2), "if_none_match": true},
        ]});
        if let Some((StatusCode::OK, _)) = run.send(Method::POST, "/v1/transactions", Some(&ops)).await {
            run.acked.lock().unwrap().pairs.push((a, b));
        }
    }
}

async fn reader(run: Arc<Run>) {
    let mut since = 0u64;
    while !run.stop.load(Ordering::Acquire) {
        let q = "/v1/collections/jobs/records?status=PENDING&order_by=priority&order=desc&limit=20";
        if let Some((status, page)) = run.send(Method::GET, q, None).await {
            assert!(status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE, "{status} {page}");
        }
        let path = format!("/v1/changes?since={since}&limit=200&wait_ms=200");
        match run.send(Method::GET, &path, None).await {
            Some((StatusCode::OK, feed)) => {
                let mut last = since;
                for change in feed["changes"].as_array().unwrap() {
                    let seq = change["seq"].as_u64().unwrap();
                    assert!(seq > since && seq >= last, "the feed went back: {seq} after {last} (since {since})");
                    last = seq;
                }
                since = feed["next_since"].as_u64().unwrap_or(since).max(since);
            }
            // Trimmed past this reader (it keeps no durable cursor): go on from what is left.
            Some((StatusCode::GONE, problem)) => {
                let trimmed = problem["trimmed_through"].as_u64().unwrap();
                assert!(trimmed >= since, "{problem}");
                since = trimmed;
            }
            _ => {}
        }
    }
}

/// Checks every invariant against the restarted server.
async fn verify(run: &Run, full: bool) {
    let acked = std::mem::take(&mut *run.acked.lock().unwrap());
    let mut seen_claims = HashSet::new();
    for (id, (version, life)) in &acked.writes {
        // Every record of the life that just ended (in flight at the kill), and a twentieth of the older ones,
        // each life; all of them at the end.
        let sampled = id.bytes().map(u32::from).sum::<u32>() % 20 == run.life % 20;
        if !(full || *life + 1 == run.life || sampled) {
            continue;
        }
        let (status, record) =
            run.send(Method::GET, &format!("/v1/collections/jobs/records/{id}"), None).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{id}: acknowledged at version {version}, gone after a restart");
        assert!(record["version"].as_u64().unwrap() >= *version, "{id}: version went back ({record})");
        if let Some((claimer, claimed)) = acked.claims.get(id) {
            seen_claims.insert(id.clone());
            // The claim's write is there, or a later one replaced it.
            let now = record["version"].as_u64().unwrap();
            assert!(now >= *claimed, "{id}: claimed at version {claimed}, now {record}");
            if now == *claimed {
                assert_eq!(record["document"]["node"], claimer.as_str(), "{id}: {record}");
            }
        }
    }
    if full {
        assert_eq!(seen_claims.len(), acked.claims.len());
    }
    for (a, b) in &acked.pairs {
        for id in [a, b] {
            let (status, _) = run.send(Method::GET, &format!("/v1/collections/jobs/records/{id}"), None).await.unwrap();
            assert_eq!(status, StatusCode::OK, "transaction ({a}, {b}) lost {id}");
        }
    }
    // What was acknowledged stays acknowledged: later lives check it again.
    *run.acked.lock().unwrap() = acked;
}

/// The change feed's bytes, from `/metrics`.
async fn feed_bytes(run: &Run) -> u64 {
    let text = run.client.get(run.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("cairn_changes_bytes ")).unwrap_or_else(|| panic!("{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Samples the feed's size until the life ends; the largest seen.
async fn feed_watcher(run: Arc<Run>) -> u64 {
    let mut most = 0;
    while !run.stop.load(Ordering::Acquire) {
        if let Ok(r) = run.client.get(run.url("/metrics")).send().await {
            if let Ok(text) = r.text().await {
                if let Some(v) = text.lines().find_map(|l| l.strip_prefix("cairn_changes_bytes ")) {
                    most = most.max(v.trim().parse().unwrap_or(0));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_at_random_keeps_every_acknowledged_write() {
    let seconds: u64 = std::env::var("CAIRN_SOAK_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let config = config();
    let mut server = Server::start_on(&data, Some(&config), scratch.path());
    let spec = json!({"name": "jobs", "indexes": [
        {"name": "status_priority", "fields": ["status", "-priority"]},
        {"name": "project", "fields": ["project"]},
    ]});
    assert_eq!(server.req(Method::POST, "/v1/collections").json(&spec).send().await.unwrap().status(), 201);
    let mut run = Arc::new(Run {
        base: server.base.clone(),
        client: Client::new(),
        acked: Mutex::new(Acked::default()),
        stop: AtomicBool::new(false),
        seq: AtomicU64::new(0),
        life: 1,
    });
    let start = Instant::now();
    let mut lives = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut feed_most = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        lives += 1;
        let mut tasks = Vec::new();
        for i in 0..4 {
            tasks.push(tokio::spawn(writer(run.clone(), i)));
        }
        for i in 0..3 {
            tasks.push(tokio::spawn(claimer(run.clone(), i)));
        }
        tasks.push(tokio::spawn(transactor(run.clone(), 0)));
        tasks.push(tokio::spawn(reader(run.clone())));
        let watcher = tokio::spawn(feed_watcher(run.clone()));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(300 + rng % 1700)).await;
        // SIGKILL while requests are in flight; what they were told is what must survive.
        server.kill();
        run.stop.store(true, Ordering::Release);
        for t in tasks {
            t.await.unwrap();
        }
        feed_most = feed_most.max(watcher.await.unwrap());
        server = Server::start_on(&data, Some(&config), scratch.path());
        let acked = std::mem::take(&mut *run.acked.lock().unwrap());
        run = Arc::new(Run {
            base: server.base.clone(),
            client: Client::new(),
            acked: Mutex::new(acked),
            stop: AtomicBool::new(false),
            seq: AtomicU64::new(run.seq.load(Ordering::Relaxed)),
            life: run.life + 1,
        });
        verify(&run, false).await;
        feed_most = feed_most.max(feed_bytes(&run).await);
    }
    // Commits wait for a trim once the feed is twice its bound; a trim interval's writes come on top.
    assert!(feed_most <= 2 * FEED_BOUND + 128 * 1024, "the change feed held {feed_most} bytes (bound {FEED_BOUND})");
    let (writes, claims, pairs) = {
        let acked = run.acked.lock().unwrap();
        (acked.writes.len(), acked.claims.len(), acked.pairs.len())
    };
    assert!(
        lives >= 3 && writes > 100 && claims > 0 && pairs > 0,
        "{lives} lives, {writes} writes, {claims} claims, {pairs} transactions"
    );
    eprintln!(
        "soak: {lives} lives in {:?}: {writes} records written, {claims} claims, {pairs} transactions acknowledged; \
         change feed at most {feed_most} bytes (bound {FEED_BOUND})",
        start.elapsed()
    );
    verify(&run, true).await;
    assert!(server.terminate().success());
    let check =
        std::process::Command::new(env!("CARGO_BIN_EXE_cairn")).args(["check", "--data"]).arg(&data).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}
