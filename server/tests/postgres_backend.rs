//! The PostgreSQL backend against a real PostgreSQL (`cairn-pgcluster`: the cluster named by
//! `CAIRN_TEST_POSTGRES`, or one of its own), a fresh database per test: the same answers as the embedded
//! backend, commit order without gaps, and several backends sharing one database.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_pgcluster::Postgres;
use cairn_server::backend::{
    Backend, EmbeddedBackend, OpKind, OpResult, Operation, PostgresBackend, PostgresOptions, Precondition, Scope,
    LISTENER_NAME,
};
use cairn_server::ChangeRetention;
use cairn_store::{ChangeOp, CollectionSpec, IndexSpec, Query, Store};
use serde_json::{json, Map, Value};

async fn open(url: &str) -> PostgresBackend {
    PostgresBackend::open(PostgresOptions { pool_size: 8, ..PostgresOptions::new(url) }).await.unwrap()
}

fn all() -> Scope {
    Scope::unscoped("test")
}

fn project(p: &str) -> Scope {
    Scope { name: "p".into(), project: Some(p.into()) }
}

fn jobs_spec() -> CollectionSpec {
    CollectionSpec::new(
        "jobs",
        vec![
            IndexSpec::new("by_status_priority", &["status", "-priority"]),
            IndexSpec::new("by_owner", &["owner", "created"]),
            IndexSpec::new("by_nested", &["r.gpus"]),
        ],
    )
}

