//! Run metrics on the PostgreSQL backend (`PostgresRunMetrics`), where only it can be tested: two servers
//! (two `PostgresBackend`s, each with its own pool) on one database logging to the same run at once, with
//! the counts and latest values exact and log order equal to commit order; one script of operations
//! answered as the embedded store answers it; values bit for bit (NaN payloads too); retention of exactly
//! the points older than the cutoff; downsampling of ranges wider than `bigint` and of sums past the
//! largest double. Each test makes a fresh database in `cairn_pgcluster::Postgres::shared()` (the cluster
//! `CAIRN_TEST_POSTGRES` names, or one of its own). The conformance suite over HTTP (`run_metrics.rs`)
//! runs on this backend with `CAIRN_TEST_BACKEND=postgres`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cairn_server::backend::{Backend, PostgresBackend, PostgresOptions, Precondition, RunMetricsStore, Scope};
use cairn_store::metrics::{
    Bucket, DownsampleRequest, HistoryPage, HistoryRequest, MetricPoint, Metrics, MetricsError, Point,
};
use serde_json::json;

mod fresh_database;
use fresh_database::database;

/// One server: a backend on the database `url` and its run metrics.
struct Node {
    backend: PostgresBackend,
    metrics: RunMetricsStore,
}

impl Node {
    async fn start(url: &str) -> Node {
        let opts = PostgresOptions { pool_size: 8, ..PostgresOptions::new(url) };
        let backend = PostgresBackend::open(opts).await.unwrap();
        let opening = backend.clone();
        let metrics = tokio::task::spawn_blocking(move || opening.run_metrics()).await.unwrap().unwrap();
        Node { backend, metrics }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.backend.close().unwrap();
    }
}

/// A client of the database, for reading the rows as they are.
async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Runs `f` on the blocking pool, as the server does.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Runs `f` on the blocking pool with the run metrics of one server on a fresh database.
async fn on_one_server<R: Send + 'static>(f: impl FnOnce(RunMetricsStore) -> R + Send + 'static) -> R {
    let (_pg, url) = database();
    let node = Node::start(&url).await;
    let metrics = node.metrics.clone();
    blocking(move || f(metrics)).await
}

/// The embedded store's metrics in a temporary directory (removed when the guard drops), to compare with.
fn embedded_metrics() -> (tempfile::TempDir, Metrics) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new(cairn_store::Store::open(dir.path()).unwrap());
    (dir, metrics)
}

