//! Run metrics over HTTP, in-process (`cairn_server::app`, one `oneshot` call per request): batches logged
//! and read back value for value (NaN, infinities and -0.0 included), histories paged by cursor and cut by
//! step and time, downsampling checked against a direct computation over the history, the latest values of
//! a run and of many runs, comparisons across runs, deletion, refusals that write nothing, project scopes
//! through the runs' records, and many runs logging at once.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod inproc;

use std::collections::BTreeMap;

use axum::http::Method;
use cairn_server::{Config, Role};
use inproc::{json, token, App};
use serde_json::{json, Value};

async fn call(s: &App, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = s.req(method, path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    json(req.send().await.unwrap()).await
}

async fn log(s: &App, run: &str, points: Vec<Value>) -> (u16, Value) {
    call(s, Method::POST, &format!("/v1/runs/{run}/metrics"), Some(json!({ "points": points }))).await
}

/// A value as the server writes it: a number, or a string for NaN and the infinities.
fn value_of(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "NaN" => f64::NAN,
        Value::String(s) if s == "Infinity" => f64::INFINITY,
        Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
        other => other.as_f64().unwrap(),
    }
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// Every point of a history, page by page, as (step, timestamp, value).
async fn history(s: &App, run: &str, key: &str, query: &str) -> Vec<(i64, i64, f64)> {
    let (mut out, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let mut path = format!("/v1/runs/{run}/metrics/{key}/history?{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = call(s, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        let steps = page["steps"].as_array().unwrap();
        let times = page["timestamps_ms"].as_array().unwrap();
        let values = page["values"].as_array().unwrap();
        assert_eq!((steps.len(), times.len()), (values.len(), values.len()));
        for i in 0..steps.len() {
            out.push((steps[i].as_i64().unwrap(), times[i].as_i64().unwrap(), value_of(&values[i])));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test]
async fn a_batch_reads_back_value_for_value() {
    let s = App::start(Config::default());
    let specials = [json!("NaN"), json!("Infinity"), json!("-Infinity"), json!(-0.0), json!(1e-300), json!(-2.5e300)];
    let mut points: Vec<Value> = specials
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"key": "odd", "step": i, "timestamp_ms": 1_000 + i as i64, "value": v}))
        .collect();
    for step in 0..3000i64 {
        let loss = 1.0 / (step as f64 + 1.0);
        points.push(
            json!({"key": "loss", "step": step, "timestamp_ms": 1_767_225_600_000i64 + step * 37, "value": loss}),
        );
        points.push(json!({"key": "val/acc", "step": step, "timestamp_ms": 1_767_225_600_000i64 + step * 37, "value": step % 7}));
    }
    let (status, receipt) = log(&s, "run-1", points).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!((receipt["points"].as_u64(), receipt["series"].as_u64()), (Some(6006), Some(3)));

    let odd = history(&s, "run-1", "odd", "").await;
    let want = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e-300, -2.5e300];
    assert_eq!(odd.len(), want.len());
    for (got, want) in odd.iter().zip(want) {
        assert!(same(got.2, want), "{} != {want}", got.2);
    }
    assert!(odd[3].2.is_sign_negative(), "-0.0 keeps its sign");
    let loss = history(&s, "run-1", "loss", "limit=700").await;
    assert_eq!(loss.len(), 3000, "every page, once");
    for (i, (step, ts, v)) in loss.iter().enumerate() {
        assert_eq!((*step, *ts), (i as i64, 1_767_225_600_000 + i as i64 * 37));
        assert!(same(*v, 1.0 / (i as f64 + 1.0)));
    }
    // A key with a slash, percent-encoded in the path.
    assert_eq!(history(&s, "run-1", "val%2Facc", "min_step=10&max_step=19").await.len(), 10);
    let t0 = 1_767_225_600_000i64;
    let timed =
        history(&s, "run-1", "loss", &format!("min_time_ms={}&max_time_ms={}", t0 + 37 * 100, t0 + 37 * 149)).await;
    assert_eq!(timed.first().map(|p| p.0), Some(100));
    assert_eq!(timed.len(), 50);

    let (status, latest) = call(&s, Method::GET, "/v1/runs/run-1/metrics", None).await;
    assert_eq!(status, 200, "{latest}");
    let by_key: BTreeMap<&str, &Value> =
        latest["metrics"].as_array().unwrap().iter().map(|m| (m["key"].as_str().unwrap(), m)).collect();
    assert_eq!(by_key.keys().copied().collect::<Vec<_>>(), ["loss", "odd", "val/acc"]);
    assert_eq!(by_key["loss"]["step"], 2999);
    assert_eq!(by_key["loss"]["points"], 3000);
    assert_eq!(by_key["odd"]["value"], "-2.5e300".parse::<f64>().map(|v| json!(v)).unwrap());
}

