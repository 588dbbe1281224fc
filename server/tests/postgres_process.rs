//! `cairn serve` on the PostgreSQL backend as real processes: two servers on one database answer with the
//! same records, a long-poll on one is woken by a write through the other, and SIGTERM ends each cleanly.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::time::{Duration, Instant};

use cairn_pgcluster::Postgres;
use common::{json, Server};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_database() {
    let pg = Postgres::shared();
    let url = pg.database();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let config = format!("[backend]\nurl = \"{url}\"\npool_size = 4\n");
    let mut a = Server::start_backend(&url, Some(&config), dirs[0].path());
    let mut b = Server::start_backend(&url, Some(&config), dirs[1].path());
    let spec = json!({"name": "jobs", "indexes": [{"name": "status_priority", "fields": ["status", "-priority"]}]});
    assert_eq!(json(a.req(Method::POST, "/v1/collections").json(&spec).send().await.unwrap()).await.0, 201);
    assert_eq!(json(b.req(Method::POST, "/v1/collections").json(&spec).send().await.unwrap()).await.0, 200);
    let (status, put) = json(
        a.req(Method::PUT, "/v1/collections/jobs/records/j1")
            .header("if-none-match", "*")
            .json(&json!({"status": "PENDING", "priority": 3}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &put["version"], &put["seq"]), (201, &json!(1), &json!(1)));
    let (status, got) = json(b.req(Method::GET, "/v1/collections/jobs/records/j1").send().await.unwrap()).await;
    assert_eq!((status, &got["document"], &got["created_at_ms"]), (200, &put["document"], &put["created_at_ms"]));
    // A long-poll on b waits for a change, and a write through a wakes it well before its deadline.
    let waiting = tokio::spawn(b.req(Method::GET, "/v1/changes?since=1&wait_ms=10000").send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let r = a.req(Method::PUT, "/v1/collections/jobs/records/j2").json(&json!({"status": "PENDING"})).send();
    assert_eq!(r.await.unwrap().status(), 201);
    let (status, page) = json(waiting.await.unwrap().unwrap()).await;
    assert!(started.elapsed() < Duration::from_secs(5), "woken by the other server's commit");
    assert_eq!((status, &page["changes"][0]["id"], &page["next_since"]), (200, &json!("j2"), &json!(2)));
    let backup = json!({"to": dirs[0].path().join("copy")});
    assert_eq!(json(a.req(Method::POST, "/v1/admin/backup").json(&backup).send().await.unwrap()).await.0, 501);
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}