/// Every point of a history, page by page.
fn whole(m: &RunMetricsStore, req: HistoryRequest) -> Vec<Point> {
    let mut req = req;
    let mut out = Vec::new();
    loop {
        let page = m.history(&req).unwrap();
        out.extend(page.points);
        match page.next_cursor {
            Some(c) => req = req.cursor(Some(c)),
            None => return out,
        }
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Eight writers, four on each of two servers, log 25 batches of 200 points each to one run at once: half
/// to a metric they share, half to one of their own, steps out of order and repeated. Then the count of
/// every series, read through either server, is the number of its points in the table and in its
/// history; its latest point is its history's last; and every point logged is in the history once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_logging_to_one_run_keep_counts_and_latest_exact() {
    let (_pg, url) = database();
    let a = Node::start(&url).await;
    let b = Node::start(&url).await;
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let m = if w % 2 == 0 { a.metrics.clone() } else { b.metrics.clone() };
        writers.push(std::thread::spawn(move || {
            let mut rng = Rng(w.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            for batch in 0..25u64 {
                let points: Vec<MetricPoint> = (0..200u64)
                    .map(|i| {
                        let key = if i % 2 == 0 { "loss".to_owned() } else { format!("own-{w}") };
                        let id = (w * 100_000 + batch * 1000 + i) as f64;
                        MetricPoint::new(key, rng.below(3000) as i64, (batch * 1000 + i) as i64, id)
                    })
                    .collect();
                let receipt = m.log("shared", &points).unwrap();
                assert_eq!((receipt.points, receipt.series), (200, 2));
            }
        }));
    }
    for w in writers {
        w.join().unwrap();
    }
    let logged = started.elapsed();
    let db = client(&url).await;
    for node in [&a, &b] {
        let m = node.metrics.clone();
        let latest = blocking(move || m.latest("shared").unwrap()).await;
        let keys: Vec<&str> = latest.iter().map(|l| l.key.as_str()).collect();
        let own: Vec<String> = (0..8).map(|w| format!("own-{w}")).collect();
        assert_eq!(keys, [vec!["loss"], own.iter().map(String::as_str).collect()].concat());
        for l in &latest {
            let want = if l.key == "loss" { 8 * 25 * 100 } else { 25 * 100 };
            assert_eq!(l.points, want, "{}", l.key);
            let rows = db
                .query_one("SELECT count(*) FROM cairn_run_metrics WHERE run = 'shared' AND key = $1", &[&l.key])
                .await
                .unwrap();
            assert_eq!(rows.get::<_, i64>(0) as u64, want, "{}: the rows", l.key);
            let (m, key) = (node.metrics.clone(), l.key.clone());
            let history = blocking(move || whole(&m, HistoryRequest::new("shared", key).limit(777))).await;
            assert_eq!(history.len() as u64, want, "{}: the history", l.key);
            assert!(history.windows(2).all(|w| w[0].step <= w[1].step), "ordered by step");
            assert_eq!(history.last(), Some(&l.point), "{}: the latest point is the history's last", l.key);
            let mut ids: Vec<u64> = history.iter().map(|p| p.value as u64).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len() as u64, want, "{}: every point once", l.key);
        }
    }
    eprintln!("40,000 points in 200 batches from 8 writers on two servers in {logged:?}");
}

/// Four writers on each of two servers log batches at one step while a reader reads the history again
/// and again: each read extends the one before (log order is commit order, so no point lands before one
/// already read). Without the series locks a batch numbered earlier may commit later, and this fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_order_is_commit_order() {
    let (_pg, url) = database();
    let a = Node::start(&url).await;
    let b = Node::start(&url).await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (m, stop) = (a.metrics.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut before: Vec<Point> = Vec::new();
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) {
                let now = m.history(&HistoryRequest::new("r", "k")).unwrap().points;
                assert!(
                    now.len() >= before.len() && now[..before.len()] == before[..],
                    "a read changed what came before"
                );
                before = now;
                reads += 1;
            }
            reads
        })
    };
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let m = if w % 2 == 0 { a.metrics.clone() } else { b.metrics.clone() };
        writers.push(std::thread::spawn(move || {
            for batch in 0..40u64 {
                let points: Vec<MetricPoint> =
                    (0..5u64).map(|i| MetricPoint::new("k", 7, 0, (w * 1000 + batch * 10 + i) as f64)).collect();
                m.log("r", &points).unwrap();
            }
        }));
    }
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().unwrap();
    assert!(reads > 1);
    let m = a.metrics.clone();
    let all = blocking(move || m.history(&HistoryRequest::new("r", "k")).unwrap().points).await;
    assert_eq!(all.len(), 8 * 40 * 5);
    // Within each batch, log order is the batch's order.
    for chunk in all.chunks(5) {
        assert!(chunk.windows(2).all(|w| w[1].value == w[0].value + 1.0), "{chunk:?}");
    }
}

/// Whether two values are the same for a comparison of answers: equal bits, both NaN, or equal numbers
/// (`-0.0` and `0.0` included: which of them a bucket's min or max is depends on the order values are met).
fn alike(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) || a == b
}

/// Buckets equal but for the means' last bits.
fn same_buckets(pg: &[Bucket], embedded: &[Bucket], what: &str) {
    assert_eq!(pg.len(), embedded.len(), "{what}: {pg:?} != {embedded:?}");
    for (p, e) in pg.iter().zip(embedded) {
        let ints = |b: &Bucket| (b.start_step, b.end_step, b.count, b.nan_count, b.last_step, b.last.to_bits());
        assert_eq!(ints(p), ints(e), "{what}");
        assert!(alike(p.min, e.min) && alike(p.max, e.max), "{what}: {p:?} != {e:?}");
        let close = (p.mean - e.mean).abs() <= 1e-9 * e.mean.abs().max(1.0);
        assert!(alike(p.mean, e.mean) || close, "{what}: mean {} != {}", p.mean, e.mean);
    }
}

