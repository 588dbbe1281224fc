//! Shared by the sync tests: real servers started on loopback (a throwaway PostgreSQL 15 cluster, moto's
//! S3 server), stopped when dropped, and generators of compute-platform records and of metric series.

#![allow(dead_code, reason = "each test binary uses part of the support module")]
#![allow(clippy::unwrap_used, reason = "test support: a failure is the test's failure")]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use cairn_store::metrics::{HistoryRequest, MetricPoint, Metrics};
use cairn_store::{CollectionSpec, IndexSpec, Store};
use serde_json::{json, Value};

/// The tests' runtime: two workers, like the machines they run on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[allow(unused_imports, reason = "each test binary uses part of the support module")]
pub use cairn_pgcluster::{free_port, wait_for_port, Postgres};

/// moto's S3 server on a free loopback port; killed on drop. `scripts/test.sh` installs it when missing.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .or_else(|_| {
                Command::new("python3")
                    .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            })
            .expect("moto_server not found: python3 -m pip install 'moto[server]'");
        let moto = Moto { child, port };
        wait_for_port(port, "moto_server");
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A sync location in `bucket` under `prefix`, with moto's test credentials.
    pub fn location(&self, bucket: &str, prefix: &str) -> cairn_sync::ObjectLocation {
        cairn_sync::ObjectLocation::new(format!("s3://{bucket}/{prefix}"))
            .endpoint(Some(self.endpoint()))
            .credentials("testing", "testing")
            .region("us-east-1")
            .max_retries(2)
            .open()
            .unwrap()
    }

    /// A raw client of `bucket`, to look at and tamper with objects.
    pub fn raw(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_region("us-east-1")
            .build()
            .unwrap()
    }

    /// Creates a bucket (moto accepts the unsigned request).
    pub fn create_bucket(&self, name: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"), "create bucket: {reply}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The collections the generator writes: jobs with single, composite, descending and nested indexes, and
/// notes without indexes.
pub fn declare(store: &Store) {
    store
        .declare(CollectionSpec::new(
            "jobs",
            vec![
                IndexSpec::new("status", &["status"]),
                IndexSpec::new("status_priority", &["status", "-priority"]),
                IndexSpec::new("gpus", &["resources.gpus"]),
                IndexSpec::new("cost", &["cost"]),
                IndexSpec::new("preemptible", &["preemptible"]),
            ],
        ))
        .unwrap();
    store.declare(CollectionSpec::new("notes", vec![])).unwrap();
}

const STATUSES: [&str; 5] = ["PENDING", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED"];

pub fn job(i: usize, round: usize) -> Value {
    let owner = ["alice", "bob", "chen", "dana"][i % 4];
    let gpu_type = ["A100", "H100", "L4"][i % 3];
    json!({
        "name": format!("train-resnet50-{i}"),
        "owner": owner,
        "status": STATUSES[(i + round) % 5],
        "priority": (i * 7 + round) % 1000,
        "cost": (i % 100) as f64 * 0.25 + 0.1,
        "preemptible": i.is_multiple_of(3),
        "resources": {"gpus": i % 8, "gpu_type": gpu_type, "mem_gb": 16 * (1 + i % 4)},
        "tags": ["vision", format!("round-{round}")],
        "note": "résumé ✓ \"quoted\" \\ tab\t",
        "created_at": 1_767_225_600_000_i64 + i as i64 * 30_000,
        "lease_expires_at": null,
    })
}

/// Writes `n` jobs and `n / 10` notes, 1,000 records per transaction.
pub fn populate(store: &Store, n: usize) {
    declare(store);
    for start in (0..n).step_by(1000) {
        store
            .transaction(|tx| {
                for i in start..(start + 1000).min(n) {
                    tx.insert_doc("jobs", &format!("job-{i:07}"), job(i, 0))?;
                    if i.is_multiple_of(10) {
                        tx.insert_doc("notes", &format!("note-{i:07}"), json!({"text": format!("note {i}")}))?;
                    }
                }
                Ok(())
            })
            .unwrap();
    }
}

/// A round of changes: updates of every `step`-th job, deletes, a delete and re-insert in separate commits
/// (the version starts again at 1), and new jobs. Returns the number of record changes made.
pub fn mutate(store: &Store, n: usize, step: usize, round: usize) -> usize {
    let jobs = store.collection_dyn("jobs").unwrap();
    let mut changes = 0;
    for i in (round % step..n).step_by(step) {
        let id = format!("job-{i:07}");
        match jobs.get(&id).unwrap() {
            Some(_) if i.is_multiple_of(11) => {
                jobs.delete(&id, None).unwrap();
                changes += 1;
                if i.is_multiple_of(2) {
                    jobs.insert(&id, job(i, round)).unwrap();
                    changes += 1;
                }
            }
            Some(_) => {
                jobs.upsert(&id, job(i, round)).unwrap();
                changes += 1;
            }
            None => {
                jobs.insert(&id, job(i, round)).unwrap();
                changes += 1;
            }
        }
    }
    let new = format!("job-new-{round}");
    jobs.insert(&new, job(round, round)).unwrap();
    changes + 1
}

/// Every record as (version, hash of version and document), by collection and id.
pub type State = BTreeMap<(String, String), (u64, cairn_sync::Digest)>;

pub fn state(store: &Store) -> State {
    let snap = store.snapshot();
    let mut out = State::new();
    for spec in snap.collections().unwrap() {
        for r in snap.records(&spec.name, None).unwrap() {
            let r = r.unwrap();
            out.insert((spec.name.clone(), r.id), (r.version, cairn_sync::record_digest(r.version, &r.doc)));
        }
    }
    out
}

/// Asserts two states are equal, naming the first difference.
pub fn assert_same(what: &str, expected: &State, actual: &State) {
    if expected == actual {
        return;
    }
    let first = expected
        .iter()
        .find(|(k, v)| actual.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k:?}: expected version {}, found {:?}", v.0, actual.get(k).map(|a| (a.0, a.1 == v.1))))
        .or_else(|| actual.keys().find(|k| !expected.contains_key(*k)).map(|k| format!("{k:?} should not exist")));
    panic!(
        "{what}: {} expected, {} found; first difference: {}",
        expected.len(),
        actual.len(),
        first.unwrap_or_default()
    );
}

pub fn open(dir: &Path) -> Store {
    Store::open(dir).unwrap()
}

/// A quiet NaN with a payload: kept bit for bit, or not.
pub const NAN_PAYLOAD: u64 = 0x7ff8_0000_dead_beef;

/// Values whose bits a careless copy changes: NaNs with payloads (quiet, and negative signalling),
/// infinities, both zeros, a subnormal, the extremes.
pub fn special_values() -> [f64; 9] {
    [
        f64::from_bits(NAN_PAYLOAD),
        f64::from_bits(0xfff0_0000_0000_0001),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        f64::from_bits(1),
        f64::MAX,
        f64::MIN,
    ]
}

/// Logs series of several runs and keys that stress a round trip: special values spread through them,
/// points logged out of order and back to earlier steps, steps logged twice, a series over several
/// blocks, a run and a key holding `/`. Returns the number of points logged.
pub fn log_metrics(store: &Store) -> u64 {
    let m = Metrics::new(store.clone());
    let specials = special_values();
    let t0 = 1_767_225_600_000_i64;
    let value =
        |i: usize| if i.is_multiple_of(37) { specials[(i / 37) % specials.len()] } else { (i as f64 * 0.37).sin() };
    let mut logged = 0;
    let mut log = |run: &str, points: Vec<MetricPoint>| {
        logged += points.len() as u64;
        m.log(run, &points).unwrap();
    };
    // run-a/loss: 3,000 steps in order over three batches, then a batch going back to earlier steps.
    for part in 0..3 {
        log(
            "run-a",
            (part * 1000..(part + 1) * 1000)
                .map(|s| MetricPoint::new("loss", s as i64, t0 + s as i64, value(s)))
                .collect(),
        );
    }
    log(
        "run-a",
        (0..200).map(|i| MetricPoint::new("loss", (i * 13) as i64, t0 + 5000 + i as i64, value(i + 1))).collect(),
    );
    // run-a/val/acc: every step twice in one batch, and again in a later one; run-a/lr in the same batches.
    for round in 0..2 {
        log(
            "run-a",
            (0..300)
                .flat_map(|s| {
                    [
                        MetricPoint::new("val/acc", s, t0 + s, value(s as usize + round)),
                        MetricPoint::new("val/acc", s, t0 + s + 1, value(s as usize + 7)),
                        MetricPoint::new("lr", s, t0 + s, 1e-3 / (s + 1) as f64),
                    ]
                })
                .collect(),
        );
    }
    // run-b/loss: logged in reverse step order, a point at a time for the first ten.
    for s in (990..1000).rev() {
        log("run-b", vec![MetricPoint::new("loss", s, t0 - s, value(s as usize))]);
    }
    log("run-b", (0..990).rev().map(|s| MetricPoint::new("loss", s, t0 - s, value(s as usize))).collect());
    // run/c: negative and extreme steps and timestamps.
    log(
        "run/c",
        vec![
            MetricPoint::new("grad norm", i64::MIN, i64::MIN, specials[0]),
            MetricPoint::new("grad norm", -5, -1, -0.0),
            MetricPoint::new("grad norm", i64::MAX, i64::MAX, specials[1]),
        ],
    );
    logged
}

/// Every metric series as `history` reads it: (step, timestamp, value bits) of each point, in order.
pub type MetricState = BTreeMap<(String, String), Vec<(i64, i64, u64)>>;

pub fn metric_state(store: &Store) -> MetricState {
    let m = Metrics::new(store.clone());
    let mut out = MetricState::new();
    for s in store.snapshot().metric_series().unwrap() {
        let s = s.unwrap();
        let page = m.history(&HistoryRequest::new(&s.run, &s.key)).unwrap();
        assert!(page.next_cursor.is_none());
        let points = page.points.iter().map(|p| (p.step, p.timestamp_ms, p.value.to_bits())).collect();
        out.insert((s.run, s.key), points);
    }
    out
}

/// Asserts two metric states are equal bit for bit, naming the first series that differs.
pub fn assert_same_metrics(what: &str, expected: &MetricState, actual: &MetricState) {
    if expected == actual {
        return;
    }
    let keys = |m: &MetricState| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(expected), keys(actual), "{what}: other series");
    for (id, points) in expected {
        let got = &actual[id];
        if got == points {
            continue;
        }
        let at = points.iter().zip(got).position(|(a, b)| a != b);
        panic!(
            "{what}: {id:?}: {} points expected, {} found; first difference at {at:?}: {:?} != {:?}",
            points.len(),
            got.len(),
            at.map(|i| points[i]),
            at.map(|i| got[i])
        );
    }
}