#[tokio::test]
async fn downsampling_matches_a_direct_computation() {
    let s = App::start(Config::default());
    let mut points = Vec::new();
    for step in 0..10_000i64 {
        let v = if step % 997 == 0 { json!("NaN") } else { json!(((step * 7919) % 1000) as f64 / 10.0) };
        points.push(json!({"key": "loss", "step": step * 3, "timestamp_ms": step, "value": v}));
    }
    for chunk in points.chunks(5000) {
        assert_eq!(log(&s, "r", chunk.to_vec()).await.0, 200);
    }
    let all = history(&s, "r", "loss", "limit=100000").await;
    for (max_points, range) in [(100usize, None), (7, None), (64, Some((300i64, 9_001i64)))] {
        let mut path = format!("/v1/runs/r/metrics/loss/downsample?max_points={max_points}");
        if let Some((lo, hi)) = range {
            path.push_str(&format!("&min_step={lo}&max_step={hi}"));
        }
        let (status, body) = call(&s, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body}");
        let buckets = body["buckets"].as_array().unwrap();
        assert!(!buckets.is_empty() && buckets.len() <= max_points);
        let (lo, hi) = range.unwrap_or((0, 29_997));
        let mut total = 0;
        for b in buckets {
            let (start, end) = (b["start_step"].as_i64().unwrap(), b["end_step"].as_i64().unwrap());
            let inside: Vec<&(i64, i64, f64)> =
                all.iter().filter(|p| p.0 >= start.max(lo) && p.0 <= end.min(hi)).collect();
            let finite: Vec<f64> = inside.iter().map(|p| p.2).filter(|v| !v.is_nan()).collect();
            assert_eq!(b["count"].as_u64(), Some(inside.len() as u64), "bucket {start}..={end}");
            assert_eq!(b["nan_count"].as_u64(), Some((inside.len() - finite.len()) as u64));
            let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
            let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mean = finite.iter().sum::<f64>() / finite.len() as f64;
            assert!(same(value_of(&b["min"]), min) && same(value_of(&b["max"]), max), "{b}");
            assert!((value_of(&b["mean"]) - mean).abs() < 1e-9, "{b}: mean {mean}");
            let last = inside.last().unwrap();
            assert_eq!(b["last_step"].as_i64(), Some(last.0));
            assert!(same(value_of(&b["last"]), last.2));
            total += inside.len();
        }
        let want = all.iter().filter(|p| p.0 >= lo && p.0 <= hi).count();
        assert_eq!(total, want, "every point in one bucket");
    }
}