/// A value for the script: mostly ordinary, sometimes NaN (with payloads), an infinity or `-0.0`.
fn value(rng: &mut Rng) -> f64 {
    match rng.below(40) {
        0 => f64::NAN,
        1 => f64::from_bits(0x7ff0_0000_dead_beef),
        2 => f64::from_bits(0xfff8_0000_0000_0001),
        3 => f64::INFINITY,
        4 => f64::NEG_INFINITY,
        5 => -0.0,
        6 => 0.0,
        _ => (rng.below(2_000_001) as f64 - 1_000_000.0) / 1024.0,
    }
}

/// One script of operations on the PostgreSQL backend and on the embedded store: batches out of order with
/// repeated steps to three runs and three keys, then after every few batches the latest values, the
/// histories (every page of several sizes, step and time ranges), downsampling (several bucket counts and
/// ranges), comparisons, and at the end deletion. Every answer is the same (cursors and receipts' sequence
/// numbers aside; means up to their last bits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_script_is_answered_as_the_embedded_store_answers_it() {
    on_one_server(move |pg| {
        let (_dir, embedded) = embedded_metrics();
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let runs = ["a", "b", "c"];
        let keys = ["loss", "val/acc", "x y"];
        let names: Vec<String> = ["a", "b", "c", "none"].iter().map(|s| s.to_string()).collect();
        for round in 0..12 {
            for _ in 0..3 {
                let run = runs[rng.below(3) as usize];
                let most = if rng.below(4) == 0 { 3000 } else { 300 };
                let n = 1 + rng.below(most);
                let points: Vec<MetricPoint> = (0..n)
                    .map(|_| {
                        let key = keys[rng.below(3) as usize];
                        let step = rng.below(2500) as i64 - 100;
                        MetricPoint::new(key, step, 1_000 + rng.below(5000) as i64, value(&mut rng))
                    })
                    .collect();
                let (p, e) = (pg.log(run, &points).unwrap(), embedded.log(run, &points).unwrap());
                assert_eq!((p.points, p.series), (e.points, e.series));
            }
            for run in runs {
                assert_eq!(pg.latest(run).unwrap(), embedded.latest(run).unwrap(), "round {round}: latest of {run}");
                for key in keys {
                    let what = format!("round {round}, {run}/{key}");
                    let mut requests = vec![
                        HistoryRequest::new(run, key),
                        HistoryRequest::new(run, key).steps(100, 700),
                        HistoryRequest::new(run, key).time(2000, 3500),
                        HistoryRequest::new(run, key).steps(-100, 0).time(1000, 4000),
                    ];
                    if round % 4 == 3 {
                        requests.extend([97, 250].map(|l| HistoryRequest::new(run, key).limit(l)));
                        requests.extend([1, 2].map(|l| HistoryRequest::new(run, key).steps(5, 40).limit(l)));
                    }
                    for req in requests {
                        let (mut p, mut e) = (req.clone(), req.clone());
                        loop {
                            let (pp, ep): (HistoryPage, HistoryPage) =
                                (pg.history(&p).unwrap(), embedded.history(&e).unwrap());
                            assert_eq!(pp.points, ep.points, "{what}: {req:?}");
                            assert_eq!(pp.next_cursor.is_some(), ep.next_cursor.is_some(), "{what}: {req:?}");
                            match (pp.next_cursor, ep.next_cursor) {
                                (Some(pc), Some(ec)) => {
                                    p = p.cursor(Some(pc));
                                    e = e.cursor(Some(ec));
                                }
                                _ => break,
                            }
                        }
                    }
                    for (max_points, range) in [
                        (1, None),
                        (7, None),
                        (64, Some((20, 250))),
                        (1000, None),
                        (5, Some((-10, 5))),
                        (3, Some((2600, 2700))),
                    ] {
                        let mut req = DownsampleRequest::new(run, key, max_points);
                        if let Some((lo, hi)) = range {
                            req = req.steps(lo, hi);
                        }
                        let (p, e) = (pg.downsample(&req).unwrap(), embedded.downsample(&req).unwrap());
                        same_buckets(&p, &e, &format!("{what}: {req:?}"));
                    }
                }
            }
            let req = DownsampleRequest::new("", "loss", 10);
            let (p, e) = (pg.compare(&names, &req).unwrap(), embedded.compare(&names, &req).unwrap());
            assert_eq!(p.len(), e.len());
            for (ps, es) in p.iter().zip(&e) {
                assert_eq!(ps.run, es.run);
                same_buckets(&ps.buckets, &es.buckets, &format!("round {round}: compare {}", ps.run));
            }
            assert_eq!(pg.latest_of(&names, "val/acc").unwrap(), embedded.latest_of(&names, "val/acc").unwrap());
        }
        let (p, e) = (pg.delete_run("b").unwrap(), embedded.delete_run("b").unwrap());
        assert_eq!((p.points, p.series), (e.points, e.series));
        assert_eq!(p.blocks, p.points, "each row is a point");
        assert!(pg.latest("b").unwrap().is_empty());
        assert!(pg.history(&HistoryRequest::new("b", "loss")).unwrap().points.is_empty());
        assert_eq!(pg.latest("a").unwrap(), embedded.latest("a").unwrap(), "other runs keep theirs");
        assert_eq!(pg.delete_run("b").unwrap(), Default::default());
    })
    .await;
}

