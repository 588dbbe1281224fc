//! Continuous replication from inside `cairn serve`: every `[[replicate]]` target of the configuration runs
//! the follow-mode exporter of `cairn export` (crate `cairn-sync`) on a thread of its own, as a durable
//! change-feed consumer of the store. A restart resumes where the target's committed cursor says; a target
//! that is down does not stop the server: the exporter is retried every `retry_seconds` and catches up
//! from the feed (within its retention). Each target's state is in [`ReplicaStatus`], shown on `/metrics`.
//!
//! Targets: `postgres://...` (the tables of `cairn export postgres`, in `schema`) or an object store URL
//! (`s3://bucket/prefix` with an optional S3-compatible `endpoint`, or `file:///dir`): checksummed
//! snapshots and hash-chained change segments, restorable with `cairn import`, with the bytes of the artifact
//! store's objects when the server has one (pass it to [`Replicators::start`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cairn_store::artifacts::Artifacts;
use cairn_store::Store;
use cairn_sync::{ObjectExportOptions, ObjectLocation, PgExportOptions, Progress, StopFlag};
use serde::Deserialize;
use tokio::sync::watch;

/// One `[[replicate]]` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicateConfig {
    /// The target's name: unique among the targets, 1-64 ASCII letters, digits, `_` or `-`. The store's
    /// change consumer is `pg-NAME` or `s3-NAME`, as for `cairn export --name NAME`.
    pub name: String,
    /// `postgres://user@host:port/db`, `s3://bucket/prefix`, or `file:///absolute/dir`.
    pub to: String,
    /// PostgreSQL schema holding the tables (PostgreSQL targets). Default: `public`.
    #[serde(default)]
    pub schema: Option<String>,
    /// Endpoint of an S3-compatible server, `http://host:port` (object-store targets). Default: AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Seconds between a failure and the next attempt. Default: 10.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
    /// Object-store targets: a new snapshot every this many seconds (older changes then need no replay).
    /// Default: none (one snapshot at the start, then change segments).
    #[serde(default)]
    pub snapshot_every_seconds: Option<u64>,
}

fn default_retry_seconds() -> u64 {
    10
}

impl ReplicateConfig {
    /// Checks the name and the target's scheme.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(format!("replicate name {:?} must be 1-64 ASCII letters, digits, '_' or '-'", self.name));
        }
        if self.retry_seconds == 0 {
            return Err(format!("replicate {}: retry_seconds must be at least 1", self.name));
        }
        match self.to.split("://").next() {
            Some("postgres" | "postgresql" | "s3" | "file") => Ok(()),
            _ => Err(format!("replicate {}: to must be postgres://, s3:// or file://, not {:?}", self.name, self.to)),
        }
    }

    fn is_postgres(&self) -> bool {
        self.to.starts_with("postgres://") || self.to.starts_with("postgresql://")
    }

    /// The store's change consumer that holds back what this target has not received.
    pub fn consumer(&self) -> String {
        format!("{}-{}", if self.is_postgres() { "pg" } else { "s3" }, self.name)
    }
}

/// The state of one target, as `/metrics` shows it.
#[derive(Debug, Default)]
pub struct ReplicaStatus {
    /// The target's name.
    pub name: String,
    /// The store's change consumer of the target.
    pub consumer: String,
    /// Whether the exporter is running without error (its last attempt did not fail).
    pub up: AtomicBool,
    /// Attempts that failed.
    pub failures: AtomicU64,
    /// The last failure, for the log and the operator.
    pub last_error: Mutex<Option<String>>,
}

/// The replicators of a server: one thread per target, stopped by the server's shutdown signal.
pub struct Replicators {
    /// Every target's state, in configuration order.
    pub status: Vec<Arc<ReplicaStatus>>,
    threads: Vec<JoinHandle<()>>,
}

impl Replicators {
    /// Starts one replicator per target over `store`; each ends when `stop` becomes `true`. `artifacts` is
    /// the artifact store of `store`, if the server has one: object-store targets then carry the objects'
    /// bytes. Without it, an object-store target fails (and is retried) once the store holds an artifact
    /// object.
    pub fn start(
        store: &Store,
        artifacts: Option<&Artifacts>,
        targets: &[ReplicateConfig],
        stop: &watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let mut status = Vec::new();
        let mut threads = Vec::new();
        for target in targets {
            let s = Arc::new(ReplicaStatus {
                name: target.name.clone(),
                consumer: target.consumer(),
                ..ReplicaStatus::default()
            });
            let (store, target, stop, state) = (store.clone(), target.clone(), stop.clone(), s.clone());
            let artifacts = artifacts.cloned();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("cairn-replicate-{}", target.name))
                    .spawn(move || run(&store, artifacts.as_ref(), &target, stop, &state))?,
            );
            status.push(s);
        }
        Ok(Self { status, threads })
    }

    /// Waits for every replicator to end (after the stop signal).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One target's loop: the follow-mode exporter, retried after each failure, until `stop`.
fn run(store: &Store, artifacts: Option<&Artifacts>, target: &ReplicateConfig, stop: StopFlag, status: &ReplicaStatus) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(target = %target.name, error = %e, "replication cannot start its runtime");
            return;
        }
    };
    runtime.block_on(async {
        while !*stop.borrow() {
            status.up.store(true, Ordering::Release);
            let result = if target.is_postgres() {
                let opts = PgExportOptions::new(&target.to)
                    .schema(target.schema.as_deref().unwrap_or("public"))
                    .name(&target.name)
                    .follow(true);
                cairn_sync::export_postgres(store, &opts, &Progress::hidden(), Some(stop.clone())).await.map(drop)
            } else {
                let location = ObjectLocation::new(&target.to).endpoint(target.endpoint.clone()).open();
                match location {
                    Ok(location) => {
                        let opts = ObjectExportOptions::default()
                            .name(&target.name)
                            .follow(true)
                            .snapshot_every(target.snapshot_every_seconds.map(Duration::from_secs));
                        let stop = Some(stop.clone());
                        cairn_sync::export_objects(store, artifacts, &location, &opts, &Progress::hidden(), stop)
                            .await
                            .map(drop)
                    }
                    Err(e) => Err(e),
                }
            };
            if *stop.borrow() {
                break;
            }
            // A follow-mode export returns only when stopped or failing.
            if let Err(e) = result {
                status.up.store(false, Ordering::Release);
                status.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target = %target.name, error = %e, retry_seconds = target.retry_seconds, "replication failed; retrying");
                *status.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
            }
            let mut stop = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(target.retry_seconds)) => {}
                _ = stop.changed() => {}
            }
        }
    });
}
