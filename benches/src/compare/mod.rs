//! The side-by-side benchmark: Cairn against redb, LMDB (through heed), fjall and SQLite on the same
//! generated data, with the same durability and the same cache budget; native_db joins for the collection
//! workloads. `src/bin/compare.rs` is its command line; `docs/benchmarks.md` says what each workload
//! measures and how each engine is configured.
//!
//! Every engine implements two small traits: [`KvEngine`] (ordered bytes to bytes) and, where it can hold
//! documents with secondary indexes, [`DocEngine`] (the built-in `jobs` collection: Cairn's `Store`, SQLite's
//! JSON column with generated columns, native_db's typed model). [`run`] plays the workload sets engine
//! after engine, each set in a child process of its own when asked (so its peak RSS can be read), checks
//! that every engine gave the same answers, and writes the report.
//!
//! Layout: `workloads.rs` (data, plans, the timed loops, checksums), `sustained.rs` (writers and a reader
//! running together, with latency percentiles), `runner.rs` (child processes, the crash test, cross-engine
//! checks), `report.rs` (markdown and JSON), `repeat.rs` (full runs one after another, the median of Cairn's
//! ratios), and one file per engine.

mod cairn;
mod fjall;
mod lmdb;
#[cfg(feature = "native_db")]
mod native_db;
mod redb;
mod repeat;
mod report;
mod runner;
mod sqlite;
mod sustained;
mod workloads;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use repeat::{run_repeated, Repeated};
pub use report::{Machine, Report, ResultRow};
pub use runner::{child_load, child_run, run, run_set, SetOutcome};
pub use sustained::Latency;
pub use workloads::{claim_next, job, jobs, Checksum, DocPlan, KvPlan, Measurement};

/// Errors of the harness and of every engine, boxed: the benchmark only reports them.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Result of a harness or engine call.
pub type Result<T> = std::result::Result<T, Error>;

/// The cache budget every engine gets unless told otherwise: 256 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// An engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EngineKind {
    /// Cairn, this repository's engine.
    Cairn,
    /// redb: copy-on-write B-trees in one file.
    Redb,
    /// LMDB through heed: a memory-mapped copy-on-write B-tree.
    Lmdb,
    /// fjall: an LSM tree with a journal.
    Fjall,
    /// SQLite (bundled) through rusqlite, in WAL mode.
    Sqlite,
    /// native_db: typed models with secondary keys over redb 2 (collection workloads only; needs the
    /// `native_db` feature).
    NativeDb,
}

impl EngineKind {
    /// Every engine, in report order.
    pub const ALL: [EngineKind; 6] = [
        EngineKind::Cairn,
        EngineKind::Redb,
        EngineKind::Lmdb,
        EngineKind::Fjall,
        EngineKind::Sqlite,
        EngineKind::NativeDb,
    ];

    /// Whether this build can run the engine (native_db needs the `native_db` feature).
    pub fn available(self) -> bool {
        self != EngineKind::NativeDb || cfg!(feature = "native_db")
    }

    /// The engine's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Cairn => "cairn",
            EngineKind::Redb => "redb",
            EngineKind::Lmdb => "lmdb",
            EngineKind::Fjall => "fjall",
            EngineKind::Sqlite => "sqlite",
            EngineKind::NativeDb => "native_db",
        }
    }
}

/// An engine with a durability setting: `cairn` syncs every commit, `cairn-nosync` does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EngineSpec {
    /// Which engine.
    pub kind: EngineKind,
    /// Whether a commit is on stable storage when it returns (see `docs/benchmarks.md` for each engine's
    /// setting).
    pub durable: bool,
}

impl EngineSpec {
    /// The durable variant of `kind`.
    pub fn durable(kind: EngineKind) -> Self {
        Self { kind, durable: true }
    }

    /// The variant of `kind` that does not sync commits.
    pub fn nosync(kind: EngineKind) -> Self {
        Self { kind, durable: false }
    }

    /// Parses `cairn`, `redb`, `lmdb`, `fjall`, `sqlite`, each optionally followed by `-nosync`.
    pub fn parse(text: &str) -> Option<Self> {
        let (base, durable) = match text.strip_suffix("-nosync") {
            Some(base) => (base, false),
            None => (text, true),
        };
        let kind = EngineKind::ALL.into_iter().find(|k| k.name() == base)?;
        Some(Self { kind, durable })
    }

    /// Whether this engine runs the workload set: every engine but native_db runs the key-value sets;
    /// engines with documents and secondary indexes (Cairn's `Store`, SQLite, and native_db, which has no
    /// non-durable setting) run the collection set.
    pub fn runs(self, set: WorkloadSet) -> bool {
        match set {
            WorkloadSet::Kv | WorkloadSet::Kv4k | WorkloadSet::Sustained => self.kind != EngineKind::NativeDb,
            WorkloadSet::Docs => match self.kind {
                EngineKind::Cairn | EngineKind::Sqlite => true,
                EngineKind::NativeDb => self.durable,
                EngineKind::Redb | EngineKind::Lmdb | EngineKind::Fjall => false,
            },
        }
    }