/// Bad input is refused with the embedded store's message, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_the_embedded_stores() {
    let (_pg, url) = database();
    let node = Node::start(&url).await;
    let pg = node.metrics.clone();
    blocking(move || {
        let (_dir, embedded) = embedded_metrics();
        let invalid = |r: Result<String, MetricsError>| match r {
            Err(MetricsError::Invalid(m)) => m,
            other => panic!("not refused as invalid: {other:?}"),
        };
        let good = MetricPoint::new("loss", 1, 1, 1.0);
        let long = "x".repeat(251);
        let batches: Vec<(&str, Vec<MetricPoint>)> = vec![
            ("", vec![good.clone()]),
            (&long, vec![good.clone()]),
            ("a\0b", vec![good.clone()]),
            ("r", vec![]),
            ("r", vec![good.clone(); 100_001]),
            ("r", vec![good.clone(), MetricPoint::new("", 1, 1, 1.0)]),
            ("r", vec![MetricPoint::new("zz\0", 1, 1, 1.0), good.clone(), MetricPoint::new(&long, 1, 1, 1.0)]),
        ];
        for (run, points) in &batches {
            let p = invalid(pg.log(run, points).map(|r| format!("{r:?}")));
            let e = invalid(embedded.log(run, points).map(|r| format!("{r:?}")));
            assert_eq!(p, e);
        }
        assert!(pg.latest("r").unwrap().is_empty(), "nothing was written");
        pg.log("r", std::slice::from_ref(&good)).unwrap();
        embedded.log("r", std::slice::from_ref(&good)).unwrap();
        let histories = [
            HistoryRequest::new("r", "loss").limit(0),
            HistoryRequest::new("r", "loss").limit(1_000_001),
            HistoryRequest::new("r", "").limit(10),
            HistoryRequest::new("r", "loss").steps(9, 1),
            HistoryRequest::new("r", "loss").time(9, 1),
            HistoryRequest::new("r", "loss").cursor(Some("garbage".into())),
        ];
        for req in &histories {
            assert_eq!(
                invalid(pg.history(req).map(|p| format!("{p:?}"))),
                invalid(embedded.history(req).map(|p| format!("{p:?}")))
            );
        }
        let below = HistoryRequest::new("r", "loss").steps(5, 9).cursor(Some("p1.0".into()));
        assert_eq!(invalid(pg.history(&below).map(|p| format!("{p:?}"))), "cursor step 1 is below the range");
        assert!(
            matches!(
                pg.history(&HistoryRequest::new("r", "loss").cursor(Some("s1.0".into()))),
                Err(MetricsError::Invalid(_))
            ),
            "the embedded store's cursors are not this backend's"
        );
        let downsamples = [
            DownsampleRequest::new("r", "loss", 0),
            DownsampleRequest::new("r", "loss", 100_001),
            DownsampleRequest::new("r", "loss", 5).steps(3, 2),
            DownsampleRequest::new("", "loss", 5),
        ];
        for req in &downsamples {
            assert_eq!(
                invalid(pg.downsample(req).map(|b| format!("{b:?}"))),
                invalid(embedded.downsample(req).map(|b| format!("{b:?}")))
            );
        }
        let runs = vec!["r".to_owned(), String::new()];
        assert_eq!(
            invalid(pg.latest_of(&runs, "loss").map(|l| format!("{l:?}"))),
            invalid(embedded.latest_of(&runs, "loss").map(|l| format!("{l:?}")))
        );
        assert_eq!(
            invalid(pg.latest_of(&runs, "").map(|l| format!("{l:?}"))),
            invalid(embedded.latest_of(&runs, "").map(|l| format!("{l:?}")))
        );
        assert_eq!(
            invalid(pg.latest("").map(|l| format!("{l:?}"))),
            invalid(embedded.latest("").map(|l| format!("{l:?}")))
        );
        assert_eq!(
            invalid(pg.delete_run("").map(|l| format!("{l:?}"))),
            invalid(embedded.delete_run("").map(|l| format!("{l:?}")))
        );
        assert_eq!(pg.latest("r").unwrap(), embedded.latest("r").unwrap());
    })
    .await;
    // No collection may take a table's name.
    for name in ["cairn_run_metrics", "cairn_run_metric_series"] {
        let spec = cairn_store::CollectionSpec::new(name, vec![]);
        assert_eq!(node.backend.declare(spec).await.unwrap_err().status, 400, "{name}");
    }
}

