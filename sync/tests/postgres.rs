//! Export, import and verification against a real PostgreSQL 15 cluster started for this test binary.
//! Every scenario shares one cluster (one schema each), so they run in one test function, in order.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_store::metrics::{MetricPoint, Metrics};
use cairn_sync::{
    export_postgres, import_postgres, import_postgres_table, verify_postgres, PgExportOptions, Progress, SyncError,
    TableMapping,
};
use support::{
    assert_same, assert_same_metrics, log_metrics, metric_state, mutate, open, populate, runtime, state, Postgres,
    NAN_PAYLOAD,
};
use tokio_postgres::NoTls;

const RECORDS: usize = 100_000;

async fn client(pg: &Postgres) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg.url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

#[test]
fn postgres_export_import_verify() {
    let pg = Postgres::start();
    let rt = runtime();
    let timed = |name: &str, started: Instant| eprintln!("{name}: {:?}", started.elapsed());
    let t = Instant::now();
    rt.block_on(round_trip_100k_then_incremental(&pg));
    timed("round trip", t);
    let t = Instant::now();
    rt.block_on(killed_export_resumes_without_loss_or_duplicates(&pg));
    timed("kill and resume", t);
    let t = Instant::now();
    rt.block_on(follow_ships_new_changes(&pg));
    rt.block_on(user_table_import_with_mapping(&pg));
    rt.block_on(verify_lists_differences(&pg));
    rt.block_on(the_job_queue_is_not_exported(&pg));
    timed("follow, mapping, verify, queue", t);
    let t = Instant::now();
    rt.block_on(metrics_round_trip(&pg));
    timed("metrics", t);
}