    /// The Cairn variant with the same durability: the reference its ratios are computed against.
    pub fn cairn_peer(self) -> Self {
        Self { kind: EngineKind::Cairn, durable: self.durable }
    }
}

impl fmt::Display for EngineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        if !self.durable {
            f.write_str("-nosync")?;
        }
        Ok(())
    }
}

/// What `compact` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compacted {
    /// The engine compacted its files.
    Done,
    /// The engine has no compaction reachable through its API; the files are reported as they are.
    Unsupported,
}

/// An ordered key-value store, as the key-value workloads use it.
///
/// Writes through [`KvEngine::bulk_load`], [`KvEngine::batch_put`] and [`KvEngine::remove`] are one
/// transaction (or batch) each, committed with the engine's durability setting. Single-put commits and
/// reads go through per-thread handles ([`KvWriter`], [`KvReader`]), so an engine that needs a connection
/// or a read transaction per thread gets one, opened before the clock starts.
pub trait KvEngine: Send + Sync {
    /// Writes all `pairs` in one transaction.
    fn bulk_load(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.batch_put(pairs)
    }

    /// Writes `pairs` in one transaction.
    fn batch_put(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()>;

    /// Deletes `keys` in one transaction.
    fn remove(&self, keys: &[Vec<u8>]) -> Result<()>;

    /// A handle for single-put commits, for the calling thread.
    fn writer(&self) -> Result<Box<dyn KvWriter + '_>>;

    /// A handle for reads, for the calling thread. Engines with read transactions open one here and keep
    /// it for the handle's life.
    fn reader(&self) -> Result<Box<dyn KvReader + '_>>;

    /// Compacts the files, if the engine can (no reader or writer may be alive).
    fn compact(&mut self) -> Result<Compacted>;

    /// Closes the engine cleanly.
    fn close(self: Box<Self>) -> Result<()>;

    /// The engine's own account of its state (e.g. Cairn's tables per level), printed with the progress
    /// lines to help explain a number; `None` when it has none.
    fn describe(&self) -> Option<String> {
        None
    }
}

/// Single-put commits from one thread.
pub trait KvWriter {
    /// Writes one pair in its own transaction, committed with the engine's durability setting.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
}

/// Reads from one thread.
pub trait KvReader {
    /// Looks `key` up, adding the value (if any) to `sum`; returns whether it was found.
    fn get(&mut self, key: &[u8], sum: &mut Checksum) -> Result<bool>;

    /// Reads up to `n` pairs in key order from `start` (inclusive), adding each key and value to `sum`;
    /// returns how many were read.
    fn range(&mut self, start: &[u8], n: usize, sum: &mut Checksum) -> Result<usize>;
}

/// A store of `cairn_platform::Job` documents with the secondary indexes of `Job::indexes`, as the collection
/// workloads use it.
pub trait DocEngine: Send + Sync {
    /// Inserts `jobs` in one transaction, committed with the engine's durability setting.
    fn insert_batch(&self, jobs: &[::cairn_platform::Job]) -> Result<()>;

    /// A handle for queries and claims, for the calling thread.
    fn session(&self) -> Result<Box<dyn DocSession + '_>>;

    /// Closes the engine cleanly.
    fn close(self: Box<Self>) -> Result<()>;

    /// As [`KvEngine::describe`].
    fn describe(&self) -> Option<String> {
        None
    }
}

/// Queries and claims from one thread.
pub trait DocSession {
    /// The scheduler's query: the `limit` PENDING jobs of highest priority (ties by id), decoded; adds
    /// each id and priority to `sum`, returns how many.
    fn top_pending(&mut self, limit: usize, sum: &mut Checksum) -> Result<usize>;

    /// Claims the PENDING job of highest priority for `node` with a version-checked update (status
    /// RUNNING, node, lease, start time, attempts); returns its id, or `None` if none is left.
    fn claim(&mut self, node: &str, now_ms: i64, lease_ms: i64) -> Result<Option<String>>;

    /// Reads every job of `owner`, `page` per page in id order with a cursor, adding each id and status to
    /// `sum`; returns (jobs, pages).
    fn page_owner(&mut self, owner: &str, page: usize, sum: &mut Checksum) -> Result<(usize, usize)>;