fn op(kind: OpKind, collection: &str, id: &str, doc: Option<Value>, if_match: Option<u64>, none: bool) -> Operation {
    Operation { op: kind, collection: collection.into(), id: id.into(), document: doc, if_match, if_none_match: none }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn puts_gets_deletes_and_every_precondition() {
    let pg = Postgres::shared();
    let b = open(&pg.database()).await;
    assert!(b.declare(jobs_spec()).await.unwrap(), "new");
    assert!(!b.declare(jobs_spec()).await.unwrap(), "declared again");
    let put = |id: &str, doc: Value, pre| b.put(all(), "jobs".into(), id.into(), doc, pre);
    let (s, created) = put("a", json!({"status": "PENDING"}), Precondition::Absent).await.unwrap();
    assert!(created);
    assert_eq!((s.version, s.seq), (1, 1));
    assert_eq!(s.created_at_ms, s.updated_at_ms);
    let again = put("a", json!({}), Precondition::Absent).await.unwrap_err();
    assert_eq!((again.status.as_u16(), &again.body()["current_version"]), (412, &json!(1)));
    let (s2, created) = put("a", json!({"status": "RUNNING"}), Precondition::Version(1)).await.unwrap();
    assert!(!created);
    assert_eq!((s2.version, s2.seq, s2.created_at_ms), (2, 2, s.created_at_ms));
    assert_eq!(put("a", json!({}), Precondition::Version(1)).await.unwrap_err().status.as_u16(), 412);
    assert_eq!(put("b", json!({}), Precondition::Exists).await.unwrap_err().status.as_u16(), 412);
    assert_eq!(put("a", json!({"x": 1}), Precondition::Exists).await.unwrap().0.version, 3);
    assert_eq!(put("a", json!({"x": 2}), Precondition::None).await.unwrap().0.version, 4);
    assert_eq!(put("a", json!([1]), Precondition::None).await.unwrap_err().status.as_u16(), 400);
    assert_eq!(put("", json!({}), Precondition::None).await.unwrap_err().status.as_u16(), 400);
    let got = b.get(all(), "jobs".into(), "a".into()).await.unwrap();
    assert_eq!((got.version, got.seq, got.doc.clone(), got.created_at_ms), (4, 4, json!({"x": 2}), s.created_at_ms));
    assert_eq!(b.get(all(), "nope".into(), "a".into()).await.unwrap_err().status.as_u16(), 404);
    assert_eq!(b.get(all(), "jobs".into(), "zz".into()).await.unwrap_err().status.as_u16(), 404);
    let del = |id: &str, pre| b.delete(all(), "jobs".into(), id.into(), pre);
    assert_eq!(del("a", Precondition::Version(3)).await.unwrap_err().status.as_u16(), 412);
    del("a", Precondition::Version(4)).await.unwrap();
    assert_eq!(del("a", Precondition::Exists).await.unwrap_err().status.as_u16(), 404);
    // A re-created record starts again at version 1.
    assert_eq!(put("a", json!({}), Precondition::None).await.unwrap().0.version, 1);
    let changes = b.changes_since(0, 100).await.unwrap();
    let ops: Vec<(u64, ChangeOp, u64)> = changes.iter().map(|c| (c.seq, c.op, c.version)).collect();
    assert_eq!(
        ops,
        [
            (1, ChangeOp::Insert, 1),
            (2, ChangeOp::Update, 2),
            (3, ChangeOp::Update, 3),
            (4, ChangeOp::Update, 4),
            (5, ChangeOp::Delete, 5),
            (6, ChangeOp::Insert, 1)
        ]
    );
    assert_eq!(b.last_sequence(), 6);
    let check = b.check().await.unwrap();
    assert_eq!(check["healthy"], true, "{check}");
    let backup = b.backup("/tmp/x".into(), false).await.unwrap_err();
    assert_eq!(backup.status.as_u16(), 501);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scopes_hide_other_projects() {
    let pg = Postgres::shared();
    let b = open(&pg.database()).await;
    b.declare(jobs_spec()).await.unwrap();
    b.put(all(), "jobs".into(), "x".into(), json!({"project": "p2"}), Precondition::None).await.unwrap();
    b.put(all(), "jobs".into(), "y".into(), json!({"project": "p1"}), Precondition::None).await.unwrap();
    let p1 = project("p1");
    assert_eq!(b.get(p1.clone(), "jobs".into(), "x".into()).await.unwrap_err().status.as_u16(), 404);
    let put = |pre| b.put(p1.clone(), "jobs".into(), "x".into(), json!({"project": "p1"}), pre);
    assert_eq!(put(Precondition::None).await.unwrap_err().status.as_u16(), 403);
    let e = put(Precondition::Version(1)).await.unwrap_err();
    assert_eq!((e.status.as_u16(), &e.body()["current_version"]), (412, &Value::Null));
    let del = b.delete(p1.clone(), "jobs".into(), "x".into(), Precondition::Exists).await.unwrap_err();
    assert_eq!(del.status.as_u16(), 404);
    let colls = b.collections(p1.clone()).await.unwrap();
    assert_eq!(colls[0].count, 1);
    assert_eq!(b.collections(all()).await.unwrap()[0].count, 2);
    let mut set = Map::new();
    set.insert("status".into(), json!("RUNNING"));
    let claimed = b.claim(p1.clone(), "jobs".into(), vec![Query::new()], set).await.unwrap().unwrap();
    assert_eq!(claimed.id, "y", "the scope's own record only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_are_all_or_nothing() {
    let pg = Postgres::shared();
    let b = open(&pg.database()).await;
    b.declare(jobs_spec()).await.unwrap();
    b.declare(CollectionSpec::new("runs", vec![])).await.unwrap();
    b.put(all(), "jobs".into(), "a".into(), json!({"n": 1}), Precondition::None).await.unwrap();
    let ops = vec![
        op(OpKind::Put, "jobs", "a", Some(json!({"n": 2})), Some(1), false),
        op(OpKind::Put, "runs", "r", Some(json!({"job": "a"})), None, true),
        op(OpKind::Check, "jobs", "a", None, Some(2), false),
        op(OpKind::Put, "runs", "r", Some(json!({"job": "a", "again": true})), None, false),
    ];
    let c = b.transaction(all(), ops).await.unwrap();
    assert_eq!(c.seq, 2);
    let versions: Vec<Option<(u64, u64)>> = c
        .results
        .iter()
        .map(|r| match r {
            OpResult::Record(Some(s)) => Some((s.version, s.seq)),
            _ => None,
        })
        .collect();
    assert_eq!(versions, [Some((2, 2)), Some((2, 2)), Some((2, 0)), Some((2, 2))]);
    let feed = b.changes_since(1, 1).await.unwrap();
    assert_eq!(feed.len(), 2, "one event per record, the transaction's events together: {feed:?}");
    assert!(feed.iter().all(|c| c.seq == 2));
    // A failed precondition, a missing collection, a delete of a missing record: nothing written.
    let failing = [
        (
            vec![
                op(OpKind::Put, "jobs", "b", Some(json!({})), None, false),
                op(OpKind::Check, "jobs", "a", None, Some(9), false),
            ],
            412,
        ),
        (
            vec![
                op(OpKind::Put, "jobs", "b", Some(json!({})), None, false),
                op(OpKind::Put, "nope", "a", Some(json!({})), None, false),
            ],
            404,
        ),
        (
            vec![
                op(OpKind::Put, "jobs", "b", Some(json!({})), None, false),
                op(OpKind::Delete, "jobs", "zz", None, None, false),
            ],
            412,
        ),
    ];
    for (ops, status) in failing {
        assert_eq!(b.transaction(all(), ops).await.unwrap_err().status.as_u16(), status);
        assert_eq!(b.get(all(), "jobs".into(), "b".into()).await.unwrap_err().status.as_u16(), 404);
    }
    assert_eq!(b.last_sequence(), 2);
    // Delete then put of one record: an update; only checks: seq 0.
    let c = b
        .transaction(
            all(),
            vec![
                op(OpKind::Delete, "jobs", "a", None, None, false),
                op(OpKind::Put, "jobs", "a", Some(json!({"n": 3})), None, false),
            ],
        )
        .await
        .unwrap();
    assert!(matches!(&c.results[1], OpResult::Record(Some(s)) if s.version == 3));
    let feed = b.changes_since(2, 10).await.unwrap();
    assert_eq!(feed.iter().map(|c| (c.op, c.version)).collect::<Vec<_>>(), [(ChangeOp::Update, 3)]);
    let only_checks = b.transaction(all(), vec![op(OpKind::Check, "jobs", "a", None, Some(3), false)]).await.unwrap();
    assert_eq!(only_checks.seq, 0);
}

/// Records with mixed statuses, tied and missing priorities, nested fields: every query pages in the same
/// order, with the same page boundaries, as the embedded backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_page_as_the_embedded_backend_does() {
    let pg = Postgres::shared();
    let b = open(&pg.database()).await;
    let dir = tempfile::tempdir().unwrap();
    let e = EmbeddedBackend::new(Store::open(dir.path().join("d")).unwrap(), 16);
    for backend in [&b as &dyn Backend, &e as &dyn Backend] {
        backend.declare(jobs_spec()).await.unwrap();
    }
    let statuses = ["PENDING", "RUNNING", "DONE", "pending", "Pending", "PENDİNG"];
    let owners = ["alice", "bob", "Bob", "ärger", "zed"];
    for i in 0..240u64 {
        let mut doc = json!({
            "status": statuses[(i % 6) as usize],
            "owner": owners[(i % 5) as usize],
            "created": (i * 7919) % 97,
            "r": {"gpus": match i % 9 {
                0 => json!(true),
                1 => json!(false),
                2 => Value::Null,
                3 => json!("two"),
                4 => json!(-2.5),
                5 => json!(1e20),
                6 => json!(-7),
                _ => json!((i % 4) as f64 / 2.0),
            }},
        });
        if i % 11 != 0 {
            doc["priority"] = json!((i % 9) as i64 - 3);
        }
        if i % 13 == 0 {
            doc["priority"] = json!(1.5);
        }
        let id = format!("j{:03}-{}", (i * 37) % 240, if i % 2 == 0 { "a" } else { "B" });
        for backend in [&b as &dyn Backend, &e as &dyn Backend] {
            backend.put(all(), "jobs".into(), id.clone(), doc.clone(), Precondition::None).await.unwrap();
        }
    }
    let queries = vec![
        Query::new(),
        Query::new().descending(),
        Query::new().eq("status", "PENDING").order_by("priority"),
        Query::new().eq("status", "PENDING").order_by("priority").descending(),
        Query::new().eq("status", "DONE"),
        Query::new().order_by("status"),
        Query::new().order_by("status").descending(),
        Query::new().eq("owner", "bob").order_by("created"),
        Query::new().eq("owner", "Bob").order_by("created").descending(),
        Query::new().order_by("owner"),
        Query::new().eq("r.gpus", 0.5),
        Query::new().eq("r.gpus", 1),
        Query::new().order_by("r.gpus").descending(),
        Query::new().order_by("r.gpus"),
        Query::new().eq("r.gpus", true),
        Query::new().eq("r.gpus", Value::Null),
        Query::new().eq("r.gpus", "two"),
        Query::new().eq("status", "RUNNING").eq("priority", Value::Null),
        Query::new().eq("status", "PENDING").eq("owner", "alice"),
        Query::new().eq("priority", 1.5),
    ];
    for q in queries {
        for page in [1usize, 7, 50, 1000] {
            let mut pages = Vec::new();
            for backend in [&b as &dyn Backend, &e as &dyn Backend] {
                let mut ids = Vec::new();
                let mut cursor = None;
                loop {
                    let p = backend.query("jobs".into(), q.clone().limit(page).after(cursor)).await.unwrap();
                    assert!(p.records.len() <= page);
                    ids.push(p.records.iter().map(|r| (r.id.clone(), r.version)).collect::<Vec<_>>());
                    cursor = p.next_cursor;
                    if cursor.is_none() {
                        break;
                    }
                }
                pages.push(ids);
            }
            assert_eq!(pages[0], pages[1], "{q:?} by {page}");
        }
        let errs = [&b as &dyn Backend, &e as &dyn Backend];
        let bad = q.clone().after(Some("00ff".into()));
        for backend in errs {
            assert_eq!(backend.query("jobs".into(), bad.clone()).await.unwrap_err().status.as_u16(), 400);
        }
    }
    for q in
        [Query::new().order_by("created"), Query::new().eq("owner", "bob").order_by("priority"), Query::new().limit(0)]
    {
        let (x, y) =
            (b.query("jobs".into(), q.clone()).await.unwrap_err(), e.query("jobs".into(), q).await.unwrap_err());
        assert_eq!((x.status, x.detail), (y.status, y.detail));
    }
}

/// An equality and order on 20k records is answered by an index scan of the declared index.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declared_indexes_serve_queries() {
    let pg = Postgres::shared();
    let url = pg.database();
    let b = open(&url).await;
    b.declare(jobs_spec()).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "INSERT INTO jobs (id, version, seq, doc, updated_at, created_at)
             SELECT 'j' || g, 1, 0, jsonb_build_object('status', (ARRAY['PENDING','RUNNING','DONE'])[g % 3 + 1], 'priority', g % 100), now(), now()
             FROM generate_series(1, 20000) g; ANALYZE jobs;",
        )
        .await
        .unwrap();
    let q = Query::new().eq("status", "PENDING").order_by("priority").descending().limit(50);
    let page = b.query("jobs".into(), q).await.unwrap();
    assert_eq!(page.records.len(), 50);
    let p: Vec<i64> = page.records.iter().map(|r| r.doc["priority"].as_i64().unwrap()).collect();
    assert!(p.windows(2).all(|w| w[0] >= w[1]), "{p:?}");
    let plan: Vec<String> = client
        .query(
            "EXPLAIN SELECT id FROM jobs WHERE public.cairn_key(doc #> ARRAY['status']::text[]) = public.cairn_key('\"PENDING\"'::jsonb)
             ORDER BY public.cairn_key(doc #> ARRAY['priority']::text[]) ASC, id COLLATE \"C\" ASC LIMIT 51",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan") && plan.contains("by_status_priority"), "{plan}");
    // Re-declaring replaces the indexes: the removed one is dropped.
    b.declare(CollectionSpec::new("jobs", vec![IndexSpec::new("by_owner", &["owner"])])).await.unwrap();
    let names: Vec<String> = client
        .query("SELECT indexname::text FROM pg_indexes WHERE tablename = 'jobs' AND indexname LIKE 'cairn_ix_%'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with("_by_owner"));
    let started = Instant::now();
    let page = b.query("jobs".into(), Query::new().order_by("owner").limit(10)).await.unwrap();
    eprintln!("query over the new index: {:?}", started.elapsed());
    assert_eq!(page.records.len(), 10);
}

/// Two backends on one database, 8 tasks claiming 200 records: each claimed exactly once; then 8 tasks
/// incrementing one counter with `If-Match` 25 times each end at 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_and_increments_across_two_servers() {
    let pg = Postgres::shared();
    let url = pg.database();
    let (a, b) = (Arc::new(open(&url).await), Arc::new(open(&url).await));
    a.declare(jobs_spec()).await.unwrap();
    for i in 0..200 {
        let doc = json!({"status": "PENDING", "priority": i % 7});
        a.put(all(), "jobs".into(), format!("j{i}"), doc, Precondition::Absent).await.unwrap();
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let backend = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut set = Map::new();
            set.insert("status".into(), json!("RUNNING"));
            set.insert("worker".into(), json!(t));
            let q = Query::new().eq("status", "PENDING").order_by("priority").descending();
            while let Some(s) = backend.claim(all(), "jobs".into(), vec![q.clone()], set.clone()).await.unwrap() {
                assert_eq!(s.doc["worker"], t);
                mine.push(s.id);
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    eprintln!("200 claims by 8 tasks on 2 backends: {:?}", started.elapsed());
    claimed.sort();
    let before = claimed.len();
    claimed.dedup();
    assert_eq!((before, claimed.len()), (200, 200));

    a.put(all(), "jobs".into(), "counter".into(), json!({"n": 0}), Precondition::None).await.unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let backend = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 25 {
                let cur = backend.get(all(), "jobs".into(), "counter".into()).await.unwrap();
                let n = cur.doc["n"].as_i64().unwrap();
                let doc = json!({"n": n + 1});
                match backend.put(all(), "jobs".into(), "counter".into(), doc, Precondition::Version(cur.version)).await
                {
                    Ok(_) => done += 1,
                    Err(e) => assert_eq!(e.status.as_u16(), 412, "{e:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("200 increments by 8 tasks on 2 backends: {:?}", started.elapsed());
    let fin = b.get(all(), "jobs".into(), "counter".into()).await.unwrap();
    assert_eq!((fin.doc["n"].as_i64(), fin.version), (Some(200), 201));
    // Concurrent creates of one id: one record, the others 412.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let backend = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            backend.put(all(), "jobs".into(), "once".into(), json!({"t": t}), Precondition::Absent).await.map(|_| ())
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(e) => assert_eq!(e.status.as_u16(), 412, "{e:?}"),
        }
    }
    assert_eq!(won, 1);
}

/// A transaction that took its sequence first but commits last: a reader polling the feed meanwhile sees
/// neither (not the later one alone), then both, in order, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_feed_has_no_gaps_when_commits_finish_out_of_order() {
    let pg = Postgres::shared();
    let url = pg.database();
    let b = Arc::new(open(&url).await);
    b.declare(jobs_spec()).await.unwrap();
    let (release, hold) = tokio::sync::oneshot::channel();
    let slow = {
        let b = b.clone();
        tokio::spawn(async move {
            b.transaction_holding(vec![op(OpKind::Put, "jobs", "slow", Some(json!({})), None, false)], hold).await
        })
    };
    // The slow transaction holds the counter: the fast one, started later, waits for it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fast = {
        let b = b.clone();
        tokio::spawn(async move { b.put(all(), "jobs".into(), "fast".into(), json!({}), Precondition::None).await })
    };
    let reader = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut since = 0;
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while seen.len() < 2 && Instant::now() < deadline {
                for c in b.changes_since(since, 1).await.unwrap() {
                    since = c.seq;
                    seen.push((c.seq, c.id));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fast.is_finished(), "the later commit waits for the earlier one's sequence");
    release.send(()).unwrap();
    let slow_seq = slow.await.unwrap().unwrap();
    let fast = fast.await.unwrap().unwrap().0;
    assert_eq!((slow_seq, fast.seq), (1, 2));
    assert_eq!(reader.await.unwrap(), [(1, "slow".to_owned()), (2, "fast".to_owned())]);
}

/// A commit of one backend wakes the subscribers of another on the same database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_wake_other_servers() {
    let pg = Postgres::shared();
    let url = pg.database();
    let (a, b) = (open(&url).await, open(&url).await);
    a.declare(jobs_spec()).await.unwrap();
    let mut rx = b.subscribe();
    let before = *rx.borrow_and_update();
    a.put(all(), "jobs".into(), "x".into(), json!({}), Precondition::None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
    assert!(*rx.borrow() > before);
    assert_eq!(b.last_sequence(), a.last_sequence());
    // Declarations reach the other server too.
    a.declare(CollectionSpec::new("runs", vec![])).await.unwrap();
    b.put(all(), "runs".into(), "r".into(), json!({}), Precondition::None).await.unwrap();
    // The listening connections are cut: they reconnect, and commits wake the other server again.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    // Each backend's listener connects in the background: `a`'s may not be up yet on a busy machine.
    for _ in 0..100 {
        let listening = client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
                &[&LISTENER_NAME],
            )
            .await
            .unwrap();
        if listening.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cut = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
            &[&LISTENER_NAME],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 2, "one listening connection per backend");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut rx = b.subscribe();
    rx.borrow_and_update();
    let (s, _) = a.put(all(), "jobs".into(), "y".into(), json!({}), Precondition::None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|seq| *seq >= s.seq)).await.unwrap().unwrap();
    assert_eq!(b.last_sequence(), s.seq);
}

/// Trimming by size removes whole commits; reading from before them is 410 naming `trimmed_through`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trimming_answers_410() {
    let pg = Postgres::shared();
    let b = open(&pg.database()).await;
    b.declare(jobs_spec()).await.unwrap();
    for i in 0..20 {
        b.put(all(), "jobs".into(), format!("j{i}"), json!({"pad": "x".repeat(100)}), Precondition::None)
            .await
            .unwrap();
    }
    let retention = ChangeRetention { retention_bytes: 1000, ..ChangeRetention::default() };
    let removed = b.trim_changes(&retention).await.unwrap();
    assert!(removed > 0 && removed < 20, "{removed}");
    let stats = b.figures().await.unwrap().feed.unwrap();
    assert!(stats.bytes <= 1000, "{stats:?}");
    assert_eq!(stats.trimmed_through, removed);
    let e = b.changes_since(0, 10).await.unwrap_err();
    assert_eq!((e.status.as_u16(), &e.body()["trimmed_through"]), (410, &json!(removed)));
    let kept = b.changes_since(removed, 100).await.unwrap();
    assert_eq!(kept.len() as u64, 20 - removed);
    assert_eq!(kept.first().map(|c| c.seq), Some(removed + 1));
}

/// A store exported with `cairn export postgres` is served as it is: the same records, versions, sequences
/// and times; the feed continues after the exported sequences, older history is 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serves_what_cairn_export_postgres_wrote() {
    let pg = Postgres::shared();
    let url = pg.database();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("d")).unwrap();
    store.declare(jobs_spec()).unwrap();
    let jobs = store.collection_dyn("jobs").unwrap();
    for i in 0..50 {
        jobs.upsert(&format!("j{i}"), json!({"status": "PENDING", "priority": i % 5})).unwrap();
    }
    std::thread::sleep(Duration::from_millis(5));
    for i in 0..10 {
        jobs.upsert(&format!("j{i}"), json!({"status": "DONE", "priority": i})).unwrap();
    }
    jobs.delete("j49", None).unwrap();
    let opts = cairn_sync::PgExportOptions::new(url.clone());
    let report = cairn_sync::export_postgres(&store, &opts, &cairn_sync::Progress::hidden(), None).await.unwrap();
    let b = open(&url).await;
    let embedded = EmbeddedBackend::new(store.clone(), 4);
    for q in [Query::new(), Query::new().eq("status", "PENDING").order_by("priority").descending()] {
        let (x, y) = (
            b.query("jobs".into(), q.clone().limit(100)).await.unwrap(),
            embedded.query("jobs".into(), q.limit(100)).await.unwrap(),
        );
        assert_eq!(x.records, y.records);
    }
    let last = report.cursor;
    assert_eq!(b.last_sequence(), last, "the feed continues after the export's cursor (the delete of j49 included)");
    assert_eq!(b.changes_since(last - 1, 10).await.unwrap_err().status.as_u16(), 410);
    assert!(b.changes_since(last, 10).await.unwrap().is_empty());
    let (s, _) =
        b.put(all(), "jobs".into(), "j0".into(), json!({"status": "RUNNING"}), Precondition::Version(2)).await.unwrap();
    let before = embedded.get(all(), "jobs".into(), "j0".into()).await.unwrap();
    assert_eq!((s.version, s.seq, s.created_at_ms), (3, last + 1, before.created_at_ms));
    assert_eq!(b.check().await.unwrap()["healthy"], true);
}

/// A claim whose only matching record another transaction holds locked does not answer "nothing matched":
/// it waits for the lock and takes the record once the other transaction commits without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_waits_for_locked_candidates_instead_of_answering_none() {
    let pg = Postgres::shared();
    let url = pg.database();
    let b = open(&url).await;
    b.declare(jobs_spec()).await.unwrap();
    b.put(all(), "jobs".into(), "only".into(), json!({"status": "PENDING", "priority": 1}), Precondition::None)
        .await
        .unwrap();
    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let tx = client.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM jobs WHERE id = 'only' FOR UPDATE", &[]).await.unwrap();
    let mut set = Map::new();
    set.insert("status".into(), json!("RUNNING"));
    let q = Query::new().eq("status", "PENDING").order_by("priority");
    let claim = b.claim(all(), "jobs".into(), vec![q], set);
    let release = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.commit().await.unwrap();
    };
    let (claimed, ()) = tokio::join!(claim, release);
    let claimed = claimed.unwrap().expect("the record was there, only locked for a moment");
    assert_eq!((claimed.id.as_str(), &claimed.doc["status"]), ("only", &json!("RUNNING")));
}
