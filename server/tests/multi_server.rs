//! Several `cairn serve --backend URL` processes on one PostgreSQL database (a fresh database of the run's
//! cluster, `CAIRN_TEST_POSTGRES`, or of a cluster of the test's own), with clients spread across them:
//!
//! - `three_servers_share_one_database`: 8 clients doing `If-Match` increments of shared counters (412 →
//!   read again and retry) and claims of 300 pending jobs, while a reader per server follows the change
//!   feed. Every counter ends at the number of increments acknowledged; every job is claimed exactly once;
//!   the three servers' feeds are the same, each commit's sequence larger than the one before, and they hold
//!   exactly the acknowledged writes (none missing, including for the readers that followed the feed while
//!   commits from three servers raced), each record's versions in order without a gap.
//! - `a_server_killed_mid_load_loses_no_acknowledged_write`: SIGKILL of one server while 8 clients write;
//!   its clients fail over to the others; every write acknowledged by any server, before or after the kill,
//!   is there afterwards, through the survivors and through the killed server started again.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

#[allow(dead_code, reason = "these tests use part of the shared harness")]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_pgcluster::Postgres;
use common::Server;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const SERVERS: usize = 3;
const CLIENTS: usize = 8;
const COUNTERS: usize = 4;
/// `If-Match` increments per client.
const INCREMENTS: usize = 25;
const JOBS: usize = 300;

/// An answer (status, JSON body or `Null` when empty), or `None` when none came: connection refused or
/// reset, or a timeout.
async fn call(
    client: &Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    header: Option<(&str, String)>,
) -> Option<(StatusCode, Value)> {
    let mut req = client.request(method, format!("{base}{path}")).timeout(Duration::from_secs(30));
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status();
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes = resp.bytes().await.ok()?;
    Some((status, common::problem::checked_body(status.as_u16(), ctype.as_deref(), &bytes)))
}

/// As [`call`], for a server that must answer.
async fn must(
    client: &Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    header: Option<(&str, String)>,
) -> (StatusCode, Value) {
    let what = format!("{method} {base}{path}");
    call(client, base, method, path, body, header).await.unwrap_or_else(|| panic!("{what}: no answer"))
}

/// `n` servers on the database `url`.
fn start_servers(n: usize, url: &str, scratch: &std::path::Path) -> Vec<Server> {
    (0..n).map(|_| Server::start_backend(url, None, scratch)).collect()
}

async fn declare(client: &Client, base: &str, spec: Value) {
    let (status, body) = must(client, base, Method::POST, "/v1/collections", Some(&spec), None).await;
    assert_eq!(status, StatusCode::CREATED, "declaring {spec}: {body}");
}

/// One acknowledged write: the commit sequence and version its answer gave, and which request it was
/// (every record of a transaction shares its request and sequence).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ack {
    seq: u64,
    collection: String,
    id: String,
    version: u64,
    request: String,
}

fn ack(request: &str, collection: &str, record: &Value) -> Ack {
    Ack {
        seq: record["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {record}")),
        collection: collection.to_owned(),
        id: record["id"].as_str().unwrap().to_owned(),
        version: record["version"].as_u64().unwrap(),
        request: request.to_owned(),
    }
}