/// Values come back bit for bit through every read (NaN payloads and signs, infinities, `-0.0`,
/// subnormals); a NaN's bits are in `value_bits`, every other value's column is NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_kept_bit_for_bit() {
    let (_pg, url) = database();
    let node = Node::start(&url).await;
    let m = node.metrics.clone();
    let values = [
        f64::NAN,
        -f64::NAN,
        f64::from_bits(0x7ff0_0000_0000_0001),
        f64::from_bits(0x7ff8_dead_beef_0042),
        f64::from_bits(0xfff4_0000_0000_1234),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        f64::from_bits(1),
        f64::MAX,
        f64::MIN_POSITIVE,
    ];
    blocking(move || {
        let points: Vec<MetricPoint> =
            values.iter().enumerate().map(|(i, v)| MetricPoint::new("v", i as i64, i as i64, *v)).collect();
        m.log("bits", &points).unwrap();
        let got = m.history(&HistoryRequest::new("bits", "v")).unwrap().points;
        let bits = |v: &[f64]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.iter().map(|p| p.value).collect::<Vec<_>>()), bits(&values));
        for (i, v) in values.iter().enumerate() {
            m.log("each", &[MetricPoint::new("v", i as i64, 0, *v)]).unwrap();
            let latest = m.latest("each").unwrap();
            assert_eq!(latest[0].point.value.to_bits(), v.to_bits(), "latest {v}");
            let one = DownsampleRequest::new("each", "v", 1).steps(i as i64, i as i64);
            assert_eq!(m.downsample(&one).unwrap()[0].last.to_bits(), v.to_bits(), "last {v}");
        }
    })
    .await;
    let db = client(&url).await;
    let rows =
        db.query("SELECT value_bits FROM cairn_run_metrics WHERE run = 'bits' ORDER BY step", &[]).await.unwrap();
    let kept: Vec<Option<i64>> = rows.iter().map(|r| r.get(0)).collect();
    let want: Vec<Option<i64>> = values.iter().map(|v| v.is_nan().then_some(v.to_bits() as i64)).collect();
    assert_eq!(kept, want);
}

