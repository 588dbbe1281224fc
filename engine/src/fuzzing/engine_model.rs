//! The engine against a `BTreeMap` model: puts, deletes, batches, point reads, range scans both ways,
//! snapshot reads, flushes, compactions, clean reopens, power cuts (every [`CrashMode`], any seed) and
//! EIO/ENOSPC injected into a chosen file operation, all on a [`Db`] over [`MemStorage`] with tiny memtables
//! and tables so that flushes and compactions really happen.
//!
//! Every commit is [`Durability::Immediate`], so after a power cut the database must hold exactly what was
//! acknowledged. A write that failed with an I/O error is either wholly present or wholly absent after the
//! next reopen, and invisible before it; after it the database refuses writes until reopened. Reads always
//! match the model.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};

use super::harness;
use crate::error::WriteError;
use crate::io::{CrashMode, FaultKind, FaultOp, MemStorage};
use crate::table::Compression;
use crate::Snapshot;
use crate::{Db, WriteBatch};

/// Most operations decoded from one input, so that each run stays fast.
const MAX_OPS: usize = 64;
/// Most entries in one batch.
const MAX_BATCH: usize = 24;
/// Most snapshots held at once.
const MAX_SNAPSHOTS: usize = 4;
/// Most pairs compared per scan.
const MAX_SCAN: usize = 64;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// What one run did: how many operations of each kind it checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineSummary {
    /// Operations decoded and run.
    pub ops: usize,
    /// Puts, deletes and batches attempted.
    pub writes: usize,
    /// Point reads, scans and snapshot reads checked.
    pub reads: usize,
    /// Explicit flushes and compactions.
    pub flushes: usize,
    /// Reopens, clean or after a power cut (the final check included).
    pub reopens: usize,
    /// Power cuts.
    pub crashes: usize,
    /// Injected faults armed.
    pub faults: usize,
    /// Writes attempted while a write or sync fault was armed (one fires within four file writes or syncs).
    pub writes_under_fault: usize,
    /// Writes that failed with an I/O error (their outcome is known only after the reopen).
    pub failed_writes: usize,
    /// Writes refused because an earlier write, flush or compaction had failed.
    pub refused_writes: usize,
}

impl std::ops::AddAssign for EngineSummary {
    fn add_assign(&mut self, other: Self) {
        let Self {
            ops,
            writes,
            reads,
            flushes,
            reopens,
            crashes,
            faults,
            writes_under_fault,
            failed_writes,
            refused_writes,
        } = other;
        self.ops += ops;
        self.writes += writes;
        self.reads += reads;
        self.flushes += flushes;
        self.reopens += reopens;
        self.crashes += crashes;
        self.faults += faults;
        self.writes_under_fault += writes_under_fault;
        self.failed_writes += failed_writes;
        self.refused_writes += refused_writes;
    }
}

#[derive(Debug, Arbitrary)]
enum Value {
    Small(Vec<u8>),
    Large { byte: u8, len: u16 },
}

