//! Shared by the sync tests: real servers started on loopback (a throwaway PostgreSQL 15 cluster, moto's
//! S3 server), stopped when dropped, and a generator of compute-platform records.

#![allow(dead_code, reason = "each test binary uses part of the support module")]
#![allow(clippy::unwrap_used, reason = "test support: a failure is the test's failure")]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

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