/// Downsampling where the embedded store's arithmetic and PostgreSQL's part: a range wider than `bigint`
/// holds (bucket indexes in `numeric`) gives the embedded store's buckets; values whose sum passes the
/// largest double give their mean (the embedded store's sum overflows to infinity), and an infinity among
/// them still makes the mean infinite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downsampling_at_the_edges_of_the_numbers() {
    on_one_server(move |m| {
        let (_dir, embedded) = embedded_metrics();
        let steps = [i64::MIN, i64::MIN + 1, -5, 0, 3, i64::MAX - 1, i64::MAX];
        let points: Vec<MetricPoint> =
            steps.iter().enumerate().map(|(i, s)| MetricPoint::new("wide", *s, 0, i as f64)).collect();
        m.log("edge", &points).unwrap();
        embedded.log("edge", &points).unwrap();
        for n in [1, 2, 3, 7, 100] {
            for req in [
                DownsampleRequest::new("edge", "wide", n),
                DownsampleRequest::new("edge", "wide", n).steps(-10, i64::MAX),
            ] {
                same_buckets(&m.downsample(&req).unwrap(), &embedded.downsample(&req).unwrap(), &format!("{req:?}"));
            }
        }
        let big = [f64::MAX, f64::MAX, 1e-300, f64::MAX / 2.0];
        let points: Vec<MetricPoint> =
            big.iter().enumerate().map(|(i, v)| MetricPoint::new("big", i as i64, 0, *v)).collect();
        m.log("edge", &points).unwrap();
        let b = m.downsample(&DownsampleRequest::new("edge", "big", 1)).unwrap();
        let want = (f64::MAX / 4.0) * 2.0 + f64::MAX / 8.0;
        assert!((b[0].mean - want).abs() <= want * 1e-15, "{} != {want}", b[0].mean);
        assert_eq!((b[0].min, b[0].max), (1e-300, f64::MAX));
        m.log("edge", &[MetricPoint::new("big", 9, 0, f64::INFINITY)]).unwrap();
        assert_eq!(m.downsample(&DownsampleRequest::new("edge", "big", 1)).unwrap()[0].mean, f64::INFINITY);
        m.log("edge", &[MetricPoint::new("big", 10, 0, f64::NEG_INFINITY)]).unwrap();
        assert!(m.downsample(&DownsampleRequest::new("edge", "big", 1)).unwrap()[0].mean.is_nan());
        // Tiny values alone are summed as they are.
        m.log("edge", &[MetricPoint::new("tiny", 0, 0, 1e-300), MetricPoint::new("tiny", 1, 0, f64::from_bits(1))])
            .unwrap();
        let t = m.downsample(&DownsampleRequest::new("edge", "tiny", 1)).unwrap();
        assert_eq!(t[0].mean, (1e-300 + f64::from_bits(1)) / 2.0);
    })
    .await;
}