impl Value {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Small(v) => v.iter().copied().take(48).collect(),
            Value::Large { byte, len } => vec![*byte; usize::from(*len) % 3000],
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Mode {
    Drop,
    Tear,
    Garble,
    Mixed,
}

impl From<Mode> for CrashMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Drop => CrashMode::Drop,
            Mode::Tear => CrashMode::Tear,
            Mode::Garble => CrashMode::Garble,
            Mode::Mixed => CrashMode::Mixed,
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Fault {
    Write,
    Sync,
    Rename,
    Create,
    SyncDir,
}

impl From<Fault> for FaultOp {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Write => FaultOp::Write,
            Fault::Sync => FaultOp::Sync,
            Fault::Rename => FaultOp::Rename,
            Fault::Create => FaultOp::Create,
            Fault::SyncDir => FaultOp::SyncDir,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Put {
        key: u8,
        value: Value,
    },
    Delete {
        key: u8,
    },
    Batch(Vec<(u8, Option<Value>)>),
    Get {
        key: u8,
    },
    Scan {
        lo: u8,
        hi: u8,
        reverse: bool,
    },
    TakeSnapshot,
    ReadSnapshot {
        which: u8,
        lo: u8,
        reverse: bool,
    },
    /// Grouped, so that they are rarer than reads and writes and the database grows between them.
    Disrupt(Disruption),
}

#[derive(Debug, Arbitrary)]
enum Disruption {
    Flush,
    Compact,
    Reopen,
    Crash { seed: u64, mode: Mode },
    Fault { op: Fault, no_space: bool, after: u8 },
}

/// Keys share prefixes, so that prefix compression and prefix scans are exercised.
fn key(k: u8) -> Vec<u8> {
    format!("key/{:02x}/{k}", k % 16).into_bytes()
}

fn open(fs: &MemStorage, compression: bool) -> Db {
    harness::options(fs)
        .compression(if compression { Compression::Zstd { level: 1 } } else { Compression::None })
        .level0_slowdown_trigger(6)
        .level0_stop_trigger(10)
        // Compactions cut their outputs between the key groups `key/0x/` .. `key/0f/`.
        .table_partitions(|k| k.len().min(7))
        // Larger batches are ingested as tables.
        .ingest_threshold(512)
        .open(Path::new("/db"))
        .unwrap_or_else(|e| panic!("reopen failed: {e}"))
}

fn scan(iter: Result<crate::Iter, crate::StorageError>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let iter = iter.unwrap_or_else(|e| panic!("scan failed: {e}"));
    iter.take(MAX_SCAN).collect::<Result<_, _>>().unwrap_or_else(|e| panic!("scan failed: {e}"))
}

fn expected(model: &Model, lo: Bound<&Vec<u8>>, hi: Bound<&Vec<u8>>, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let range = model.range::<Vec<u8>, _>((lo, hi)).map(|(k, v)| (k.clone(), v.clone()));
    if reverse {
        range.rev().take(MAX_SCAN).collect()
    } else {
        range.take(MAX_SCAN).collect()
    }
}

struct Run {
    fs: MemStorage,
    db: Option<Db>,
    compression: bool,
    model: Model,
    snapshots: Vec<(Snapshot, Model)>,
    /// A fault was armed since the last reopen: writes, flushes and compactions may fail.
    armed: bool,
    /// The armed fault is on file writes or syncs, which every write does.
    armed_on_writes: bool,
    /// A write failed (or was refused): every later write must fail until the reopen.
    failed: bool,
    /// The state if the write that failed with an I/O error did land after all.
    maybe: Option<Model>,
    summary: EngineSummary,
}

impl Run {
    fn db(&self) -> &Db {
        self.db.as_ref().unwrap_or_else(|| panic!("no open database"))
    }

    fn write(&mut self, batch: WriteBatch, after: Model) {
        self.summary.writes += 1;
        if self.armed_on_writes {
            self.summary.writes_under_fault += 1;
        }
        match self.db().write(batch) {
            Ok(_) => {
                assert!(!self.failed, "a write succeeded after an earlier one failed");
                self.model = after;
            }
            Err(WriteError::Storage(_)) if self.armed && !self.failed => {
                self.failed = true;
                self.summary.failed_writes += 1;
                self.maybe = Some(after);
            }
            Err(WriteError::Poisoned { .. }) if self.armed => {
                self.failed = true;
                self.summary.refused_writes += 1;
            }
            Err(e) => panic!("unexpected write error: {e}"),
        }
    }

    fn maintenance(&mut self, compact: bool) {
        self.summary.flushes += 1;
        let result = if compact { self.db().compact() } else { self.db().flush() };
        if let Err(e) = result {
            assert!(self.armed, "flush or compaction failed without an injected fault: {e}");
        }
    }

    fn check_get(&mut self, k: u8) {
        self.summary.reads += 1;
        let got = self.db().get(key(k)).unwrap_or_else(|e| panic!("get failed: {e}"));
        assert_eq!(got.as_ref(), self.model.get(&key(k)), "get {}", String::from_utf8_lossy(&key(k)));
    }

    fn check_scan(&mut self, lo: u8, hi: u8, reverse: bool) {
        self.summary.reads += 1;
        let (lo, hi) = if key(lo) <= key(hi) { (key(lo), key(hi)) } else { (key(hi), key(lo)) };
        let range = lo.clone()..=hi.clone();
        let got = scan(if reverse { self.db().range_rev(range) } else { self.db().range(range) });
        let want = expected(&self.model, Bound::Included(&lo), Bound::Included(&hi), reverse);
        assert_eq!(got, want, "scan {lo:?}..={hi:?} reverse={reverse}");
    }

    fn check_snapshot(&mut self, which: u8, lo: u8, reverse: bool) {
        let Some((snap, model)) = self.snapshots.get(usize::from(which) % self.snapshots.len().max(1)) else {
            return;
        };
        self.summary.reads += 1;
        let lo = key(lo);
        let got = scan(if reverse { snap.range_rev(lo.clone()..) } else { snap.range(lo.clone()..) });
        assert_eq!(got, expected(model, Bound::Included(&lo), Bound::Unbounded, reverse), "snapshot scan");
        let got = snap.get(&lo).unwrap_or_else(|e| panic!("snapshot get failed: {e}"));
        assert_eq!(got.as_ref(), model.get(&lo), "snapshot get");
    }