    /// Reads one job by id, decoded, adding its id, status and priority to `sum`; returns whether found.
    fn get(&mut self, id: &str, sum: &mut Checksum) -> Result<bool>;
}

/// Opens (creating if needed) the key-value store of `spec` in directory `dir`.
pub fn open_kv(spec: EngineSpec, dir: &Path, cache_bytes: usize) -> Result<Box<dyn KvEngine>> {
    open_kv_with(spec, dir, cache_bytes, true)
}

/// Opens the key-value store of `spec` as [`open_kv`] does, but with Cairn's table ingest off
/// (`Options::ingest_threshold(usize::MAX)`): every batch, however large, goes through the WAL and the
/// memtable. The other engines have one write path and open as [`open_kv`] opens them.
pub fn open_kv_logged(spec: EngineSpec, dir: &Path, cache_bytes: usize) -> Result<Box<dyn KvEngine>> {
    open_kv_with(spec, dir, cache_bytes, false)
}

fn open_kv_with(spec: EngineSpec, dir: &Path, cache_bytes: usize, ingest: bool) -> Result<Box<dyn KvEngine>> {
    std::fs::create_dir_all(dir)?;
    Ok(match spec.kind {
        EngineKind::Cairn => Box::new(self::cairn::CairnKv::open(dir, spec.durable, cache_bytes, ingest)?),
        EngineKind::Redb => Box::new(self::redb::RedbKv::open(dir, spec.durable, cache_bytes)?),
        EngineKind::Lmdb => Box::new(self::lmdb::LmdbKv::open(dir, spec.durable, cache_bytes)?),
        EngineKind::Fjall => Box::new(self::fjall::FjallKv::open(dir, spec.durable, cache_bytes)?),
        EngineKind::Sqlite => Box::new(self::sqlite::SqliteKv::open(dir, spec.durable, cache_bytes)?),
        EngineKind::NativeDb => return Err("native_db runs the collection workloads only".into()),
    })
}

/// Opens (creating if needed) the document store of `spec` in directory `dir`; `None` for an engine
/// without documents.
pub fn open_docs(spec: EngineSpec, dir: &Path, cache_bytes: usize) -> Result<Option<Box<dyn DocEngine>>> {
    std::fs::create_dir_all(dir)?;
    Ok(match spec.kind {
        EngineKind::Cairn => Some(Box::new(self::cairn::CairnDocs::open(dir, spec.durable, cache_bytes)?)),
        EngineKind::Sqlite => Some(Box::new(self::sqlite::SqliteDocs::open(dir, spec.durable, cache_bytes)?)),
        #[cfg(feature = "native_db")]
        EngineKind::NativeDb if spec.durable => Some(Box::new(self::native_db::NativeDocs::open(dir, cache_bytes)?)),
        #[cfg(not(feature = "native_db"))]
        EngineKind::NativeDb if spec.durable => return Err("built without the native_db feature".into()),
        EngineKind::NativeDb | EngineKind::Redb | EngineKind::Lmdb | EngineKind::Fjall => None,
    })
}

/// Bytes the files under `dir` occupy on disk (allocated blocks, so sparse files count what they use).
pub fn disk_usage(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    Ok(total)
}

/// Which workload sets to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadSet {
    /// Key-value workloads, every engine but native_db.
    Kv,
    /// Random reads of 4 KiB values, in a database of their own; every engine but native_db.
    Kv4k,
    /// Writers committing batches of 1 KiB values for a set time beside a reader, with latency
    /// percentiles; every engine but native_db.
    Sustained,
    /// Collection workloads on the `jobs` collection, engines with documents.
    Docs,
}

impl WorkloadSet {
    /// Every set, in the default order.
    pub const ALL: [WorkloadSet; 4] = [WorkloadSet::Kv, WorkloadSet::Kv4k, WorkloadSet::Sustained, WorkloadSet::Docs];

    /// The set's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadSet::Kv => "kv",
            WorkloadSet::Kv4k => "kv4k",
            WorkloadSet::Sustained => "sustained",
            WorkloadSet::Docs => "docs",
        }
    }

    /// Parses `kv`, `kv4k`, `sustained` or `docs`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == text)
    }
}

/// What a run of the benchmark does.
#[derive(Debug, Clone)]
pub struct Config {
    /// Keys bulk-loaded by the key-value workloads.
    pub n: usize,
    /// Jobs inserted by the collection workloads.
    pub jobs: usize,
    /// Scaled-down operation counts (see [`KvPlan::new`] and [`DocPlan::new`]).
    pub quick: bool,
    /// Engines, in column order.
    pub engines: Vec<EngineSpec>,
    /// Workload sets, in order.
    pub sets: Vec<WorkloadSet>,
    /// Where the databases live; each engine and set gets a subdirectory, removed when it is done.
    pub dir: PathBuf,
    /// The cache budget given to every engine, in bytes.
    pub cache_bytes: usize,
    /// Seed of the generated data.
    pub seed: u64,
    /// How long the sustained workload's writers and reader run (see `sustained.rs`).
    pub sustained: Duration,
    /// The `compare` binary, re-executed for the crash test and for isolated sets. `None`: skip the crash
    /// test, and run every set in this process.
    pub exe: Option<PathBuf>,
    /// Run each engine's workload set in a child process, whose peak RSS is reported.
    pub isolate: bool,
    /// Where to write the JSON report; `None` writes none.
    pub json_path: Option<PathBuf>,
}