/// 100k records out through COPY and back: identical ids, versions and documents; then a round of changes
/// (updates, deletes, a delete and re-insert whose version restarts at 1) shipped incrementally.
async fn round_trip_100k_then_incremental(pg: &Postgres) {
    let src_dir = tempfile::tempdir().unwrap();
    let src = open(src_dir.path());
    let t0 = Instant::now();
    populate(&src, RECORDS);
    eprintln!("populate: {:?}", t0.elapsed());
    let opts = PgExportOptions::new(pg.url()).schema("rt");
    let started = Instant::now();
    let report = export_postgres(&src, &opts, &Progress::hidden(), None).await.unwrap();
    eprintln!("export: {report:?} in {:?}", started.elapsed());
    assert!(!report.resumed);
    assert_eq!(report.bulk_records, (RECORDS + RECORDS / 10) as u64);
    assert!(src.changes_since(report.cursor, 10).unwrap().is_empty(), "the cursor covers every change");

    let c = client(pg).await;
    let jobs: i64 = c.query_one("SELECT count(*) FROM rt.jobs", &[]).await.unwrap().get(0);
    assert_eq!(jobs, RECORDS as i64);
    // Indexed fields became typed columns, with indexes matching the collection's.
    let types: Vec<(String, String)> = c
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = 'rt' AND table_name = 'jobs' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (col, ty) in [
        ("id", "text"),
        ("version", "bigint"),
        ("seq", "bigint"),
        ("doc", "jsonb"),
        ("updated_at", "timestamp with time zone"),
        ("status", "text"),
        ("priority", "bigint"),
        ("resources_gpus", "bigint"),
        ("cost", "double precision"),
        ("preemptible", "boolean"),
    ] {
        assert!(types.contains(&(col.to_owned(), ty.to_owned())), "column {col} {ty} missing from {types:?}");
    }
    let indexes: Vec<String> = c
        .query("SELECT indexdef FROM pg_indexes WHERE schemaname = 'rt' AND tablename = 'jobs'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(indexes.iter().any(|d| d.contains("(status, priority DESC)")), "{indexes:?}");
    assert!(indexes.iter().any(|d| d.contains("(resources_gpus)")), "{indexes:?}");
    let running: i64 = c
        .query_one("SELECT count(*) FROM rt.jobs WHERE status = 'RUNNING' AND priority < 100", &[])
        .await
        .unwrap()
        .get(0);
    assert!(running > 0);
    let t0 = Instant::now();
    assert!(verify_postgres(&src, &pg.url(), "rt").await.unwrap().equal());
    eprintln!("verify: {:?}", t0.elapsed());

    let back_dir = tempfile::tempdir().unwrap();
    let back = open(back_dir.path());
    let started = Instant::now();
    let imported = import_postgres(&back, &pg.url(), "rt", &Progress::hidden()).await.unwrap();
    eprintln!("import: {imported:?} in {:?}", started.elapsed());
    assert_eq!(imported.records, (RECORDS + RECORDS / 10) as u64);
    let t0 = Instant::now();
    assert_same("imported from postgres", &state(&src), &state(&back));
    eprintln!("compare: {:?}", t0.elapsed());
    assert_eq!(back.collections(), src.collections(), "indexes are declared again");
    back.check_indexes().unwrap();

    // Incremental: only the changes travel, and deletes and version restarts land.
    let t0 = Instant::now();
    let made = mutate(&src, RECORDS, 97, 1);
    eprintln!("mutate: {:?}", t0.elapsed());
    let report = export_postgres(&src, &opts, &Progress::hidden(), None).await.unwrap();
    assert!(report.resumed);
    assert_eq!(report.bulk_records, 0);
    assert_eq!(report.changes, made as u64);
    let report = verify_postgres(&src, &pg.url(), "rt").await.unwrap();
    assert!(report.equal(), "{report:?}");
    let restarted: i64 = c.query_one("SELECT version FROM rt.jobs WHERE id = 'job-0000000'", &[]).await.unwrap().get(0);
    assert_eq!(restarted, 1, "deleted then inserted again: version 1, applied over the older version 1");
    // Nothing new: a run ships nothing.
    let again = export_postgres(&src, &opts, &Progress::hidden(), None).await.unwrap();
    assert_eq!((again.bulk_records, again.changes), (0, 0));
}

/// Set by the kill test for the child process it starts.
const CHILD_DATA: &str = "CAIRN_SYNC_TEST_CHILD_DATA";
const CHILD_URL: &str = "CAIRN_SYNC_TEST_CHILD_URL";

/// Run by `killed_export_resumes_without_loss_or_duplicates` in a child process, which it kills.
#[test]
#[ignore = "run as a child process by the postgres kill test"]
fn child_export() {
    let (Ok(data), Ok(url)) = (std::env::var(CHILD_DATA), std::env::var(CHILD_URL)) else { return };
    let store = open(std::path::Path::new(&data));
    let opts = PgExportOptions::new(url).schema("killed").batch(500);
    runtime().block_on(export_postgres(&store, &opts, &Progress::hidden(), None)).unwrap();
}

/// An export killed (SIGKILL) in its bulk phase, then again in its incremental phase, resumes from the
/// cursor committed in PostgreSQL: the result equals the store, every record once.
async fn killed_export_resumes_without_loss_or_duplicates(pg: &Postgres) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        populate(&store, 30_000);
        log_metrics(&store);
    }
    let c = client(pg).await;
    let kill_when = |sql: &'static str| {
        let data = dir.path().display().to_string();
        let url = pg.url();
        let c = &c;
        async move {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["child_export", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
                .env(CHILD_DATA, data)
                .env(CHILD_URL, url)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let hit = c.query_opt(sql, &[]).await.ok().flatten().is_some();
                if hit {
                    break;
                }
                assert!(child.try_wait().unwrap().is_none(), "the child export ended before it could be killed");
                assert!(Instant::now() < deadline, "the child export never reached the kill point");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            child.kill().unwrap();
            child.wait().unwrap();
        }
    };
    // Killed during the bulk copy, some batches committed.
    kill_when("SELECT 1 FROM killed.cairn_sync_state WHERE phase = 'bulk' AND bulk_last_id >= 'job-0010000'").await;
    let (phase, copied): (String, i64) = {
        let r = c.query_one("SELECT phase, (SELECT count(*) FROM killed.jobs) FROM killed.cairn_sync_state", &[]).await;
        let r = r.unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(phase, "bulk");
    assert!(copied > 0 && copied < 30_000, "{copied} jobs copied before the kill");

    // Changes while the export is down, on both sides of where the bulk copy stopped.
    let made = {
        let store = open(dir.path());
        let points: Vec<_> = (3000..3500).map(|s| MetricPoint::new("loss", s, s, 0.25)).collect();
        Metrics::new(store.clone()).log("run-a", &points).unwrap();
        mutate(&store, 30_000, 13, 1) + mutate(&store, 30_000, 17, 2)
    };
    assert!(made > 3500);
    // Killed again, now while applying the changes (500 per transaction).
    kill_when("SELECT 1 FROM killed.cairn_sync_state WHERE phase = 'incremental' AND cursor > snapshot_seq").await;

    let store = open(dir.path());
    let opts = PgExportOptions::new(pg.url()).schema("killed");
    let report = export_postgres(&store, &opts, &Progress::hidden(), None).await.unwrap();
    assert!(report.resumed);
    let verified = verify_postgres(&store, &pg.url(), "killed").await.unwrap();
    assert!(verified.equal(), "{verified:?}");
    assert!(verified.metrics && verified.local_points > 6000, "{verified:?}");
    let (rows, distinct): (i64, i64) = {
        let r = c.query_one("SELECT count(*), count(DISTINCT id) FROM killed.jobs", &[]).await.unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(rows, distinct);
    assert_eq!(rows as usize, state(&store).keys().filter(|k| k.0 == "jobs").count());
    let cursor: i64 = c.query_one("SELECT cursor FROM killed.cairn_sync_state", &[]).await.unwrap().get(0);
    assert_eq!(cursor as u64, report.cursor);
    assert!(store.changes_since(report.cursor, 10).unwrap().is_empty(), "every change was shipped");
}

/// `follow` ships changes made while it runs, and stops when asked.
async fn follow_ships_new_changes(pg: &Postgres) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    populate(&store, 2_000);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opts = PgExportOptions::new(pg.url()).schema("follow").follow(true).poll(Duration::from_millis(50));
    let task = {
        let store = store.clone();
        tokio::spawn(async move { export_postgres(&store, &opts, &Progress::hidden(), Some(stop_rx)).await })
    };
    let c = client(pg).await;
    let started = Instant::now();
    while c
        .query_opt("SELECT 1 FROM follow.cairn_sync_state WHERE phase = 'incremental'", &[])
        .await
        .ok()
        .flatten()
        .is_none()
    {
        assert!(started.elapsed() < Duration::from_secs(60), "the follower never finished its bulk copy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let jobs = store.collection_dyn("jobs").unwrap();
    let mut lags = Vec::new();
    for i in 0..5 {
        let written = jobs.upsert("job-0000001", support::job(1, 10 + i)).unwrap();
        let started = Instant::now();
        loop {
            // The table appears once the follower's bulk copy has started.
            let v: Option<i64> = c
                .query_opt("SELECT version FROM follow.jobs WHERE id = 'job-0000001'", &[])
                .await
                .ok()
                .flatten()
                .map(|r| r.get(0));
            if v == Some(written.version as i64) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the follower never shipped version {}",
                written.version
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        lags.push(started.elapsed());
    }
    eprintln!("follow lags: {lags:?}");
    // Metrics have no change events: the follower finds the series that changed when it has caught up.
    let metrics = Metrics::new(store.clone());
    for step in 0..3 {
        metrics.log("run-f", &[MetricPoint::new("loss", step, step, 1.0 / (step + 1) as f64)]).unwrap();
        let started = Instant::now();
        loop {
            let shipped: Option<i64> = c
                .query_opt("SELECT points FROM follow.cairn_metric_series WHERE run = 'run-f'", &[])
                .await
                .ok()
                .flatten()
                .map(|r| r.get(0));
            if shipped == Some(step + 1) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the follower never shipped step {step}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop_tx.send(true).unwrap();
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.changes, 5);
    assert_eq!((report.metric_series, report.metric_points), (3, 3), "the first point, then one more each time");
    assert!(verify_postgres(&store, &pg.url(), "follow").await.unwrap().equal());
}

/// A user's JSONB table imported with a column mapping, keeping ids and versions; a table with a row the
/// store would refuse imports nothing.
async fn user_table_import_with_mapping(pg: &Postgres) {
    let c = client(pg).await;
    c.batch_execute(
        "CREATE TABLE hosts (hostname text PRIMARY KEY, body jsonb NOT NULL, rev integer NOT NULL);
         INSERT INTO hosts SELECT 'host-' || i, jsonb_build_object('rack', 'r' || (i % 4), 'gpus', i % 8), i % 5 + 1
         FROM generate_series(1, 500) i;
         CREATE TABLE bad_hosts (hostname text, body json);
         INSERT INTO bad_hosts VALUES ('ok-1', '{\"a\": 1}'), ('bad', '[1, 2]'), ('ok-2', '{}');",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mapping = TableMapping::new("public.hosts", "hosts")
        .id_column("hostname")
        .doc_column("body")
        .version_column(Some("rev".to_owned()));
    let report = import_postgres_table(&store, &pg.url(), &mapping, &Progress::hidden()).await.unwrap();
    assert_eq!(report.records, 500);
    let hosts = store.collection_dyn("hosts").unwrap();
    let h = hosts.get("host-7").unwrap().unwrap();
    assert_eq!((h.version, h.doc), (3, serde_json::json!({"rack": "r3", "gpus": 7})));

    let bad = TableMapping::new("bad_hosts", "bad").id_column("hostname").doc_column("body");
    let err = import_postgres_table(&store, &pg.url(), &bad, &Progress::hidden()).await.unwrap_err();
    assert!(matches!(&err, SyncError::Invalid(m) if m.contains("\"bad\"") && m.contains("not a JSON object")), "{err}");
    assert!(store.collections().iter().all(|s| s.name != "bad"), "nothing was written");
    let missing = TableMapping::new("no_such_table", "x");
    assert!(matches!(
        import_postgres_table(&store, &pg.url(), &missing, &Progress::hidden()).await,
        Err(SyncError::Postgres(_))
    ));
}

/// Rows changed, removed or added behind the export's back are each listed.
async fn verify_lists_differences(pg: &Postgres) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    populate(&store, 1_000);
    let opts = PgExportOptions::new(pg.url()).schema("drift");
    export_postgres(&store, &opts, &Progress::hidden(), None).await.unwrap();
    let c = client(pg).await;
    c.batch_execute(
        "UPDATE drift.jobs SET doc = jsonb_set(doc, '{owner}', '\"mallory\"') WHERE id = 'job-0000005';
         UPDATE drift.jobs SET version = version + 1 WHERE id = 'job-0000006';
         DELETE FROM drift.notes WHERE id = 'note-0000010';
         INSERT INTO drift.jobs (id, version, seq, doc, updated_at) VALUES ('intruder', 1, 1, '{}', now());",
    )
    .await
    .unwrap();
    let report = verify_postgres(&store, &pg.url(), "drift").await.unwrap();
    assert!(!report.equal());
    assert_eq!(report.differences, 4);
    let listed: Vec<String> = report.listed.iter().map(ToString::to_string).collect();
    assert_eq!(
        listed,
        [
            "jobs/intruder: missing locally",
            "jobs/job-0000005: document differs",
            "jobs/job-0000006: version 1 != 2",
            "notes/note-0000010: missing remotely",
        ]
    );
    assert_eq!((report.local_records, report.remote_records), (1_100, 1_100));
    // `restart` empties the tables and copies everything again: the drift is gone.
    let again = export_postgres(&store, &opts.clone().restart(true), &Progress::hidden(), None).await.unwrap();
    assert_eq!(again.bulk_records, 1_100);
    assert!(verify_postgres(&store, &pg.url(), "drift").await.unwrap().equal());
}

/// The job queue's collections (working state without change events) are neither exported nor verified:
/// an export of a store with jobs makes no table for them, and verification finds the rest equal.
async fn the_job_queue_is_not_exported(pg: &Postgres) {
    use cairn_store::queue::{ClaimRequest, JobQueue, NewJob, QueueOptions};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    populate(&store, 100);
    let queue = JobQueue::open(store.clone(), QueueOptions::default()).unwrap();
    for i in 0..10 {
        queue.enqueue(&NewJob::new("train", "k", serde_json::json!(i))).unwrap();
    }
    queue.claim(&ClaimRequest::new(&["train"], "w", 60_000)).unwrap().unwrap();
    let opts = PgExportOptions::new(pg.url()).schema("withqueue");
    let report = export_postgres(&store, &opts, &Progress::hidden(), None).await.unwrap();
    assert_eq!(report.bulk_records, 110, "the records of jobs and notes, no job of the queue");
    let c = client(pg).await;
    let tables: Vec<String> = c
        .query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'withqueue'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.iter().all(|t| !t.starts_with("_queue")), "{tables:?}");
    assert!(verify_postgres(&store, &pg.url(), "withqueue").await.unwrap().equal());
}

/// Metrics out to `cairn_metrics` and back bit for bit; then new points, points logged out of order, a new
/// run and a deleted one, shipped series by series; `verify` finding a changed value, a missing point and a
/// value that disagrees with its bits; series PostgreSQL lost copied again; an export without metrics.
async fn metrics_round_trip(pg: &Postgres) {
    let dir = tempfile::tempdir().unwrap();
    let src = open(dir.path());
    populate(&src, 100);
    let logged = log_metrics(&src);
    // 1,000 points a transaction.
    let opts = PgExportOptions::new(pg.url()).schema("metrics").batch(100);
    let report = export_postgres(&src, &opts, &Progress::hidden(), None).await.unwrap();
    assert_eq!((report.metric_series, report.metric_points, report.metric_series_removed), (5, logged, 0));
    assert_eq!(report.bulk_records, 110);

    let c = client(pg).await;
    let count = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM metrics.cairn_metrics").await as u64, logged);
    // SQL reads `value`; the bits, NaN payloads included, are in `value_bits`.
    let nan: (f64, i64) = {
        let sql = "SELECT value, value_bits FROM metrics.cairn_metrics WHERE value_bits = $1 LIMIT 1";
        let row = c.query_one(sql, &[&(NAN_PAYLOAD as i64)]).await.unwrap();
        (row.get(0), row.get(1))
    };
    assert!(nan.0.is_nan());
    let zero: f64 = c
        .query_one("SELECT value FROM metrics.cairn_metrics WHERE run = 'run/c' AND step = -5", &[])
        .await
        .unwrap()
        .get(0);
    assert!(zero == 0.0 && zero.is_sign_negative());
    let series: Vec<(String, String, i64)> = c
        .query("SELECT run, key, points FROM metrics.cairn_metric_series ORDER BY run, key", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: Vec<(String, String, i64)> =
        metric_state(&src).iter().map(|((r, k), p)| (r.clone(), k.clone(), p.len() as i64)).collect();
    assert_eq!(series, expected);
    let index: String = c
        .query_one("SELECT indexdef FROM pg_indexes WHERE schemaname = 'metrics' AND tablename = 'cairn_metrics'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(index.contains("(run, key, step, n)"), "{index}");
    let report = verify_postgres(&src, &pg.url(), "metrics").await.unwrap();
    assert!(report.equal(), "{report:?}");
    assert!(report.metrics);
    assert_eq!((report.local_series, report.remote_series), (5, 5));
    assert_eq!((report.local_points, report.remote_points), (logged, logged));

    let import = |schema: &'static str| async move {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let report = import_postgres(&store, &pg.url(), schema, &Progress::hidden()).await.unwrap();
        (dir, store, report)
    };
    let (_back_dir, back, imported) = import("metrics").await;
    assert_eq!((imported.metric_series, imported.metric_points), (5, logged));
    assert_same_metrics("imported from postgres", &metric_state(&src), &metric_state(&back));
    assert!(Metrics::new(back.clone()).check().unwrap().problems.is_empty());

    // New points at later steps travel alone; a point logged at an earlier step sends its series again.
    let metrics = Metrics::new(src.clone());
    metrics.log("run-a", &(3000..3100).map(|s| MetricPoint::new("loss", s, s, 0.5)).collect::<Vec<_>>()).unwrap();
    metrics.log("run-b", &[MetricPoint::new("loss", 5, 0, 9.0)]).unwrap();
    metrics.log("run-d", &[MetricPoint::new("loss", 0, 0, 1.0), MetricPoint::new("loss", 0, 1, f64::NAN)]).unwrap();
    metrics.delete_run("run/c").unwrap();
    let report = export_postgres(&src, &opts, &Progress::hidden(), None).await.unwrap();
    assert_eq!((report.bulk_records, report.changes), (0, 0));
    assert_eq!((report.metric_series, report.metric_points, report.metric_series_removed), (3, 100 + 1001 + 2, 1));
    assert!(verify_postgres(&src, &pg.url(), "metrics").await.unwrap().equal());
    let (_again_dir, again, _) = import("metrics").await;
    assert_same_metrics("imported after an incremental export", &metric_state(&src), &metric_state(&again));
    let nothing = export_postgres(&src, &opts, &Progress::hidden(), None).await.unwrap();
    assert_eq!((nothing.metric_series, nothing.metric_points, nothing.metric_series_removed), (0, 0, 0));

    // Tampered rows: a value's bits, a missing point, a value no longer the f64 of its bits.
    c.batch_execute(
        "UPDATE metrics.cairn_metrics SET value_bits = value_bits # 1 WHERE run = 'run-a' AND key = 'lr' AND step = 7;
         DELETE FROM metrics.cairn_metrics WHERE run = 'run-b' AND key = 'loss' AND step = 500;
         UPDATE metrics.cairn_metrics SET value = value + 1 WHERE run = 'run-a' AND key = 'val/acc' AND step = 3;",
    )
    .await
    .unwrap();
    let report = verify_postgres(&src, &pg.url(), "metrics").await.unwrap();
    assert!(!report.equal());
    assert_eq!((report.differences, report.series_differences), (0, 3));
    let listed: Vec<String> = report.listed_series.iter().map(ToString::to_string).collect();
    assert_eq!(
        listed,
        [
            "metrics run-a/lr: points differ",
            "metrics run-a/val/acc: value and value_bits disagree at step 3",
            "metrics run-b/loss: 1001 points != 1000",
        ]
    );
    // Series PostgreSQL does not list as shipped (a transaction that never committed, or rows edited as
    // here) are written again whole.
    c.batch_execute("DELETE FROM metrics.cairn_metric_series WHERE run = 'run-b' OR key IN ('lr', 'val/acc')")
        .await
        .unwrap();
    let report = export_postgres(&src, &opts, &Progress::hidden(), None).await.unwrap();
    assert_eq!((report.metric_series, report.metric_points), (3, 1001 + 600 + 1200));
    assert!(verify_postgres(&src, &pg.url(), "metrics").await.unwrap().equal());
    // A run or key the store would refuse fails the import before anything is written.
    c.batch_execute("INSERT INTO metrics.cairn_metrics VALUES ('', 'k', 0, 0, 0, 0, 0)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let refused = open(dir.path());
    let err = import_postgres(&refused, &pg.url(), "metrics", &Progress::hidden()).await.unwrap_err();
    assert!(matches!(&err, SyncError::Invalid(m) if m.contains("nothing was imported")), "{err}");
    assert!(refused.collections().is_empty() && metric_state(&refused).is_empty());

    // Without metrics: no metrics tables, nothing compared, nothing imported.
    let plain = PgExportOptions::new(pg.url()).schema("nometrics").metrics(false);
    let report = export_postgres(&src, &plain, &Progress::hidden(), None).await.unwrap();
    assert_eq!((report.bulk_records, report.metric_series), (110, 0));
    assert_eq!(
        count("SELECT count(*) FROM pg_tables WHERE schemaname = 'nometrics' AND tablename LIKE 'cairn_metric%'").await,
        0
    );
    let report = verify_postgres(&src, &pg.url(), "nometrics").await.unwrap();
    assert!(report.equal() && !report.metrics, "{report:?}");
    let (_plain_dir, plain_back, imported) = import("nometrics").await;
    assert_eq!((imported.records, imported.metric_points), (110, 0));
    assert!(metric_state(&plain_back).is_empty());
}