/// Retention removes exactly the points older than the cutoff, also where they are mixed with newer ones
/// (where the embedded store keeps a block that holds any newer point); the counts, lowest steps and latest
/// points are those of the points left; a series left empty goes; runs not selected keep everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_exactly_the_points_older_than_the_cutoff() {
    on_one_server(move |m| {
        // "mixed": even steps old, odd steps new; its highest step is old.
        let mixed: Vec<MetricPoint> =
            (0..3001).map(|s| MetricPoint::new("loss", s, if s % 2 == 0 { 100 } else { 5_000 }, s as f64)).collect();
        m.log("mixed", &mixed).unwrap();
        m.log("old", &(0..500).map(|s| MetricPoint::new("loss", s, 10, 1.0)).collect::<Vec<_>>()).unwrap();
        m.log("old", &[MetricPoint::new("acc", 0, 4_000, 1.0)]).unwrap();
        m.log("kept", &(0..500).map(|s| MetricPoint::new("loss", s, 10, 1.0)).collect::<Vec<_>>()).unwrap();
        let removed = m.expire_runs_before(1_000, &|run| run != "kept").unwrap();
        assert_eq!((removed.points, removed.series, removed.blocks), (1501 + 500, 1, 1501 + 500));
        let latest = m.latest("mixed").unwrap();
        assert_eq!(latest[0].points, 1500);
        assert_eq!((latest[0].point.step, latest[0].point.value), (2999, 2999.0), "the latest of the points left");
        let left = whole(&m, HistoryRequest::new("mixed", "loss"));
        assert_eq!(left.len(), 1500);
        assert!(left.iter().all(|p| p.timestamp_ms == 5_000 && p.step % 2 == 1));
        let bucket = m.downsample(&DownsampleRequest::new("mixed", "loss", 1)).unwrap();
        assert_eq!(
            (bucket[0].start_step, bucket[0].end_step, bucket[0].count),
            (1, 2999, 1500),
            "the lowest step left"
        );
        let old: Vec<String> = m.latest("old").unwrap().into_iter().map(|l| l.key).collect();
        assert_eq!(old, ["acc"], "an emptied series goes");
        assert_eq!(m.latest("kept").unwrap()[0].points, 500, "not selected");
        assert_eq!(m.expire_runs_before(1_000, &|_| true).unwrap().points, 500, "again: only the run kept before");
        assert_eq!(m.expire_runs_before(1_000, &|_| true).unwrap(), Default::default());
        // Logging after an expiry counts on from what is left.
        m.log("mixed", &[MetricPoint::new("loss", 3001, 6_000, -1.0)]).unwrap();
        let latest = m.latest("mixed").unwrap();
        assert_eq!((latest[0].points, latest[0].point.step), (1501, 3001));
    })
    .await;
}

/// The server's retention pass on this backend, by experiment as on the embedded store
/// (`run_metrics.rs`'s retention test): with the old points in series of their own the answers are the
/// embedded store's; `blocks` counts points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_age_globally_and_per_experiment() {
    const DAY: i64 = 24 * 3600 * 1000;
    let (_pg, url) = database();
    let node = Node::start(&url).await;
    let backend: Arc<dyn Backend> = Arc::new(node.backend.clone());
    backend.declare(cairn_store::CollectionSpec::new("runs", vec![])).await.unwrap();
    let now = 1_800_000_000_000i64;
    for (run, experiment) in [("short-1", "sweep"), ("long-1", "baseline"), ("plain", "other")] {
        let doc = json!({"experiment_id": experiment});
        backend.put(Scope::unscoped("t"), "runs".into(), run.into(), doc, Precondition::None).await.unwrap();
    }
    let m = node.metrics.clone();
    blocking(move || {
        for run in ["short-1", "long-1", "plain", "no-record"] {
            let old = (0..2000).map(|s| MetricPoint::new("loss", s, now - 40 * DAY + s, 1.0));
            let new = (2000..4000).map(|s| MetricPoint::new("loss", s, now - 2 * DAY + s, 0.5));
            m.log(run, &old.chain(new).collect::<Vec<_>>()).unwrap();
        }
    })
    .await;
    let settings = cairn_server::RunMetricsSettings {
        retention_days: Some(30),
        experiment_retention_days: [("sweep".to_owned(), 1), ("baseline".to_owned(), 365)].into_iter().collect(),
        ..cairn_server::RunMetricsSettings::default()
    };
    let removed = cairn_server::run_retention::expire_once(&backend, &settings, now).await.unwrap();
    let m = node.metrics.clone();
    let left: BTreeMap<String, u64> = blocking(move || {
        ["short-1", "long-1", "plain", "no-record"]
            .iter()
            .map(|r| (r.to_string(), m.latest(r).unwrap().first().map_or(0, |l| l.points)))
            .collect()
    })
    .await;
    assert_eq!(left["long-1"], 4000, "kept a year");
    assert_eq!(left["plain"], 2000, "30 days: the old points went");
    assert_eq!(left["no-record"], 2000, "a run without a record has the global retention");
    assert_eq!(left["short-1"], 0, "1 day: everything went");
    assert_eq!((removed.points, removed.blocks, removed.series), (8000, 8000, 1));
}