#[tokio::test]
async fn runs_are_compared_deleted_and_logged_at_once() {
    let s = App::start(Config::default());
    let mut tasks = Vec::new();
    for r in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..10i64 {
                let points: Vec<Value> = (0..200i64)
                    .map(|i| {
                        let step = batch * 200 + i;
                        json!({"key": "acc", "step": step, "timestamp_ms": step, "value": r as f64 + step as f64 / 1e4})
                    })
                    .collect();
                let (status, body) = log(&s, &format!("run-{r}"), points).await;
                assert_eq!(status, 200, "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let runs: Vec<String> = (0..8).map(|r| format!("run-{r}")).chain(["absent".to_owned()]).collect();
    let (status, latest) =
        call(&s, Method::GET, &format!("/v1/metrics/acc/latest?runs={}", runs.join(",")), None).await;
    assert_eq!(status, 200, "{latest}");
    let latest = latest["runs"].as_array().unwrap();
    assert_eq!(latest.len(), 9);
    for (r, l) in latest.iter().take(8).enumerate() {
        assert_eq!(l["run"], format!("run-{r}"));
        assert_eq!((l["latest"]["step"].as_i64(), l["latest"]["points"].as_u64()), (Some(1999), Some(2000)));
        assert!(same(value_of(&l["latest"]["value"]), r as f64 + 1999.0 / 1e4));
    }
    assert!(latest[8]["latest"].is_null(), "a run without the metric");
    // Runs named one by one (an id may hold a comma), mixed with a list.
    let path = "/v1/metrics/acc/latest?run=run-1&runs=run-2,run-3&run=a%2Cb";
    let (status, one) = call(&s, Method::GET, path, None).await;
    assert_eq!(status, 200, "{one}");
    let named: Vec<&str> = one["runs"].as_array().unwrap().iter().map(|r| r["run"].as_str().unwrap()).collect();
    assert_eq!(named, ["run-1", "run-2", "run-3", "a,b"]);
    let (status, cmp) =
        call(&s, Method::GET, &format!("/v1/metrics/acc/compare?runs={}&max_points=10", runs.join(",")), None).await;
    assert_eq!(status, 200, "{cmp}");
    let series = cmp["series"].as_array().unwrap();
    assert_eq!(series[3]["buckets"].as_array().unwrap().len(), 10);
    assert_eq!(series[3]["buckets"][0]["count"], 200);
    assert!(series[8]["buckets"].as_array().unwrap().is_empty());

    let (status, removed) = call(&s, Method::DELETE, "/v1/runs/run-3/metrics", None).await;
    assert_eq!((status, removed["points"].as_u64(), removed["series"].as_u64()), (200, Some(2000), Some(1)));
    let (_, latest) = call(&s, Method::GET, "/v1/runs/run-3/metrics", None).await;
    assert_eq!(latest["metrics"], json!([]));
    assert!(history(&s, "run-3", "acc", "").await.is_empty());
    assert_eq!(history(&s, "run-4", "acc", "").await.len(), 2000, "other runs keep theirs");
}

#[tokio::test]
async fn bad_requests_are_refused_and_write_nothing() {
    let s = App::start(Config::default());
    let good = json!({"key": "loss", "step": 1, "timestamp_ms": 5, "value": 0.5});
    let bad_points = [
        json!({"key": "loss", "step": 1, "value": "lots"}),
        json!({"key": "loss", "step": 1, "value": null}),
        json!({"key": "", "step": 1, "value": 1.0}),
        json!({"key": "loss", "step": "one", "value": 1.0}),
        json!({"key": "loss", "value": 1.0}),
        json!({"key": "loss", "step": 1, "value": 1.0, "extra": true}),
        json!({"key": "a\u{0}b", "step": 1, "value": 1.0}),
    ];
    for bad in bad_points {
        let (status, body) = log(&s, "r", vec![good.clone(), bad.clone()]).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(log(&s, "r", vec![]).await.0, 400, "an empty batch");
    let (_, latest) = call(&s, Method::GET, "/v1/runs/r/metrics", None).await;
    assert_eq!(latest["metrics"], json!([]), "nothing was written");
    for path in [
        "/v1/runs/r/metrics/loss/history?limit=0",
        "/v1/runs/r/metrics/loss/history?limit=100001",
        "/v1/runs/r/metrics/loss/history?min_step=x",
        "/v1/runs/r/metrics/loss/history?min_step=9&max_step=1",
        "/v1/runs/r/metrics/loss/history?cursor=garbage",
        "/v1/runs/r/metrics/loss/downsample",
        "/v1/runs/r/metrics/loss/downsample?max_points=0",
        "/v1/runs/r/metrics/loss/downsample?max_points=100001",
        "/v1/metrics/loss/latest",
        "/v1/metrics/loss/latest?runs=a,,b",
        "/v1/metrics/loss/compare?runs=a",
    ] {
        let (status, body) = call(&s, Method::GET, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
}

#[tokio::test]
async fn a_scoped_token_reaches_the_metrics_of_its_projects_runs_only() {
    let config = Config {
        tokens: vec![
            token("admin", Role::Admin, None),
            token("vision", Role::Write, Some("vision")),
            token("reader", Role::Read, None),
        ],
        ..Config::default()
    };
    let s = App::start(config);
    let as_ = |who: &'static str, method: Method, path: &str, body: Option<Value>| {
        let (s, path) = (s.clone(), path.to_owned());
        async move {
            let mut req = s.req(method, &path).bearer_auth(who);
            if let Some(b) = body {
                req = req.json(&b);
            }
            json(req.send().await.unwrap()).await.0
        }
    };
    let (status, _) = call(&s, Method::POST, "/v1/collections", Some(json!({"name": "runs", "indexes": []}))).await;
    assert_eq!(status, 401, "a token is needed");
    assert_eq!(as_("admin", Method::POST, "/v1/collections", Some(json!({"name": "runs", "indexes": []}))).await, 201);
    for (run, project) in [("mine", "vision"), ("theirs", "nlp")] {
        let doc = json!({"project": project, "status": "RUNNING"});
        assert_eq!(as_("admin", Method::PUT, &format!("/v1/collections/runs/records/{run}"), Some(doc)).await, 201);
    }
    let batch = json!({"points": [{"key": "loss", "step": 1, "value": 0.5}]});
    assert_eq!(as_("vision", Method::POST, "/v1/runs/mine/metrics", Some(batch.clone())).await, 200);
    assert_eq!(as_("vision", Method::POST, "/v1/runs/theirs/metrics", Some(batch.clone())).await, 404);
    assert_eq!(as_("vision", Method::POST, "/v1/runs/no-record/metrics", Some(batch.clone())).await, 404);
    assert_eq!(as_("admin", Method::POST, "/v1/runs/theirs/metrics", Some(batch.clone())).await, 200);
    assert_eq!(as_("reader", Method::POST, "/v1/runs/theirs/metrics", Some(batch.clone())).await, 403);
    assert_eq!(as_("vision", Method::GET, "/v1/runs/mine/metrics", None).await, 200);
    assert_eq!(as_("vision", Method::GET, "/v1/runs/theirs/metrics", None).await, 404);
    assert_eq!(as_("vision", Method::GET, "/v1/runs/theirs/metrics/loss/history", None).await, 404);
    assert_eq!(as_("vision", Method::GET, "/v1/metrics/loss/latest?runs=mine,theirs", None).await, 404);
    assert_eq!(as_("vision", Method::GET, "/v1/metrics/loss/latest?runs=mine", None).await, 200);
    assert_eq!(as_("vision", Method::DELETE, "/v1/runs/theirs/metrics", None).await, 404);
    assert_eq!(as_("reader", Method::GET, "/v1/metrics/loss/compare?runs=mine,theirs&max_points=5", None).await, 200);
}

/// Retention removes the points older than their run's retention: its experiment's when the run's record
/// names an experiment with one, else the global one; the runs kept longer keep theirs.
#[tokio::test]
async fn retention_by_age_globally_and_per_experiment() {
    use std::sync::Arc;

    use cairn_server::backend::{Backend, EmbeddedBackend, Precondition, Scope};
    use cairn_server::RunMetricsSettings;
    use cairn_store::metrics::MetricPoint;

    const DAY: i64 = 24 * 3600 * 1000;
    let dir = tempfile::tempdir().unwrap();
    let store = cairn_store::Store::open(dir.path()).unwrap();
    store.declare(cairn_store::CollectionSpec::new("runs", vec![])).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(EmbeddedBackend::new(store, 8));
    let now = 1_800_000_000_000i64;
    for (run, experiment) in [("short-1", "sweep"), ("long-1", "baseline"), ("plain", "other")] {
        let doc = json!({"experiment_id": experiment});
        backend.put(Scope::unscoped("t"), "runs".into(), run.into(), doc, Precondition::None).await.unwrap();
    }
    let metrics = backend.run_metrics().unwrap();
    // Each run: 2,000 points 40 days old, then 2,000 from 2 days ago (blocks of 1,024: the old ones end in
    // blocks of their own).
    for run in ["short-1", "long-1", "plain", "no-record"] {
        let old = (0..2048).map(|s| MetricPoint::new("loss", s, now - 40 * DAY + s, 1.0));
        let new = (2048..4096).map(|s| MetricPoint::new("loss", s, now - 2 * DAY + s, 0.5));
        metrics.log(run, &old.chain(new).collect::<Vec<_>>()).unwrap();
    }
    let settings = RunMetricsSettings {
        retention_days: Some(30),
        experiment_retention_days: [("sweep".to_owned(), 1), ("baseline".to_owned(), 365)].into_iter().collect(),
        ..RunMetricsSettings::default()
    };
    let removed = cairn_server::run_retention::expire_once(&backend, &settings, now).await.unwrap();
    let left = |run: &str| metrics.latest(run).unwrap().first().map_or(0, |l| l.points);
    assert_eq!(left("long-1"), 4096, "kept a year");
    assert_eq!(left("plain"), 2048, "30 days: the old blocks went");
    assert_eq!(left("no-record"), 2048, "a run without a record has the global retention");
    assert_eq!(left("short-1"), 0, "1 day: everything went");
    assert_eq!(removed.points, 2048 * 2 + 4096);
    assert_eq!(removed.series, 1);
}
