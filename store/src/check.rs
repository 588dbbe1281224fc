//! Checking a data directory without changing it (`cairn check`): the engine's file-level and full-scan
//! checks ([`Check`]), then every collection's indexes against its records.

use std::path::Path;

use cairn_engine::{Check, CheckReport, Finding, OpenError};

use crate::store::{Store, StoreOptions};

/// What [`check_store`] found: the engine's report, with the record store's problems added to its
/// `problems`, and the record store's counts.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StoreCheckReport {
    /// The engine's report (files, WALs, full scan), and every problem found.
    pub engine: CheckReport,
    /// Collections in the store's catalog.
    pub collections: u64,
    /// Index entries compared with the records they index.
    pub index_entries: u64,
    /// Blobs of the artifact store read and verified (`<dir>/blobs`, if present).
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Series of the run metrics read and compared with their blocks.
    pub metric_series: u64,
    /// Points in the metrics' blocks, every block decoded.
    pub metric_points: u64,
}

impl StoreCheckReport {
    /// No problem was found, and no torn WAL tail is left.
    pub fn is_healthy(&self) -> bool {
        self.engine.is_healthy()
    }
}

/// Runs `check` (the engine's checks, with its storage and repair settings) on `dir`, then, if the
/// engine found nothing wrong, compares every collection's indexes with its records through the same
/// read-only view, reads every block of the run metrics ([`Metrics::check`](crate::metrics::Metrics::check)),
/// and checks the artifact store's blob files (`<dir>/blobs`, every checksum, and every
/// object's blobs present). Fails only as [`Check::run`] does.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use cairn_store::{check_store, engine::Check, CollectionSpec, IndexSpec, Store};
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// store.declare(CollectionSpec::new("jobs", vec![IndexSpec::new("status", &["status"])]))?;
/// drop(store);
/// let report = check_store(&Check::new(), dir.path())?;
/// assert!(report.is_healthy());
/// assert_eq!(report.collections, 1);
/// # Ok(()) }
/// ```
pub fn check_store(check: &Check, dir: impl AsRef<Path>) -> Result<StoreCheckReport, OpenError> {
    let mut counts = (0, 0, 0, 0);
    let mut metrics = (0, 0);
    let engine = check.run_with(dir, |db, report| {
        let store = match Store::with_db(db.clone(), StoreOptions::for_check()) {
            Ok(store) => store,
            Err(e) => return report.problems.push(Finding::new(None, None, format!("collection catalog: {e}"))),
        };
        counts.0 = store.collections().len() as u64;
        match store.check_indexes() {
            Ok(n) => counts.1 = n,
            Err(e) => report.problems.push(Finding::new(None, None, format!("indexes disagree with records: {e}"))),
        }
        match crate::metrics::Metrics::new(store.clone()).check() {
            Ok(m) => {
                metrics = (m.series, m.points);
                for p in m.problems {
                    report.problems.push(Finding::new(None, None, p));
                }
            }
            Err(e) => report.problems.push(Finding::new(None, None, format!("metrics: {e}"))),
        }
        let blob_dir = crate::artifacts::blob_dir(db.path());
        if db.storage().list(&blob_dir).is_ok() {
            let checked = crate::artifacts::Artifacts::open_for_check(store, &blob_dir).and_then(|a| a.check());
            match checked {
                Ok(r) => {
                    (counts.2, counts.3) = (r.blobs, r.bytes);
                    for p in r.problems {
                        report.problems.push(Finding::new(None, None, format!("artifacts: {p}")));
                    }
                }
                Err(e) => report.problems.push(Finding::new(None, None, format!("artifacts: {e}"))),
            }
        }
    })?;
    Ok(StoreCheckReport {
        engine,
        collections: counts.0,
        index_entries: counts.1,
        blobs: counts.2,
        blob_bytes: counts.3,
        metric_series: metrics.0,
        metric_points: metrics.1,
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use cairn_engine::{Compression, Db, MemStorage, Options, Storage};
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::{IndexSpec, Record};

    /// A record with the indexes of a job: enough to give the check index entries of several shapes.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Job {
        id: String,
        status: String,
        owner: String,
        priority: i64,
    }

    impl Record for Job {
        const COLLECTION: &'static str = "jobs";
        fn id(&self) -> String {
            self.id.clone()
        }
        fn indexes() -> Vec<IndexSpec> {
            vec![
                IndexSpec::new("status", &["status"]),
                IndexSpec::new("owner", &["owner"]),
                IndexSpec::new("status_priority", &["status", "-priority"]),
            ]
        }
    }

    fn dir() -> &'static Path {
        Path::new("/db")
    }

    fn open(fs: &MemStorage) -> Db {
        Options::default().storage(Arc::new(fs.clone())).compression(Compression::None).open(dir()).unwrap()
    }

    fn check(fs: &MemStorage) -> StoreCheckReport {
        check_store(&Check::new().storage(Arc::new(fs.clone())), dir()).unwrap()
    }

    /// A store with a table, a WAL and a collection of 20 jobs.
    fn store() -> MemStorage {
        let fs = MemStorage::new();
        let db = open(&fs);
        for i in 0..50 {
            db.put(format!("key/{i:03}"), format!("value {i}")).unwrap();
        }
        db.flush().unwrap();
        let store = Store::with_db(db.clone(), StoreOptions::default()).unwrap();
        let jobs = store.collection::<Job>().unwrap();
        for i in 0..20 {
            jobs.upsert(&Job { id: format!("job-{i}"), status: "PENDING".into(), owner: "alice".into(), priority: i })
                .unwrap();
        }
        drop(jobs);
        drop(store);
        db.close().unwrap();
        fs
    }

    #[test]
    fn a_healthy_store_passes_and_is_left_unchanged() {
        let fs = store();
        let files = |fs: &MemStorage| -> Vec<(PathBuf, Vec<u8>)> {
            fs.files().into_iter().map(|(p, _)| (p.clone(), fs.read(&p).unwrap())).collect()
        };
        let before = files(&fs);
        let r = check(&fs);
        assert!(r.is_healthy(), "{:?}", r.engine.problems);
        assert!(r.engine.warnings.is_empty(), "{:?}", r.engine.warnings);
        assert_eq!((r.engine.tables, r.engine.table_entries, r.collections), (1, 50, 1));
        assert!(r.engine.wal_batches >= 20 && r.engine.wal_markers >= 1, "{r:?}");
        assert_eq!(r.index_entries, 20 * Job::indexes().len() as u64);
        assert!(r.engine.live_keys > 50);
        assert_eq!(before, files(&fs), "check changed the directory");
    }

    #[test]
    fn an_index_entry_without_its_record_is_a_problem() {
        let fs = store();
        let db = open(&fs);
        let (index_key, _) = db
            .prefix([crate::keys::INDEX]) // the first index entry
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        db.delete(&index_key).unwrap();
        db.close().unwrap();
        let r = check(&fs);
        assert!(!r.is_healthy());
        assert!(r.engine.problems[0].message.contains("missing index entry"), "{:?}", r.engine.problems);
    }
}