/// Every change of the feed of `base` after `since`, read to the end in pages.
async fn read_feed(client: &Client, base: &str) -> Vec<Value> {
    let mut since = 0;
    let mut out = Vec::new();
    loop {
        let path = format!("/v1/changes?since={since}&limit=1000");
        let (status, page) = must(client, base, Method::GET, &path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let changes = page["changes"].as_array().unwrap();
        if changes.is_empty() {
            return out;
        }
        out.extend(changes.iter().cloned());
        since = page["next_since"].as_u64().unwrap();
    }
}

/// Follows the feed of `base` with long-polls while the load runs, then reads it to its end once `done`
/// (set after every write was answered): what a consumer of this server saw, change by change.
async fn follow_feed(client: Client, base: String, done: Arc<AtomicBool>) -> Vec<Value> {
    let mut since = 0;
    let mut out = Vec::new();
    loop {
        let finishing = done.load(Ordering::Acquire);
        let path = format!("/v1/changes?since={since}&limit=1000&wait_ms=200");
        let (status, page) = must(&client, &base, Method::GET, &path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let changes = page["changes"].as_array().unwrap();
        if changes.is_empty() && finishing {
            return out;
        }
        out.extend(changes.iter().cloned());
        since = page["next_since"].as_u64().unwrap();
    }
}

/// The checks every feed must pass against the writes acknowledged: commits in strictly increasing
/// sequence (a commit's changes together), exactly the acknowledged writes (collection, id, version and
/// sequence), each record's versions 1, 2, 3, ... in feed order.
fn check_feed(what: &str, feed: &[Value], acks: &[Ack]) {
    // Non-decreasing sequences: a commit's changes together, each commit after the one before (that two
    // requests never share a sequence is checked on the answers).
    for pair in feed.windows(2) {
        let (a, b) = (pair[0]["seq"].as_u64().unwrap(), pair[1]["seq"].as_u64().unwrap());
        assert!(a <= b, "{what}: seq {b} after {a}: {}", pair[1]);
    }
    let mut in_feed: Vec<(u64, String, String, u64)> = feed
        .iter()
        .map(|c| {
            (
                c["seq"].as_u64().unwrap(),
                c["collection"].as_str().unwrap().to_owned(),
                c["id"].as_str().unwrap().to_owned(),
                c["version"].as_u64().unwrap(),
            )
        })
        .collect();
    in_feed.sort();
    let mut acked: Vec<(u64, String, String, u64)> =
        acks.iter().map(|a| (a.seq, a.collection.clone(), a.id.clone(), a.version)).collect();
    acked.sort();
    if in_feed != acked {
        let missing: Vec<_> = acked.iter().filter(|a| !in_feed.contains(a)).take(5).collect();
        let extra: Vec<_> = in_feed.iter().filter(|c| !acked.contains(c)).take(5).collect();
        panic!(
            "{what}: {} changes in the feed, {} writes acknowledged; acknowledged but not in the feed (first 5): \
             {missing:?}; in the feed but not acknowledged (first 5): {extra:?}",
            in_feed.len(),
            acked.len()
        );
    }
    let mut versions: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in feed {
        let key = (c["collection"].as_str().unwrap().to_owned(), c["id"].as_str().unwrap().to_owned());
        let version = c["version"].as_u64().unwrap();
        let last = versions.insert(key.clone(), version).unwrap_or(0);
        assert_eq!(version, last + 1, "{what}: {key:?} went from version {last} to {version}: {c}");
    }
}

/// What one client of the first test did.
#[derive(Default)]
struct Done {
    /// Increments acknowledged, per counter.
    increments: BTreeMap<usize, u64>,
    /// 412s met (another client incremented between the read and the write).
    conflicts: u64,
    /// Jobs whose claim this client was answered 200 for.
    claimed: Vec<String>,
    acks: Vec<Ack>,
}

async fn increment(client: &Client, base: &str, k: usize, me: usize, n: usize, done: &mut Done) {
    let path = format!("/v1/collections/counters/records/c{k}");
    loop {
        let (status, rec) = must(client, base, Method::GET, &path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{rec}");
        let version = rec["version"].as_u64().unwrap();
        let value = rec["document"]["n"].as_u64().unwrap();
        let body = json!({"n": value + 1});
        let (status, written) =
            must(client, base, Method::PUT, &path, Some(&body), Some(("if-match", format!("\"{version}\"")))).await;
        match status {
            StatusCode::OK => {
                assert_eq!(written["version"].as_u64(), Some(version + 1), "{written}");
                assert_eq!(written["document"], body);
                *done.increments.entry(k).or_default() += 1;
                done.acks.push(ack(&format!("inc-{me}-{n}"), "counters", &written));
                return;
            }
            StatusCode::PRECONDITION_FAILED => {
                let current =
                    written["current_version"].as_u64().unwrap_or_else(|| panic!("412 without it: {written}"));
                assert!(current > version, "412 at version {current}, read {version}: {written}");
                done.conflicts += 1;
            }
            other => panic!("PUT {path} If-Match {version}: {other} {written}"),
        }
    }
}

/// One claim: `true` when a job was taken, `false` when none is left.
async fn claim(client: &Client, base: &str, me: usize, n: usize, done: &mut Done) -> bool {
    let body = json!({"where": {"status": "PENDING"}, "order_by": "priority", "order": "desc",
                      "set": {"status": "RUNNING", "node": format!("client-{me}")}});
    loop {
        let (status, rec) = must(client, base, Method::POST, "/v1/collections/jobs/claim", Some(&body), None).await;
        match status {
            StatusCode::OK => {
                assert_eq!(rec["document"]["status"], "RUNNING", "{rec}");
                assert_eq!(rec["document"]["node"], format!("client-{me}"), "{rec}");
                done.claimed.push(rec["id"].as_str().unwrap().to_owned());
                done.acks.push(ack(&format!("claim-{me}-{n}"), "jobs", &rec));
                return true;
            }
            StatusCode::NO_CONTENT => return false,
            // Every candidate's race was lost to other claimers: nothing was taken, try again.
            StatusCode::SERVICE_UNAVAILABLE => tokio::time::sleep(Duration::from_millis(10)).await,
            other => panic!("claim: {other} {rec}"),
        }
    }
}

async fn client_of_three(client: Client, base: String, me: usize) -> Done {
    let mut done = Done::default();
    let mut jobs_left = true;
    let mut n = 0;
    for i in 0..INCREMENTS {
        increment(&client, &base, (me + i) % COUNTERS, me, i, &mut done).await;
        if jobs_left {
            n += 1;
            jobs_left = claim(&client, &base, me, n, &mut done).await;
        }
    }
    while jobs_left {
        n += 1;
        jobs_left = claim(&client, &base, me, n, &mut done).await;
    }
    done
}

/// Every record of `collection` through `base`, by id, listed in pages with cursors.
async fn list_all(client: &Client, base: &str, collection: &str, filter: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/collections/{collection}/records?limit=1000{filter}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = must(client, base, Method::GET, &path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        for rec in page["records"].as_array().unwrap() {
            let id = rec["id"].as_str().unwrap().to_owned();
            assert!(out.insert(id.clone(), rec.clone()).is_none(), "{path}: {id} listed twice");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_share_one_database() {
    let pg = Postgres::shared();
    let url = pg.database();
    let scratch = tempfile::tempdir().unwrap();
    let servers = start_servers(SERVERS, &url, scratch.path());
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let client = Client::new();
    let mut acks = Vec::new();

    // Declared through one server, written through all three at once.
    declare(&client, &bases[0], json!({"name": "counters", "indexes": []})).await;
    let jobs_spec = json!({"name": "jobs", "indexes": [{"name": "status_priority", "fields": ["status", "priority"]}]});
    declare(&client, &bases[0], jobs_spec).await;
    for k in 0..COUNTERS {
        let base = &bases[k % SERVERS];
        let path = format!("/v1/collections/counters/records/c{k}");
        let (status, rec) =
            must(&client, base, Method::PUT, &path, Some(&json!({"n": 0})), Some(("if-none-match", "*".into()))).await;
        assert_eq!(status, StatusCode::CREATED, "{rec}");
        acks.push(ack(&format!("create-c{k}"), "counters", &rec));
    }
    for (t, first) in (0..JOBS).step_by(JOBS / SERVERS).enumerate() {
        let ops: Vec<Value> = (first..first + JOBS / SERVERS)
            .map(|i| {
                json!({"op": "put", "collection": "jobs", "id": format!("job-{i:04}"), "if_none_match": true,
                       "document": {"name": format!("train-{i}"), "status": "PENDING", "priority": (i * 37) % 1000}})
            })
            .collect();
        let body = json!({"operations": ops});
        let (status, answer) =
            must(&client, &bases[t % SERVERS], Method::POST, "/v1/transactions", Some(&body), None).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let seq = answer["seq"].as_u64().unwrap();
        for rec in answer["results"].as_array().unwrap() {
            assert_eq!(rec["seq"].as_u64(), Some(seq), "a transaction's records share its sequence: {rec}");
            acks.push(ack(&format!("tx-{t}"), "jobs", rec));
        }
    }

    let finished = Arc::new(AtomicBool::new(false));
    let followers: Vec<_> =
        bases.iter().map(|b| tokio::spawn(follow_feed(Client::new(), b.clone(), finished.clone()))).collect();
    let clients: Vec<_> =
        (0..CLIENTS).map(|me| tokio::spawn(client_of_three(Client::new(), bases[me % SERVERS].clone(), me))).collect();
    let mut increments: BTreeMap<usize, u64> = BTreeMap::new();
    let mut claimed: BTreeMap<String, usize> = BTreeMap::new();
    let mut conflicts = 0;
    for (me, c) in clients.into_iter().enumerate() {
        let done = c.await.unwrap();
        for (k, n) in done.increments {
            *increments.entry(k).or_default() += n;
        }
        for id in done.claimed {
            if let Some(other) = claimed.insert(id.clone(), me) {
                panic!("{id} was claimed by client {other} and by client {me}");
            }
        }
        conflicts += done.conflicts;
        acks.extend(done.acks);
    }
    finished.store(true, Ordering::Release);
    eprintln!("{} writes acknowledged, {conflicts} If-Match conflicts retried", acks.len());
    assert_eq!(increments.values().sum::<u64>(), (CLIENTS * INCREMENTS) as u64);

    // Every job claimed exactly once, and every server says so.
    assert_eq!(claimed.len(), JOBS, "jobs claimed");
    for base in &bases {
        for (k, n) in &increments {
            let path = format!("/v1/collections/counters/records/c{k}");
            let (status, rec) = must(&client, base, Method::GET, &path, None, None).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(
                (rec["document"]["n"].as_u64(), rec["version"].as_u64()),
                (Some(*n), Some(n + 1)),
                "{base}: {rec}"
            );
        }
        let running = list_all(&client, base, "jobs", "&status=RUNNING").await;
        assert_eq!(running.len(), JOBS, "{base}: RUNNING jobs");
        for (id, rec) in &running {
            assert_eq!(rec["document"]["node"], format!("client-{}", claimed[id]), "{base}: {rec}");
            assert_eq!(rec["version"], 2, "{base}: claimed once: {rec}");
        }
        assert!(list_all(&client, base, "jobs", "&status=PENDING").await.is_empty(), "{base}: PENDING jobs left");
    }

    // One sequence per request, and no request's sequence shared with another.
    let mut requests: BTreeMap<u64, &str> = BTreeMap::new();
    for a in &acks {
        let first = *requests.entry(a.seq).or_insert(&a.request);
        assert_eq!(first, a.request, "commit sequence {} answered to two requests", a.seq);
    }

    // The feed: the same from every server, read afterwards or followed during the load.
    let reference = read_feed(&client, &bases[0]).await;
    check_feed(&format!("feed of {}", bases[0]), &reference, &acks);
    for base in &bases[1..] {
        assert_eq!(read_feed(&client, base).await, reference, "feed of {base} differs from that of {}", bases[0]);
    }
    for (follower, base) in followers.into_iter().zip(&bases) {
        let seen = follower.await.unwrap();
        check_feed(&format!("feed followed on {base}"), &seen, &acks);
        assert_eq!(seen, reference, "the feed followed on {base} differs from the feed read afterwards");
    }
    // The counters' documents follow their versions: n = version - 1 in every change.
    for c in reference.iter().filter(|c| c["collection"] == "counters") {
        assert_eq!(c["document"]["n"].as_u64().unwrap() + 1, c["version"].as_u64().unwrap(), "{c}");
    }
}

/// What the clients of the second test were told, across the kill.
#[derive(Default)]
struct Told {
    /// Id -> the version and document of the last write acknowledged, and its sequence.
    acked: BTreeMap<String, (u64, Value, u64)>,
    /// Per client: acknowledgements before and after the kill, writes of unknown outcome, failovers.
    before: [u64; CLIENTS],
    after: [u64; CLIENTS],
    unknown: [u64; CLIENTS],
    failovers: [u64; CLIENTS],
}

/// A client writing new records (`If-None-Match: *`) and updating its own (`If-Match`) until `stop`, on
/// server `home` until it fails to answer, then on the next one. A write without an answer (or with a 5xx)
/// has an unknown outcome: never counted as acknowledged, and the record is not updated again.
async fn writer(bases: Vec<String>, me: usize, killed: Arc<AtomicBool>, stop: Arc<AtomicBool>, told: Arc<Mutex<Told>>) {
    let client = Client::new();
    let mut server = me % bases.len();
    let mut mine: Vec<(String, u64)> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let after_kill = killed.load(Ordering::Acquire);
        let doc = json!({"client": me, "n": n});
        let update = n.is_multiple_of(3) && !mine.is_empty();
        let (id, header, expect) = if update {
            let pick = (n / 3) as usize % mine.len();
            let (id, version) = mine[pick].clone();
            (id, ("if-match", format!("\"{version}\"")), StatusCode::OK)
        } else {
            (format!("w{me}-{n:06}"), ("if-none-match", "*".to_owned()), StatusCode::CREATED)
        };
        let path = format!("/v1/collections/acks/records/{id}");
        let answer = call(&client, &bases[server], Method::PUT, &path, Some(&doc), Some(header)).await;
        match answer {
            Some((status, rec)) if status == expect => {
                let version = rec["version"].as_u64().unwrap();
                let mut told = told.lock().unwrap();
                told.acked.insert(id.clone(), (version, doc, rec["seq"].as_u64().unwrap()));
                if after_kill {
                    told.after[me] += 1;
                } else {
                    told.before[me] += 1;
                }
                match mine.iter_mut().find(|(m, _)| *m == id) {
                    Some(entry) => entry.1 = version,
                    None => mine.push((id, version)),
                }
            }
            Some((status, rec)) if status.is_server_error() => {
                told.lock().unwrap().unknown[me] += 1;
                mine.retain(|(m, _)| *m != id);
                eprintln!("client {me}: {status} {rec}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some((status, rec)) => panic!("client {me}: PUT {path}: {status} {rec}"),
            None => {
                let mut told = told.lock().unwrap();
                told.unknown[me] += 1;
                told.failovers[me] += 1;
                mine.retain(|(m, _)| *m != id);
                server = (server + 1) % bases.len();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_load_loses_no_acknowledged_write() {
    let pg = Postgres::shared();
    let url = pg.database();
    let scratch = tempfile::tempdir().unwrap();
    let mut servers = start_servers(SERVERS, &url, scratch.path());
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let client = Client::new();
    declare(&client, &bases[0], json!({"name": "acks", "indexes": []})).await;

    let told = Arc::new(Mutex::new(Told::default()));
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..CLIENTS)
        .map(|me| tokio::spawn(writer(bases.clone(), me, killed.clone(), stop.clone(), told.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    servers[0].kill();
    killed.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Release);
    for w in writers {
        w.await.unwrap();
    }
    let told = Arc::try_unwrap(told).ok().unwrap().into_inner().unwrap();
    eprintln!(
        "acknowledged: {} records; per client before the kill {:?}, after {:?}; unknown outcomes {:?}; failovers {:?}",
        told.acked.len(),
        told.before,
        told.after,
        told.unknown,
        told.failovers
    );
    for me in 0..CLIENTS {
        assert!(told.before[me] > 0, "client {me} had no write acknowledged before the kill");
        assert!(told.after[me] > 0, "client {me} had no write acknowledged after the kill");
        if me % SERVERS == 0 {
            assert!(told.failovers[me] >= 1, "client {me} of the killed server never failed over");
        } else {
            assert_eq!(told.failovers[me], 0, "client {me} of a surviving server lost an answer");
        }
    }

    // Every acknowledged write is there, through each survivor and through the killed server started again
    // on the same database: at its version with its document, or later (a write of unknown outcome after it).
    servers[0] = Server::start_backend(&url, None, scratch.path());
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let mut feeds = Vec::new();
    for base in &bases {
        let records = list_all(&client, base, "acks", "").await;
        for (id, (version, doc, _)) in &told.acked {
            let rec = records.get(id).unwrap_or_else(|| panic!("{base}: acknowledged {id} v{version} is missing"));
            let have = rec["version"].as_u64().unwrap();
            assert!(have >= *version, "{base}: {id} is at version {have}, below the acknowledged {version}");
            if have == *version {
                assert_eq!(&rec["document"], doc, "{base}: {id} v{version}");
            }
        }
        feeds.push(read_feed(&client, base).await);
    }
    for (feed, base) in feeds.iter().zip(&bases) {
        assert_eq!(feed, &feeds[1], "the feed of {base} differs from that of {}", bases[1]);
    }
    let in_feed: BTreeSet<(String, u64, u64)> = feeds[1]
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_owned(), c["version"].as_u64().unwrap(), c["seq"].as_u64().unwrap()))
        .collect();
    for (id, (version, _, seq)) in &told.acked {
        assert!(in_feed.contains(&(id.clone(), *version, *seq)), "{id} v{version} (seq {seq}) is not in the feed");
    }
}