    /// Closes the database (after a power cut if `crash` says so), reopens it and checks its whole contents.
    fn reopen(&mut self, crash: Option<(u64, CrashMode)>) {
        self.summary.reopens += 1;
        self.snapshots.clear();
        let image = crash.map(|(seed, mode)| self.fs.crash(seed, mode));
        // Closing may fail on a still-armed fault; like a process exit, that is allowed.
        drop(self.db.take());
        self.fs.heal();
        if let Some(image) = image {
            self.summary.crashes += 1;
            self.fs = image;
        }
        let db = open(&self.fs, self.compression);
        let got: Model = scan_all(&db);
        if got != self.model {
            assert!(
                self.maybe.as_ref() == Some(&got),
                "after reopen (crash: {crash:?}) the database holds neither the acknowledged state nor that plus \
                 the failed write: {} keys, expected {}",
                got.len(),
                self.model.len()
            );
            self.model = got;
        }
        db.verify().unwrap_or_else(|e| panic!("verify after reopen: {e}"));
        self.db = Some(db);
        self.armed = false;
        self.armed_on_writes = false;
        self.failed = false;
        self.maybe = None;
    }
}

fn scan_all(db: &Db) -> Model {
    let iter = db.iter().unwrap_or_else(|e| panic!("scan failed: {e}"));
    iter.collect::<Result<_, _>>().unwrap_or_else(|e| panic!("scan failed: {e}"))
}

/// Decodes `data` into operations and runs them against the model; panics on any disagreement.
pub fn engine_model(data: &[u8]) -> EngineSummary {
    let mut u = Unstructured::new(data);
    let compression = bool::arbitrary(&mut u).unwrap_or(true);
    let fs = MemStorage::new();
    let db = open(&fs, compression);
    let mut run = Run {
        fs,
        db: Some(db),
        compression,
        model: Model::new(),
        snapshots: Vec::new(),
        armed: false,
        armed_on_writes: false,
        failed: false,
        maybe: None,
        summary: EngineSummary::default(),
    };
    for op in harness::ops(&mut u, MAX_OPS) {
        run.summary.ops += 1;
        match op {
            Op::Put { key: k, value } => {
                let v = value.bytes();
                let mut batch = WriteBatch::new();
                batch.put(key(k), &v);
                let mut after = run.model.clone();
                after.insert(key(k), v);
                run.write(batch, after);
            }
            Op::Delete { key: k } => {
                let mut batch = WriteBatch::new();
                batch.delete(key(k));
                let mut after = run.model.clone();
                after.remove(&key(k));
                run.write(batch, after);
            }
            Op::Batch(entries) => {
                let mut batch = WriteBatch::new();
                let mut after = run.model.clone();
                for (k, v) in entries.iter().take(MAX_BATCH) {
                    match v {
                        Some(v) => {
                            batch.put(key(*k), v.bytes());
                            after.insert(key(*k), v.bytes());
                        }
                        None => {
                            batch.delete(key(*k));
                            after.remove(&key(*k));
                        }
                    }
                }
                run.write(batch, after);
            }
            Op::Get { key: k } => run.check_get(k),
            Op::Scan { lo, hi, reverse } => run.check_scan(lo, hi, reverse),
            Op::TakeSnapshot => {
                if run.snapshots.len() == MAX_SNAPSHOTS {
                    run.snapshots.remove(0);
                }
                let snap = run.db().snapshot();
                run.snapshots.push((snap, run.model.clone()));
            }
            Op::ReadSnapshot { which, lo, reverse } => run.check_snapshot(which, lo, reverse),
            Op::Disrupt(Disruption::Flush) => run.maintenance(false),
            Op::Disrupt(Disruption::Compact) => run.maintenance(true),
            Op::Disrupt(Disruption::Reopen) => run.reopen(None),
            Op::Disrupt(Disruption::Crash { seed, mode }) => run.reopen(Some((seed, mode.into()))),
            Op::Disrupt(Disruption::Fault { op, no_space, after }) => {
                run.summary.faults += 1;
                run.armed = true;
                run.armed_on_writes |= matches!(op, Fault::Write | Fault::Sync);
                let kind = if no_space { FaultKind::NoSpace } else { FaultKind::Eio };
                run.fs.fail(op.into(), u64::from(after % 4), kind);
            }
        }
    }
    // Whatever happened, a clean reopen must find the acknowledged state.
    run.reopen(None);
    run.summary
}
