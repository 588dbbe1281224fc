//! The HTTP contract, in-process: `cairn_server::app` over a store in a temporary directory, one
//! `oneshot` call per request. CRUD and preconditions, queries and pagination under concurrent writes, claims
//! by concurrent workers, transactions, the change feed (long-poll and server-sent events), tokens and
//! project isolation, malformed input, shedding, metrics, stats and the OpenAPI document. What needs a
//! real process (SIGTERM, restart, binding, the command line) is in `process.rs`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod inproc;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use axum::http::Method;
use axum::response::Response;
use cairn_server::{Config, Limits, Role, TokenConfig};
use futures_util::StreamExt;
use inproc::{json, text, App};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn sha(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Declares `jobs` with the scheduler's indexes.
async fn declare_jobs(s: &App) {
    let spec = json!({"name": "jobs", "indexes": [
        {"name": "status_priority", "fields": ["status", "priority"]},
        {"name": "owner", "fields": ["owner"]},
        {"name": "project", "fields": ["project"]},
    ]});
    let (status, _) = json(s.req(Method::POST, "/v1/collections").json(&spec).send().await.unwrap()).await;
    assert_eq!(status, 201);
}

fn job(priority: i64, status: &str, project: &str) -> Value {
    json!({"name": "train", "owner": "alice", "project": project, "status": status, "priority": priority})
}

/// Writes many records in transactions of 100.
async fn load(s: &App, ids: impl Iterator<Item = (String, Value)>) {
    let ops: Vec<Value> =
        ids.map(|(id, doc)| json!({"op": "put", "collection": "jobs", "id": id, "document": doc})).collect();
    for chunk in ops.chunks(100) {
        let (status, body) =
            json(s.req(Method::POST, "/v1/transactions").json(&json!({"operations": chunk})).send().await.unwrap())
                .await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test]
async fn crud_with_versions_and_preconditions() {
    let s = App::start(Config::default());
    declare_jobs(&s).await;
    let url = "/v1/collections/jobs/records/job-1";
    let r = s.req(Method::PUT, url).header("If-None-Match", "*").json(&job(5, "PENDING", "p1")).send().await.unwrap();
    assert_eq!(r.headers()["etag"], "\"1\"");
    let (status, rec) = json(r).await;
    assert_eq!((status, rec["version"].as_u64(), rec["id"].as_str()), (201, Some(1), Some("job-1")));
    assert_eq!(rec["document"]["priority"], 5);
    assert!(rec["seq"].as_u64().unwrap() > 0);

    let r = s.req(Method::GET, url).send().await.unwrap();
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert_eq!(json(r).await, (200, rec.clone()));

    let (status, body) =
        json(s.req(Method::PUT, url).header("If-None-Match", "*").json(&job(6, "PENDING", "p1")).send().await.unwrap())
            .await;
    assert_eq!((status, body["current_version"].as_u64()), (412, Some(1)));

    let r = s.req(Method::PUT, url).header("If-Match", "\"1\"").json(&job(7, "PENDING", "p1")).send().await.unwrap();
    assert_eq!(r.headers()["etag"], "\"2\"");
    let (status, rec) = json(r).await;
    assert_eq!((status, rec["version"].as_u64(), &rec["document"]["priority"]), (200, Some(2), &json!(7)));

    let (status, body) =
        json(s.req(Method::PUT, url).header("If-Match", "\"1\"").json(&job(8, "PENDING", "p1")).send().await.unwrap())
            .await;
    assert_eq!((status, body["current_version"].as_u64(), body["id"].as_str()), (412, Some(2), Some("job-1")));
    // An upsert without headers replaces whatever is there.
    let (status, rec) = json(s.req(Method::PUT, url).json(&job(9, "QUEUED", "p1")).send().await.unwrap()).await;
    assert_eq!((status, rec["version"].as_u64()), (200, Some(3)));

    let (status, body) = json(s.req(Method::DELETE, url).header("If-Match", "\"2\"").send().await.unwrap()).await;
    assert_eq!((status, body["current_version"].as_u64()), (412, Some(3)));
    let (status, _) = json(s.req(Method::DELETE, url).header("If-Match", "\"3\"").send().await.unwrap()).await;
    assert_eq!(status, 204);
    assert_eq!(json(s.req(Method::GET, url).send().await.unwrap()).await.0, 404);
    assert_eq!(json(s.req(Method::DELETE, url).send().await.unwrap()).await.0, 404);
    let (status, body) =
        json(s.req(Method::PUT, url).header("If-Match", "\"3\"").json(&job(1, "PENDING", "p1")).send().await.unwrap())
            .await;
    assert_eq!((status, &body["current_version"]), (412, &Value::Null));
    assert_eq!(json(s.req(Method::GET, "/v1/collections/nope/records/x").send().await.unwrap()).await.0, 404);
    let (status, _) =
        json(s.req(Method::PUT, "/v1/collections/nope/records/x").json(&json!({})).send().await.unwrap()).await;
    assert_eq!(status, 404);
    // Ids may hold any printable UTF-8, percent-encoded.
    let (status, rec) = json(
        s.req(Method::PUT, "/v1/collections/jobs/records/a%2Fb%20%C3%BC").json(&json!({"x": 1})).send().await.unwrap(),
    )
    .await;
    assert_eq!((status, rec["id"].as_str()), (201, Some("a/b ü")));

    let (status, list) = json(s.req(Method::GET, "/v1/collections").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(list["collections"][0]["name"], "jobs");
    assert_eq!(list["collections"][0]["count"], 1);
    assert_eq!(list["collections"][0]["indexes"][0]["fields"], json!(["status", "priority"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_filter_order_and_paginate_under_concurrent_writes() {
    let s = App::start(Config::default());
    declare_jobs(&s).await;
    load(&s, (0..300).map(|i| (format!("j{i:04}"), job(i % 50, if i % 3 == 0 { "RUNNING" } else { "PENDING" }, "p1"))))
        .await;
    let expected: HashSet<String> = (0..300).filter(|i| i % 3 != 0).map(|i| format!("j{i:04}")).collect();

    // Writers add records (some PENDING, at any priority) while a reader pages through PENDING by priority.
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..120 {
                let doc = job(i % 60, if i % 2 == 0 { "PENDING" } else { "DONE" }, "p1");
                let r = s
                    .req(Method::PUT, &format!("/v1/collections/jobs/records/new{i:04}"))
                    .json(&doc)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut last_priority = i64::MAX;
    loop {
        let mut path = "/v1/collections/jobs/records?status=PENDING&order_by=priority&order=desc&limit=17".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = json(s.req(Method::GET, &path).send().await.unwrap()).await;
        assert_eq!(status, 200, "{page}");
        for r in page["records"].as_array().unwrap() {
            assert_eq!(r["document"]["status"], "PENDING");
            let p = r["document"]["priority"].as_i64().unwrap();
            assert!(p <= last_priority, "order broken: {p} after {last_priority}");
            last_priority = p;
            seen.push(r["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await.unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no record twice");
    for id in &expected {
        assert!(unique.contains(id), "{id} missed");
    }

    // Filters on any field, typed values, default order by id, capped limit.
    let (_, page) = json(
        s.req(Method::GET, "/v1/collections/jobs/records?owner=alice&priority=7&limit=5000").send().await.unwrap(),
    )
    .await;
    let ids: Vec<&str> = page["records"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert!(ids.contains(&"j0007") && ids.contains(&"j0057") && ids.iter().all(|id| !id.is_empty()));
    let (_, page) = json(s.req(Method::GET, "/v1/collections/jobs/records?limit=100000").send().await.unwrap()).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 420, "capped at 1000, and 420 records exist");
    let (_, page) =
        json(s.req(Method::GET, "/v1/collections/jobs/records?priority=%227%22").send().await.unwrap()).await;
    assert_eq!(page["records"], json!([]), "a quoted value is a string, which no priority equals");
}

/// Concurrent puts and deletes (on the embedded backend, made in commits shared between requests) each get
/// their own answer: every increment by `If-Match` that is answered 200 counts, every 412 names the version
/// that won, each record is created (201) once, and a refused write leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_and_deletes_each_get_their_own_answer() {
    let s = App::start(Config::default());
    declare_jobs(&s).await;
    let counter = "/v1/collections/jobs/records/counter";
    let (status, _) = json(s.req(Method::PUT, counter).json(&json!({"n": 0})).send().await.unwrap()).await;
    assert_eq!(status, 201);
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let (mut won, mut lost) = (0, 0);
                for i in 0..12 {
                    // An increment by If-Match: 200, or 412 when another task's won first.
                    let (_, cur) = json(s.req(Method::GET, counter).send().await.unwrap()).await;
                    let (version, n) = (cur["version"].as_u64().unwrap(), cur["document"]["n"].as_i64().unwrap());
                    let r = s
                        .req(Method::PUT, counter)
                        .header("If-Match", format!("\"{version}\""))
                        .json(&json!({"n": n + 1}))
                        .send()
                        .await
                        .unwrap();
                    match r.status().as_u16() {
                        200 => won += 1,
                        412 => lost += 1,
                        other => panic!("increment answered {other}"),
                    }
                    // A record of this task's, created, replaced, then deleted; and one that is never written.
                    let own = format!("/v1/collections/jobs/records/t{t}-{i}");
                    let r = s.req(Method::PUT, &own).json(&job(i, "PENDING", "p1")).send().await.unwrap();
                    assert_eq!((r.status().as_u16(), r.headers()["etag"].to_str().unwrap()), (201, "\"1\""));
                    let r = s.req(Method::PUT, &own).json(&job(i, "RUNNING", "p1")).send().await.unwrap();
                    assert_eq!((r.status().as_u16(), r.headers()["etag"].to_str().unwrap()), (200, "\"2\""));
                    if i % 2 == 0 {
                        let r = s.req(Method::DELETE, &own).header("If-Match", "\"2\"").send().await.unwrap();
                        assert_eq!(r.status(), 204);
                    }
                    let never = format!("/v1/collections/jobs/records/never-{t}-{i}");
                    let r = s.req(Method::PUT, &never).header("If-Match", "*").json(&json!({})).send().await.unwrap();
                    assert_eq!(r.status(), 412);
                    let r = s.req(Method::DELETE, &never).send().await.unwrap();
                    assert_eq!(r.status(), 404);
                }
                (won, lost)
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        let (w, l) = task.await.unwrap();
        assert_eq!(w + l, 12);
        won += w;
    }
    let (_, cur) = json(s.req(Method::GET, counter).send().await.unwrap()).await;
    assert_eq!(cur["document"]["n"], won, "every increment answered 200 counted, and only those");
    assert_eq!(cur["version"], won + 1);
    let (_, count) = json(s.req(Method::GET, "/v1/collections/jobs/count").send().await.unwrap()).await;
    assert_eq!(count["count"], 1 + 16 * 6, "the counter and each task's records of odd i");
    let (_, running) =
        json(s.req(Method::GET, "/v1/collections/jobs/records?status=RUNNING&limit=1000").send().await.unwrap()).await;
    assert_eq!(running["records"].as_array().unwrap().len(), 16 * 6, "index entries follow every write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_claim_each_job_once() {
    let s = App::start(Config::default());
    declare_jobs(&s).await;
    load(&s, (0..60).map(|i| (format!("j{i:03}"), job(i, "PENDING", "p1")))).await;
    let mut workers = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let body = json!({"where": {"status": "PENDING"}, "order_by": "priority", "order": "desc",
                                  "set": {"status": "RUNNING", "node": format!("w{w}")}});
                let r = s.req(Method::POST, "/v1/collections/jobs/claim").json(&body).send().await.unwrap();
                match r.status().as_u16() {
                    204 => break,
                    200 => {
                        let rec: Value = json(r).await.1;
                        assert_eq!(rec["document"]["status"], "RUNNING");
                        assert_eq!(rec["document"]["node"], format!("w{w}"));
                        mine.push(rec["id"].as_str().unwrap().to_owned());
                    }
                    other => panic!("claim answered {other}"),
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (60, 60), "every job claimed exactly once");
    let (_, page) =
        json(s.req(Method::GET, "/v1/collections/jobs/records?status=RUNNING&limit=100").send().await.unwrap()).await;
    let by_node: BTreeMap<String, String> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r["document"]["node"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(by_node.len(), 60);
    // Several queries in order; nothing left is 204.
    let body = json!({"queries": [{"where": {"status": "QUEUED"}}, {"where": {"status": "RUNNING"}, "order_by": "priority"}],
                      "set": {"status": "DONE", "result.exit": 0}});
    let (status, rec) = json(s.req(Method::POST, "/v1/collections/jobs/claim").json(&body).send().await.unwrap()).await;
    assert_eq!((status, rec["id"].as_str(), &rec["document"]["result"]), (200, Some("j000"), &json!({"exit": 0})));
    let body = json!({"where": {"status": "QUEUED"}, "set": {"status": "RUNNING"}});
    assert_eq!(s.req(Method::POST, "/v1/collections/jobs/claim").json(&body).send().await.unwrap().status(), 204);
}

#[tokio::test]
async fn transactions_are_all_or_nothing() {
    let s = App::start(Config::default());
    declare_jobs(&s).await;
    let (status, _) = json(
        s.req(Method::POST, "/v1/collections").json(&json!({"name": "runs", "indexes": []})).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let ok = json!({"operations": [
        {"op": "put", "collection": "jobs", "id": "j1", "document": job(1, "PENDING", "p1"), "if_none_match": true},
        {"op": "put", "collection": "runs", "id": "r1", "document": {"job": "j1"}},
    ]});
    let (status, out) = json(s.req(Method::POST, "/v1/transactions").json(&ok).send().await.unwrap()).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["results"][0]["seq"], out["seq"]);
    assert_eq!(out["results"][1]["document"]["job"], "j1");

    // A failing precondition names its record, and nothing of the transaction is written.
    let bad = json!({"operations": [
        {"op": "put", "collection": "runs", "id": "r2", "document": {"job": "j1"}},
        {"op": "check", "collection": "jobs", "id": "j1", "if_match": 7},
    ]});
    let (status, body) = json(s.req(Method::POST, "/v1/transactions").json(&bad).send().await.unwrap()).await;
    assert_eq!(
        (status, body["collection"].as_str(), body["id"].as_str(), body["current_version"].as_u64()),
        (412, Some("jobs"), Some("j1"), Some(1))
    );
    assert_eq!(json(s.req(Method::GET, "/v1/collections/runs/records/r2").send().await.unwrap()).await.0, 404);
    let bad = json!({"operations": [
        {"op": "delete", "collection": "runs", "id": "r1"},
        {"op": "put", "collection": "runs", "id": "r1", "document": {}, "if_none_match": false, "if_match": 1},
        {"op": "delete", "collection": "jobs", "id": "missing"},
    ]});
    let (status, body) = json(s.req(Method::POST, "/v1/transactions").json(&bad).send().await.unwrap()).await;
    assert_eq!((status, body["id"].as_str()), (412, Some("r1")), "deleted earlier in the same transaction");
    assert_eq!(json(s.req(Method::GET, "/v1/collections/runs/records/r1").send().await.unwrap()).await.0, 200);

    let good = json!({"operations": [
        {"op": "check", "collection": "jobs", "id": "j1", "if_match": 1},
        {"op": "delete", "collection": "runs", "id": "r1", "if_match": 1},
        {"op": "put", "collection": "jobs", "id": "j1", "document": job(1, "DONE", "p1"), "if_match": 1},
    ]});
    let (status, out) = json(s.req(Method::POST, "/v1/transactions").json(&good).send().await.unwrap()).await;
    assert_eq!(
        (status, &out["results"][1]["deleted"], out["results"][2]["version"].as_u64()),
        (200, &json!(true), Some(2))
    );
    assert_eq!(json(s.req(Method::GET, "/v1/collections/runs/records/r1").send().await.unwrap()).await.0, 404);
    let unknown = json!({"operations": [{"op": "put", "collection": "nope", "id": "x", "document": {}}]});
    assert_eq!(json(s.req(Method::POST, "/v1/transactions").json(&unknown).send().await.unwrap()).await.0, 404);

    // A put undone by a later delete in the same transaction shows no record (it used to show a stub of
    // commit fields).
    let undone = json!({"operations": [
        {"op": "put", "collection": "runs", "id": "r9", "document": {"job": "j1"}},
        {"op": "delete", "collection": "runs", "id": "r9"},
    ]});
    let (status, out) = json(s.req(Method::POST, "/v1/transactions").json(&undone).send().await.unwrap()).await;
    assert_eq!((status, &out["results"][0], &out["results"][1]["deleted"]), (200, &Value::Null, &json!(true)), "{out}");
}

/// Reads server-sent events until `n` changes arrived: their (id, data).
async fn read_events(resp: Response, n: usize) -> Vec<(u64, Value)> {
    let mut stream = resp.into_body().into_data_stream();
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let (mut id, mut data, mut kind) = (None, None, None);
            for line in event.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<u64>().unwrap());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = Some(v.trim().to_owned());
                }
            }
            if kind.as_deref() == Some("change") {
                out.push((id.unwrap(), data.unwrap()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_resumes_by_long_poll_and_events() {
    let s = App::start(Config::default());
    declare_jobs(&s).await;
    for i in 0..5 {
        s.req(Method::PUT, &format!("/v1/collections/jobs/records/j{i}"))
            .json(&job(i, "PENDING", "p1"))
            .send()
            .await
            .unwrap();
    }
    let (status, page) = json(s.req(Method::GET, "/v1/changes?since=0&limit=3").send().await.unwrap()).await;
    assert_eq!(status, 200);
    let first: Vec<u64> = page["changes"].as_array().unwrap().iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert_eq!(first.len(), 3);
    assert_eq!(page["changes"][0]["op"], "insert");
    let next = page["next_since"].as_u64().unwrap();
    let (_, page) = json(s.req(Method::GET, &format!("/v1/changes?since={next}")).send().await.unwrap()).await;
    let rest: Vec<&str> = page["changes"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(rest, ["j3", "j4"]);
    let tail = page["next_since"].as_u64().unwrap();

    // Long-poll: waits for the next write.
    let poll = s.req(Method::GET, &format!("/v1/changes?since={tail}&wait_ms=10000")).send();
    let writer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.req(Method::DELETE, "/v1/collections/jobs/records/j0").send().await.unwrap()
    };
    let (resp, del) = tokio::join!(poll, writer);
    assert_eq!(del.status(), 204);
    let (_, page) = json(resp.unwrap()).await;
    assert_eq!((page["changes"][0]["id"].as_str(), page["changes"][0]["op"].as_str()), (Some("j0"), Some("delete")));
    // Nothing new: the wait ends empty at its deadline.
    let after_delete = page["next_since"].as_u64().unwrap();
    let (_, page) =
        json(s.req(Method::GET, &format!("/v1/changes?since={after_delete}&wait_ms=200")).send().await.unwrap()).await;
    assert_eq!((page["changes"].as_array().unwrap().len(), page["next_since"].as_u64()), (0, Some(after_delete)));

    // Events: everything from the start, then live writes; reconnecting with Last-Event-ID resumes.
    let resp = s.req(Method::GET, "/v1/changes?since=0").header("Accept", "text/event-stream").send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let live = {
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.req(Method::PUT, "/v1/collections/jobs/records/j9").json(&job(9, "PENDING", "p1")).send().await.unwrap();
        })
    };
    let events = read_events(resp, 7).await;
    live.await.unwrap();
    let ids: Vec<&str> = events.iter().map(|(_, d)| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["j0", "j1", "j2", "j3", "j4", "j0", "j9"]);
    assert!(events.iter().all(|(id, d)| d["seq"] == *id));
    let resume_after = events[4].0;
    let resp = s
        .req(Method::GET, "/v1/changes")
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", resume_after.to_string())
        .send()
        .await
        .unwrap();
    let again = read_events(resp, 2).await;
    assert_eq!(again, events[5..].to_vec());
    assert_eq!(json(s.req(Method::GET, "/v1/changes?since=x").send().await.unwrap()).await.0, 400);
}

/// An admin, a reader, and a writer for each of the projects `p1` and `p2`.
fn tokens() -> Config {
    let token = |name: &str, token: &str, role: Role, project: Option<&str>| TokenConfig {
        name: name.into(),
        sha256: sha(token),
        role,
        project: project.map(Into::into),
    };
    Config {
        tokens: vec![
            token("ops", "admin-token", Role::Admin, None),
            token("dashboard", "reader-token", Role::Read, None),
            token("sched-p1", "p1-token", Role::Write, Some("p1")),
            token("sched-p2", "p2-token", Role::Write, Some("p2")),
            token("admin-p1", "p1-admin-token", Role::Admin, Some("p1")),
        ],
        ..Config::default()
    }
}

#[tokio::test]
async fn tokens_roles_and_project_isolation() {
    let s = App::start(tokens());
    let as_ = |token: &str, m: Method, path: &str| s.req(m, path).bearer_auth(token);
    assert_eq!(s.req(Method::GET, "/healthz").send().await.unwrap().status(), 200);
    assert_eq!(s.req(Method::GET, "/openapi.json").send().await.unwrap().status(), 200);
    let r = s.req(Method::GET, "/v1/collections").send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(json(r).await.0, 401);
    assert_eq!(json(as_("wrong", Method::GET, "/v1/collections").send().await.unwrap()).await.0, 401);
    assert_eq!(json(s.req(Method::GET, "/metrics").send().await.unwrap()).await.0, 401);

    let spec = json!({"name": "jobs", "indexes": [{"name": "project", "fields": ["project"]}]});
    assert_eq!(json(as_("p1-token", Method::POST, "/v1/collections").json(&spec).send().await.unwrap()).await.0, 403);
    // Indexes serve every project: a project's admin may not declare them.
    let (status, body) =
        json(as_("p1-admin-token", Method::POST, "/v1/collections").json(&spec).send().await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("limited to project"), "{body}");
    assert_eq!(
        json(as_("admin-token", Method::POST, "/v1/collections").json(&spec).send().await.unwrap()).await.0,
        201
    );
    let put = |token: &str, id: &str, project: &str| {
        as_(token, Method::PUT, &format!("/v1/collections/jobs/records/{id}")).json(&job(1, "PENDING", project)).send()
    };
    assert_eq!(json(put("reader-token", "a", "p1").await.unwrap()).await.0, 403);
    assert_eq!(json(put("p1-token", "a", "p1").await.unwrap()).await.0, 201);
    assert_eq!(json(put("p1-token", "a2", "p1").await.unwrap()).await.0, 201);
    assert_eq!(json(put("p2-token", "b", "p2").await.unwrap()).await.0, 201);
    let (status, body) = json(put("p1-token", "c", "p2").await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    let no_project = as_("p1-token", Method::PUT, "/v1/collections/jobs/records/d").json(&json!({"x": 1})).send();
    assert_eq!(json(no_project.await.unwrap()).await.0, 403);
    // Another project's record: invisible to read and delete; a create over its id is refused.
    assert_eq!(json(as_("p1-token", Method::GET, "/v1/collections/jobs/records/b").send().await.unwrap()).await.0, 404);
    assert_eq!(
        json(as_("p1-token", Method::DELETE, "/v1/collections/jobs/records/b").send().await.unwrap()).await.0,
        404
    );
    assert_eq!(json(put("p1-token", "b", "p1").await.unwrap()).await.0, 403);
    assert_eq!(
        json(as_("reader-token", Method::GET, "/v1/collections/jobs/records/b").send().await.unwrap()).await.0,
        200
    );

    let ids = |body: &Value| -> Vec<String> {
        body["records"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
    };
    let (_, body) = json(as_("p1-token", Method::GET, "/v1/collections/jobs/records").send().await.unwrap()).await;
    assert_eq!(ids(&body), ["a", "a2"]);
    let (_, body) = json(as_("reader-token", Method::GET, "/v1/collections/jobs/records").send().await.unwrap()).await;
    assert_eq!(ids(&body), ["a", "a2", "b"]);
    assert_eq!(
        json(as_("p1-token", Method::GET, "/v1/collections/jobs/records?project=p2").send().await.unwrap()).await.0,
        403
    );
    let (_, body) = json(as_("p2-token", Method::GET, "/v1/collections").send().await.unwrap()).await;
    assert_eq!(body["collections"][0]["count"], 1);

    // Claims, transactions and the change feed are scoped too.
    let claim = json!({"where": {"status": "PENDING"}, "set": {"status": "RUNNING"}});
    let (status, rec) =
        json(as_("p2-token", Method::POST, "/v1/collections/jobs/claim").json(&claim).send().await.unwrap()).await;
    assert_eq!((status, rec["id"].as_str()), (200, Some("b")));
    assert_eq!(
        as_("p2-token", Method::POST, "/v1/collections/jobs/claim").json(&claim).send().await.unwrap().status(),
        204
    );
    let txn =
        json!({"operations": [{"op": "put", "collection": "jobs", "id": "x", "document": job(1, "PENDING", "p2")}]});
    assert_eq!(json(as_("p1-token", Method::POST, "/v1/transactions").json(&txn).send().await.unwrap()).await.0, 403);
    let txn = json!({"operations": [{"op": "check", "collection": "jobs", "id": "b", "if_match": 2}]});
    assert_eq!(json(as_("p1-token", Method::POST, "/v1/transactions").json(&txn).send().await.unwrap()).await.0, 412);
    let (_, feed) = json(as_("p1-token", Method::GET, "/v1/changes").send().await.unwrap()).await;
    let seen: Vec<&str> = feed["changes"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(seen, ["a", "a2"]);
    assert_eq!(as_("reader-token", Method::GET, "/metrics").send().await.unwrap().status(), 200);
}

/// For a project-scoped token, another project's record answers exactly as an absent one on every route
/// (status and body, the id aside), except a create over it, which is 403 and says no more than that the id
/// is taken. Nothing of it is changed.
#[tokio::test]
async fn another_projects_records_look_absent() {
    let s = App::start(tokens());
    let as_ = |token: &str, m: Method, path: &str| s.req(m, path).bearer_auth(token);
    let spec = json!({"name": "jobs", "indexes": [
        {"name": "project", "fields": ["project"]},
        {"name": "owner", "fields": ["owner"]},
    ]});
    assert_eq!(
        json(as_("admin-token", Method::POST, "/v1/collections").json(&spec).send().await.unwrap()).await.0,
        201
    );
    let secret = json!({"project": "p2", "owner": "bob", "status": "PENDING", "priority": 7});
    let r = as_("p2-token", Method::PUT, "/v1/collections/jobs/records/theirs").json(&secret).send();
    assert_eq!(r.await.unwrap().status(), 201);
    let mine = json!({"project": "p1", "owner": "bob", "status": "PENDING", "priority": 1});

    // Each request, sent by the p1 token about `theirs` (p2's) and about `nobody` (absent).
    let ask = |id: &str, kind: usize| {
        let rec = format!("/v1/collections/jobs/records/{id}");
        let txn = |op: Value| as_("p1-token", Method::POST, "/v1/transactions").json(&json!({"operations": [op]}));
        let op = |extra: Value| {
            let mut o = json!({"collection": "jobs", "id": id});
            o.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            o
        };
        match kind {
            0 => as_("p1-token", Method::GET, &rec),
            1 => as_("p1-token", Method::PUT, &rec).header("if-match", "*").json(&mine),
            2 => as_("p1-token", Method::PUT, &rec).header("if-match", "\"1\"").json(&mine),
            3 => as_("p1-token", Method::DELETE, &rec),
            4 => as_("p1-token", Method::DELETE, &rec).header("if-match", "\"1\""),
            5 => txn(op(json!({"op": "check", "if_match": 1}))),
            6 => txn(op(json!({"op": "check", "if_none_match": true}))),
            7 => txn(op(json!({"op": "delete"}))),
            8 => txn(op(json!({"op": "delete", "if_match": 1}))),
            9 => txn(op(json!({"op": "put", "if_match": 1, "document": mine.clone()}))),
            10 => as_(
                "p1-token",
                Method::GET,
                &format!("/v1/collections/jobs/records?owner={}", if id == "theirs" { "bob" } else { "nobody" }),
            ),
            _ => {
                let owner = if id == "theirs" { "bob" } else { "nobody" };
                let claim = json!({"where": {"owner": owner}, "set": {"status": "RUNNING"}});
                as_("p1-token", Method::POST, "/v1/collections/jobs/claim").json(&claim)
            }
        }
    };
    // The id aside, and the sequence of a transaction that committed.
    let normal = |body: Value| -> String {
        let text = body.to_string().replace("theirs", "ID").replace("nobody", "ID");
        match body["seq"].as_u64() {
            Some(seq) => text.replace(&format!("\"seq\":{seq}"), "\"seq\":SEQ"),
            None => text,
        }
    };
    for kind in 0..12 {
        let (status, body) = json(ask("theirs", kind).send().await.unwrap()).await;
        let (status_absent, body_absent) = json(ask("nobody", kind).send().await.unwrap()).await;
        assert_eq!((status, normal(body.clone())), (status_absent, normal(body_absent)), "request {kind}");
        assert!(!body.to_string().contains("p2") && !body.to_string().contains("\"current_version\":1"), "{body}");
    }

    // A create over it, plain or create-only, cannot succeed: 403, revealing nothing but that the id is taken.
    let rec = "/v1/collections/jobs/records/theirs";
    for create_only in [false, true] {
        let mut r = as_("p1-token", Method::PUT, rec).json(&mine);
        if create_only {
            r = r.header("if-none-match", "*");
        }
        let (status, body) = json(r.send().await.unwrap()).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("id is taken"), "{body}");
        assert!(body.get("current_version").is_none() && !body.to_string().contains("p2"), "{body}");
    }
    let put = json!({"op": "put", "collection": "jobs", "id": "theirs", "document": mine});
    let (status, body) = json(
        as_("p1-token", Method::POST, "/v1/transactions").json(&json!({"operations": [put]})).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.get("current_version").is_none() && !body.to_string().contains("p2"), "{body}");

    // p2's record is as it was.
    let (status, theirs) = json(as_("p2-token", Method::GET, rec).send().await.unwrap()).await;
    assert_eq!((status, theirs["version"].as_u64(), &theirs["document"]), (200, Some(1), &secret));
}

/// A scoped token's feed shows its records leaving its project: deleted, or moved to another project (as a
/// delete without the document, which it may not see).
#[tokio::test]
async fn scoped_feeds_show_deletes_and_moves_out_of_the_project() {
    let s = App::start(tokens());
    let as_ = |token: &str, m: Method, path: &str| s.req(m, path).bearer_auth(token);
    let spec = json!({"name": "jobs", "indexes": []});
    assert_eq!(
        json(as_("admin-token", Method::POST, "/v1/collections").json(&spec).send().await.unwrap()).await.0,
        201
    );
    let put = |token: &str, id: &str, project: &str| {
        as_(token, Method::PUT, &format!("/v1/collections/jobs/records/{id}")).json(&job(1, "PENDING", project)).send()
    };
    assert_eq!(json(put("p1-token", "a", "p1").await.unwrap()).await.0, 201);
    assert_eq!(json(put("p1-token", "b", "p1").await.unwrap()).await.0, 201);
    assert_eq!(json(put("p2-token", "c", "p2").await.unwrap()).await.0, 201);
    let (status, _) =
        json(as_("p1-token", Method::DELETE, "/v1/collections/jobs/records/b").send().await.unwrap()).await;
    assert_eq!(status, 204);
    assert_eq!(json(put("admin-token", "a", "p2").await.unwrap()).await.0, 200, "moved to p2");
    assert_eq!(
        json(as_("p2-token", Method::DELETE, "/v1/collections/jobs/records/c").send().await.unwrap()).await.0,
        204
    );
    let feed = |token: &'static str| {
        let req = as_(token, Method::GET, "/v1/changes?since=0");
        async move {
            let (status, body) = json(req.send().await.unwrap()).await;
            assert_eq!(status, 200, "{body}");
            body["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let moved = c.get("moved_out").is_some();
                    (
                        c["id"].as_str().unwrap().to_owned(),
                        c["op"].as_str().unwrap().to_owned(),
                        c["document"].is_null(),
                        moved,
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let t = |id: &str, op: &str, no_doc: bool, moved: bool| (id.to_owned(), op.to_owned(), no_doc, moved);
    assert_eq!(
        feed("p1-token").await,
        [
            t("a", "insert", false, false),
            t("b", "insert", false, false),
            t("b", "delete", true, false),
            t("a", "delete", true, true)
        ]
    );
    assert_eq!(
        feed("p2-token").await,
        [t("c", "insert", false, false), t("a", "update", false, false), t("c", "delete", true, false)]
    );
    assert_eq!(feed("reader-token").await.len(), 6, "unscoped tokens see every change as it is");
}

/// `/v1/stats` and `/metrics` show figures of the whole database: unscoped tokens only.
#[tokio::test]
async fn stats_and_metrics_are_for_unscoped_tokens() {
    let s = App::start(tokens());
    for path in ["/v1/stats", "/metrics"] {
        for (token, want) in [("reader-token", 200), ("admin-token", 200), ("p1-token", 403), ("p2-token", 403)] {
            let r = s.req(Method::GET, path).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            if status == 403 {
                let (_, body) = json(r).await;
                assert!(body["detail"].as_str().unwrap().contains("limited to project"), "{body}");
            }
            assert_eq!(status, want, "{token} {path}");
        }
    }
}

#[tokio::test]
async fn malformed_input_is_a_4xx_and_changes_nothing() {
    let s = App::start(Config { limits: Limits { max_body_bytes: 65536, ..Limits::default() }, ..Config::default() });
    declare_jobs(&s).await;
    let url = "/v1/collections/jobs/records/j1";
    let raw = |m: Method, path: &str, body: &'static str| {
        s.req(m, path).header("content-type", "application/json").body(body).send()
    };
    let cases = vec![
        (raw(Method::PUT, url, "{\"status\": ").await, 400),
        (raw(Method::PUT, url, "[1, 2]").await, 400),
        (raw(Method::PUT, url, "\"text\"").await, 400),
        (raw(Method::PUT, url, "").await, 400),
        (raw(Method::POST, "/v1/collections", "{\"name\": \"x\", \"indexes\": \"status\"}").await, 400),
        (raw(Method::POST, "/v1/collections", "{\"name\": \"bad name\", \"indexes\": []}").await, 400),
        (
            raw(Method::POST, "/v1/collections", "{\"name\": \"x\", \"indexes\": [{\"name\": \"i\", \"fields\": []}]}")
                .await,
            400,
        ),
        (raw(Method::POST, "/v1/collections/jobs/claim", "{\"where\": {}, \"set\": {}}").await, 400),
        (raw(Method::POST, "/v1/collections/jobs/claim", "{\"set\": {\"a\": 1}, \"order\": \"up\"}").await, 400),
        (raw(Method::POST, "/v1/transactions", "{\"operations\": []}").await, 400),
        (
            raw(
                Method::POST,
                "/v1/transactions",
                "{\"operations\": [{\"op\": \"put\", \"collection\": \"jobs\", \"id\": 5}]}",
            )
            .await,
            400,
        ),
        (raw(Method::POST, "/v1/transactions", "{\"ops\": []}").await, 400),
        (s.req(Method::PUT, url).header("If-Match", "v1").json(&json!({})).send().await, 400),
        (s.req(Method::PUT, url).header("If-None-Match", "\"1\"").json(&json!({})).send().await, 400),
        (s.req(Method::PUT, "/v1/collections/jobs/records/a%0Ab").json(&json!({})).send().await, 400),
        (
            s.req(Method::PUT, &format!("/v1/collections/jobs/records/{}", "x".repeat(600)))
                .json(&json!({}))
                .send()
                .await,
            400,
        ),
        (s.req(Method::GET, "/v1/collections/bad%20name/records/x").send().await, 400),
        (s.req(Method::GET, &format!("/v1/collections/{}/records", "c".repeat(65))).send().await, 400),
        (s.req(Method::GET, "/v1/collections/jobs/records?limit=many").send().await, 400),
        (s.req(Method::GET, "/v1/collections/jobs/records?limit=0").send().await, 400),
        (s.req(Method::GET, "/v1/collections/jobs/records?order=sideways").send().await, 400),
        (s.req(Method::GET, "/v1/collections/jobs/records?cursor=zz").send().await, 400),
        (s.req(Method::GET, "/v1/collections/jobs/records?order_by=name").send().await, 400),
        (s.req(Method::GET, "/v1/changes?collection=bad%20name").send().await, 400),
        (
            s.req(Method::GET, "/v1/changes")
                .header("Accept", "text/event-stream")
                .header("Last-Event-ID", "x")
                .send()
                .await,
            400,
        ),
        (s.req(Method::GET, "/v1/nothing").send().await, 404),
        (s.req(Method::PATCH, url).json(&json!({})).send().await, 405),
        // Far past the limit, so that the client is still writing when the server has read enough to refuse.
        (s.req(Method::PUT, url).json(&json!({"blob": "x".repeat(4_000_000)})).send().await, 413),
    ];
    for (i, (resp, want)) in cases.into_iter().enumerate() {
        let (status, body) = json(resp.unwrap()).await;
        assert_eq!(status, want, "case {i}: {body}");
    }
    // The job queue's collections are the queue's alone.
    let queue_writes = [
        (Method::PUT, "/v1/collections/_queue_jobs/records/j1", r#"{"state": "available"}"#),
        (Method::DELETE, "/v1/collections/_queue_unique/records/k", ""),
        (Method::POST, "/v1/collections/_queue_jobs/claim", r#"{"set": {"state": "running"}}"#),
        (Method::POST, "/v1/collections", r#"{"name": "_queue_jobs", "indexes": []}"#),
        (
            Method::POST,
            "/v1/transactions",
            r#"{"operations": [{"op": "put", "collection": "_queue_jobs", "id": "x", "document": {}}]}"#,
        ),
    ];
    for (method, path, body) in queue_writes {
        let (status, text) = json(raw(method.clone(), path, body).await.unwrap()).await;
        assert_eq!(status, 403, "{method} {path}: {text}");
        assert!(text.to_string().contains("written by the queue only"), "{text}");
    }
    let (_, page) = json(s.req(Method::GET, "/v1/collections/jobs/records").send().await.unwrap()).await;
    assert_eq!(page["records"], json!([]), "nothing was written");
    let (_, list) = json(s.req(Method::GET, "/v1/collections").send().await.unwrap()).await;
    assert_eq!(list["collections"].as_array().unwrap().len(), 1, "nothing was declared");
}

#[tokio::test]
async fn sheds_load_at_the_concurrency_limit() {
    let s = App::start(Config {
        limits: Limits { max_concurrency: 1, max_wait_ms: 5000, ..Limits::default() },
        ..Config::default()
    });
    let waiting = s.req(Method::GET, "/v1/changes?since=0&wait_ms=1500").send();
    let probe = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = s.req(Method::GET, "/v1/collections").send().await.unwrap();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let health = s.req(Method::GET, "/healthz").send().await.unwrap().status();
        (json(r).await.0, retry, health)
    };
    let (waited, (status, retry, health)) = tokio::join!(waiting, probe);
    assert_eq!(waited.unwrap().status(), 200);
    assert_eq!((status, retry.as_deref(), health.as_u16()), (503, Some("1"), 200));
    let text = text(s.req(Method::GET, "/metrics").send().await.unwrap()).await;
    assert!(text.contains("cairn_http_shed_total 1\n"), "{text}");
}

#[tokio::test]
async fn metrics_stats_and_openapi() {
    let s = App::start(Config::default());
    declare_jobs(&s).await;
    s.req(Method::PUT, "/v1/collections/jobs/records/j1").json(&job(1, "PENDING", "p1")).send().await.unwrap();
    s.req(Method::GET, "/v1/collections/jobs/records/nope").send().await.unwrap();
    let r = s.req(Method::GET, "/metrics").send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = text(r).await;
    for want in [
        "cairn_http_requests_total{route=\"/v1/collections/{collection}/records/{id}\",method=\"PUT\",status=\"201\"} 1",
        "cairn_http_requests_total{route=\"/v1/collections/{collection}/records/{id}\",method=\"GET\",status=\"404\"} 1",
        "cairn_http_request_duration_seconds_count{route=\"/v1/collections\"} 1",
        "cairn_changes_bytes ",
        "cairn_changes_trimmed_through ",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    // The embedded engine's figures; the PostgreSQL backend has no engine, and shows none.
    for engine in ["cairn_level_bytes{level=\"0\"}", "cairn_compactions_total ", "cairn_wal_syncs_total "] {
        assert_eq!(text.contains(engine), s.backend == "embedded", "{engine} on {}:\n{text}", s.backend);
    }
    let (status, stats) = json(s.req(Method::GET, "/v1/stats").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(stats["last_sequence"].as_u64().unwrap() >= 1, "{stats}");
    if s.backend == "postgres" {
        assert_eq!((&stats["backend"], &stats["collections"]["jobs"]), (&json!("postgres"), &json!(1)), "{stats}");
        assert!(stats["database_bytes"].as_u64().unwrap() > 0, "{stats}");
    }
    let (status, doc) = json(s.req(Method::GET, "/openapi.json").send().await.unwrap()).await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.0.3")));
}

/// `/v1/admin/backup` and `/v1/admin/check` act on the live store for unscoped admins only; the backup is a
/// store of its own holding what was written before it, checked healthy; a used destination is refused.
#[tokio::test]
async fn admin_backup_and_check_of_the_live_store() {
    let s = App::start(tokens());
    let as_ = |token: &str, m: Method, path: &str| s.req(m, path).bearer_auth(token);
    let spec = json!({"name": "jobs", "indexes": [{"name": "project", "fields": ["project"]}]});
    assert_eq!(
        json(as_("admin-token", Method::POST, "/v1/collections").json(&spec).send().await.unwrap()).await.0,
        201
    );
    for i in 0..20 {
        let r = as_("p1-token", Method::PUT, &format!("/v1/collections/jobs/records/j{i}"))
            .json(&job(i, "PENDING", "p1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let dest = tempfile::tempdir().unwrap();
    let to = dest.path().join("copy");
    let body = json!({"to": to, "check": true});
    for token in ["p1-token", "reader-token"] {
        let (status, _) = json(as_(token, Method::POST, "/v1/admin/backup").json(&body).send().await.unwrap()).await;
        assert_eq!(status, 403, "{token}");
    }
    let relative = json!({"to": "copy"});
    assert_eq!(
        json(as_("admin-token", Method::POST, "/v1/admin/backup").json(&relative).send().await.unwrap()).await.0,
        400
    );
    assert!(!to.exists(), "a refused backup wrote nothing");

    let (status, made) =
        json(as_("admin-token", Method::POST, "/v1/admin/backup").json(&body).send().await.unwrap()).await;
    if s.backend == "postgres" {
        // The database is backed up with PostgreSQL's tools; the server says so and writes nothing.
        assert_eq!((status, &made["type"]), (501, &json!("/problems/not-supported")), "{made}");
        assert!(made["detail"].as_str().unwrap().contains("pg_dump"), "{made}");
        assert!(!to.exists());
        let (status, checked) = json(as_("admin-token", Method::POST, "/v1/admin/check").send().await.unwrap()).await;
        assert_eq!(
            (status, &checked["healthy"], &checked["backend"]),
            (200, &json!(true), &json!("postgres")),
            "{checked}"
        );
        let checks = checked["checks"].as_array().unwrap();
        assert!(checks.iter().any(|c| c["check"] == "index jobs.project" && c["ok"] == true), "{checked}");
        assert!(checks.iter().any(|c| c["check"] == "collection jobs" && c["ok"] == true), "{checked}");
        assert_eq!(json(as_("p2-token", Method::POST, "/v1/admin/check").send().await.unwrap()).await.0, 403);
        return;
    }
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["check"]["healthy"], true, "{made}");
    assert_eq!((made["check"]["collections"].as_u64(), made["check"]["index_entries"].as_u64()), (Some(1), Some(20)));
    // Written after the backup: not in it.
    let r = as_("p1-token", Method::PUT, "/v1/collections/jobs/records/late").json(&job(1, "PENDING", "p1"));
    assert_eq!(r.send().await.unwrap().status(), 201);
    let copy = cairn_store::Store::open(&to).unwrap();
    let jobs = copy.collection_dyn("jobs").unwrap();
    assert_eq!(jobs.count(&cairn_store::Query::new()).unwrap(), 20);
    assert!(jobs.get("late").unwrap().is_none());
    assert_eq!(copy.db().last_sequence(), made["last_sequence"].as_u64().unwrap());
    drop(jobs);
    drop(copy);
    let (status, again) =
        json(as_("admin-token", Method::POST, "/v1/admin/backup").json(&body).send().await.unwrap()).await;
    assert_eq!(status, 409, "{again}");

    let (status, checked) = json(as_("admin-token", Method::POST, "/v1/admin/check").send().await.unwrap()).await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!((checked["healthy"].as_bool(), checked["index_entries"].as_u64()), (Some(true), Some(21)), "{checked}");
    assert_eq!(json(as_("p2-token", Method::POST, "/v1/admin/check").send().await.unwrap()).await.0, 403);
    // The copy the check made beside the data directory is gone.
    let parent = std::path::Path::new(checked["dir"].as_str().unwrap()).parent().unwrap().to_path_buf();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".check-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `GET .../count` counts what a query with the same filters lists, across every page; a scoped token
/// counts its project's records only; list parameters, unknown collections and filters on another project
/// are refused.
#[tokio::test]
async fn counts_match_the_filtered_listings() {
    let s = App::start(tokens());
    let as_ = |token: &str, m: Method, path: &str| s.req(m, path).bearer_auth(token);
    let spec = json!({"name": "jobs", "indexes": [{"name": "status_priority", "fields": ["status", "priority"]}]});
    assert_eq!(
        json(as_("admin-token", Method::POST, "/v1/collections").json(&spec).send().await.unwrap()).await.0,
        201
    );
    let statuses = ["PENDING", "RUNNING", "DONE"];
    let ops: Vec<Value> = (0..250)
        .map(|i| {
            let doc = job(i % 7, statuses[(i % 3) as usize], if i % 5 == 0 { "p2" } else { "p1" });
            json!({"op": "put", "collection": "jobs", "id": format!("j{i:03}"), "document": doc})
        })
        .collect();
    for chunk in ops.chunks(100) {
        let body = json!({"operations": chunk});
        assert_eq!(
            json(as_("admin-token", Method::POST, "/v1/transactions").json(&body).send().await.unwrap()).await.0,
            200
        );
    }
    let count = |token: &'static str, query: &'static str| {
        let req = as_(token, Method::GET, &format!("/v1/collections/jobs/count?{query}"));
        async move { json(req.send().await.unwrap()).await }
    };
    let listed = |query: &str| {
        let mut n = 0;
        let mut cursor: Option<String> = None;
        let s = &s;
        let query = query.to_owned();
        async move {
            loop {
                let mut path = format!("/v1/collections/jobs/records?limit=40&{query}");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let (status, page) =
                    json(s.req(Method::GET, &path).bearer_auth("admin-token").send().await.unwrap()).await;
                assert_eq!(status, 200, "{page}");
                n += page["records"].as_array().unwrap().len() as u64;
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => return n,
                }
            }
        }
    };
    for query in ["", "status=PENDING", "status=RUNNING&priority=3", "project=p2", "owner=nobody"] {
        let (status, body) = count("admin-token", query).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["count"].as_u64().unwrap(), listed(query).await, "{query}");
    }
    assert_eq!(count("admin-token", "").await.1["count"], 250);
    assert_eq!(count("admin-token", "status=DONE&project=p1").await.1["count"], listed("status=DONE&project=p1").await);
    // A scoped token counts its own project's records, and may not ask for another's.
    assert_eq!(count("p1-token", "").await.1["count"], 200);
    assert_eq!(count("p1-token", "status=PENDING").await.1["count"], listed("status=PENDING&project=p1").await);
    assert_eq!(count("p1-token", "project=p2").await.0, 403);
    for bad in ["limit=5", "cursor=x", "order_by=priority", "order=desc"] {
        assert_eq!(count("admin-token", bad).await.0, 400, "{bad}");
    }
    let (status, _) = json(as_("admin-token", Method::GET, "/v1/collections/nope/count").send().await.unwrap()).await;
    assert_eq!(status, 404);
}
