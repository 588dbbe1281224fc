//! Replication from inside `cairn serve` (`[[replicate]]`): a target that is down at start does not stop the
//! server and is retried (`cairn_replica_up` 0, failures counted); once it comes up the replica catches up
//! (lag 0) and holds what the store holds; after a SIGKILL the restarted server resumes the same target from
//! its committed cursor, and the replica gets the writes made since.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

#[allow(dead_code, reason = "replication uses part of the shared harness")]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_sync::{ObjectLocation, Progress, RestoreTarget};
use common::Server;
use reqwest::Method;
use serde_json::json;

/// The value of the sample `name{target="t"}` on /metrics, if present.
async fn metric(s: &Server, name: &str) -> Option<f64> {
    let text = s.req(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    let prefix = format!("{name}{{target=\"t\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.parse().unwrap())
}

/// Waits up to 20 s for `ok`.
async fn eventually(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ok().await {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The records of the replica at `dir`, restored into a fresh store: (collection, id) pairs.
async fn replica_ids(dir: &Path, scratch: &Path, n: usize) -> Vec<String> {
    let location = ObjectLocation::new(format!("file://{}", dir.display())).open().unwrap();
    let restored = scratch.join(format!("restored-{n}"));
    let store = cairn_store::Store::open(&restored).unwrap();
    cairn_sync::restore_objects(&location, RestoreTarget::Latest, &store, None, &Progress::hidden()).await.unwrap();
    let jobs = store.collection_dyn("jobs").unwrap();
    let page = jobs.query(&cairn_store::Query::new().limit(1000)).unwrap();
    page.records.into_iter().map(|r| r.id).collect()
}

async fn put(s: &Server, id: &str) {
    let r = s.req(Method::PUT, &format!("/v1/collections/jobs/records/{id}")).json(&json!({"status": "PENDING"}));
    assert_eq!(r.send().await.unwrap().status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_at_start_catches_up_and_a_restart_resumes_it() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    // The target's parent is a file: the target cannot be created until it is removed.
    let blocked = scratch.path().join("blocked");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let replica = blocked.join("replica");
    let config = format!("[[replicate]]\nname = \"t\"\nto = \"file://{}\"\nretry_seconds = 1\n", replica.display());
    let mut s = Server::start_on(&data, Some(&config), scratch.path());
    let spec = json!({"name": "jobs", "indexes": [{"name": "status", "fields": ["status"]}]});
    assert_eq!(s.req(Method::POST, "/v1/collections").json(&spec).send().await.unwrap().status(), 201);
    for i in 0..20 {
        put(&s, &format!("a{i}")).await;
    }
    eventually("a failed attempt", async || metric(&s, "cairn_replica_failures_total").await.unwrap_or(0.0) >= 1.0)
        .await;
    assert_eq!(metric(&s, "cairn_replica_up").await, Some(0.0));

    std::fs::remove_file(&blocked).unwrap();
    eventually("the replica to catch up", async || {
        metric(&s, "cairn_replica_up").await == Some(1.0) && metric(&s, "cairn_replica_lag_sequence").await == Some(0.0)
    })
    .await;
    let ids = replica_ids(&replica, scratch.path(), 1).await;
    assert_eq!(ids.len(), 20, "{ids:?}");

    // A crash, then writes after the restart: the same target resumes.
    s.kill();
    let s = Server::start_on(&data, Some(&config), scratch.path());
    for i in 0..5 {
        put(&s, &format!("b{i}")).await;
    }
    eventually("the restarted server's replica to catch up", async || {
        metric(&s, "cairn_replica_lag_sequence").await == Some(0.0)
    })
    .await;
    let ids = replica_ids(&replica, scratch.path(), 2).await;
    assert_eq!(ids.len(), 25, "{ids:?}");
    assert!(ids.iter().any(|id| id == "b4"));
}
