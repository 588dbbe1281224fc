//! Checking a data directory without changing it (`cairn check`), and repairing a torn WAL tail.
//!
//! The file-level checks read every file directly: `CURRENT`, every manifest edit, every table (footer,
//! index, filter and every block's checksum, key order, and agreement with the manifest's metadata), every
//! WAL record and the batch it carries. The logical checks then open the database through an in-memory
//! overlay of the directory (the WAL is replayed, a manifest written, in memory only), scan it, and hand the
//! open database to the caller's own check (the record store compares indexes with records there). The
//! directory is locked for the whole check and nothing in
//! it is written, unless [`Check::repair`] is set and a torn WAL tail is found: then that WAL is cut back to
//! its last intact record.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch;
use crate::error::{OpenError, StorageError};
use crate::format::coding::read_u32_at;
use crate::format::key;
use crate::format::names::{self, FileKind};
use crate::format::{MANIFEST_FORMAT_VERSION, MANIFEST_MAGIC};
use crate::io::{FsStorage, OverlayStorage, Storage};
use crate::log::{intact_records_from, read_log, written_len};
use crate::manifest::VersionEdit;
use crate::options::Options;
use crate::table::BlockCache;
use crate::version::NUM_LEVELS;
use crate::version::{TableContext, Version};
use crate::wal::{marker_synced_through, read_wal, WAL_FORMAT_VERSION};

use super::{lock_path, Db};

/// One thing found wrong (or worth knowing) in a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The file concerned, if the finding is about one.
    pub file: Option<PathBuf>,
    /// Byte offset in `file` of the record, block or field concerned, if known.
    pub offset: Option<u64>,
    /// What was found.
    pub message: String,
}

impl Finding {
    /// A finding about `file` (if any) at `offset` (if known).
    pub fn new(file: Option<&Path>, offset: Option<u64>, message: impl Into<String>) -> Self {
        Self { file: file.map(Path::to_path_buf), offset, message: message.into() }
    }

    /// A finding from a storage error met while doing `context`, naming its file and offset when it has them.
    pub fn from_storage(e: &StorageError, context: &str) -> Self {
        match e {
            StorageError::Corruption { file, offset, reason } => {
                Self::new(Some(file), Some(*offset), format!("{context}: corruption: {reason}"))
            }
            StorageError::Io { path, source } => Self::new(Some(path), None, format!("{context}: I/O error: {source}")),
            other => Self::new(None, None, format!("{context}: {other}")),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.offset) {
            (Some(file), Some(offset)) => write!(f, "{} at offset {offset}: {}", file.display(), self.message),
            (Some(file), None) => write!(f, "{}: {}", file.display(), self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// The torn tail of the newest WAL: bytes after its last intact record that an open would discard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornWal {
    /// The WAL.
    pub file: PathBuf,
    /// Its length on disk (before any repair).
    pub file_len: u64,
    /// Length of its intact prefix: where the tail starts, and the length a repair cuts it to.
    pub valid_len: u64,
    /// Bytes from `valid_len` to the last byte that is not zero (zeros after it are space reserved ahead
    /// of the appends, or bytes that never reached the disk).
    pub dropped_bytes: u64,
    /// Intact records found inside the dropped bytes (after the damaged one), sync markers included.
    pub dropped_records: u64,
    /// Of those, write batches (commits that were never acknowledged as durable, or a crash would not have
    /// left them behind an unsynced, damaged record).
    pub dropped_batches: u64,
    /// Puts and deletes in those batches.
    pub dropped_entries: u64,
    /// Why the record at `valid_len` is not intact.
    pub reason: String,
}

/// What [`Check::run`] found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CheckReport {
    /// The directory checked.
    pub dir: PathBuf,
    /// Damage and inconsistencies: any makes the directory unhealthy.
    pub problems: Vec<Finding>,
    /// Harmless leftovers (orphan files an open would remove, a torn manifest append an open ignores).
    pub warnings: Vec<Finding>,
    /// The newest WAL's torn tail, if it has one (an open cuts it off; so does [`Check::repair`]).
    pub torn_wal: Option<TornWal>,
    /// Whether the torn tail was cut off by this run.
    pub repaired: bool,
    /// The live manifest.
    pub manifest: Option<PathBuf>,
    /// Edits read from it.
    pub manifest_edits: u64,
    /// Live tables.
    pub tables: u64,
    /// Data blocks read from them.
    pub table_blocks: u64,
    /// Entries in them.
    pub table_entries: u64,
    /// WALs replayed by an open.
    pub wal_files: u64,
    /// Write batches in them.
    pub wal_batches: u64,
    /// Puts and deletes in those batches.
    pub wal_entries: u64,
    /// Sync markers in them.
    pub wal_markers: u64,
    /// Live keys seen by a full scan of the database.
    pub live_keys: u64,
}

impl CheckReport {
    /// No problem was found, and no torn WAL tail is left.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty() && (self.torn_wal.is_none() || self.repaired)
    }

    fn problem(&mut self, file: Option<&Path>, offset: Option<u64>, message: impl Into<String>) {
        self.problems.push(Finding::new(file, offset, message));
    }

    fn warning(&mut self, file: Option<&Path>, message: impl Into<String>) {
        self.warnings.push(Finding::new(file, None, message));
    }
}

/// Checks a data directory without changing it (the engine side of `cairn check`).
///
/// The file-level checks read every file directly: `CURRENT`, every manifest edit, every live table (footer,
/// index, filter and every block's checksum, key order within and across blocks, entry count, first and last
/// key and sequence range against the manifest; non-overlapping key ranges in levels 1 and deeper), and every
/// WAL an open would replay (checksums, sync markers, batches, ascending sequences). Orphan files are
/// warnings. If nothing is wrong so far, the database is then opened through an in-memory overlay of the
/// directory (the replay and the manifest an open writes stay in memory) and scanned in full; a layer above
/// checks its own contents there ([`Check::run_with`]). The directory is locked for the whole check.
///
/// Nothing is written unless [`Check::repair`] is set and the newest WAL has a torn tail: then that WAL is
/// cut back to its last intact record, as the next open would do.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let db = cairn_engine::Db::open(dir.path())?;
/// db.put("job/1", "PENDING")?;
/// db.close()?;
/// let report = cairn_engine::Check::new().run(dir.path())?;
/// assert!(report.is_healthy(), "{:?}", report.problems);
/// assert_eq!(report.wal_batches, 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Check {
    storage: Arc<dyn Storage>,
    repair: bool,
}

impl Default for Check {
    fn default() -> Self {
        Self { storage: Arc::new(FsStorage), repair: false }
    }
}

impl Check {
    /// A check with default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where files live. Default: [`FsStorage`], the real file system.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Whether to cut a torn tail off the newest WAL (the only change a check ever makes, and the same one
    /// an open would make). Default: `false`.
    pub fn repair(mut self, yes: bool) -> Self {
        self.repair = yes;
        self
    }

    /// Checks the database in `dir`. Fails only if the directory holds no database, is locked by another
    /// owner, or cannot be listed; everything found inside is in the report.
    pub fn run(&self, dir: impl AsRef<Path>) -> Result<CheckReport, OpenError> {
        self.run_with(dir, |_, _| {})
    }

    /// Checks the database in `dir` as [`Check::run`] does, then, if no problem was found and the full scan
    /// succeeded, calls `contents` with the database (opened read-only through the in-memory overlay) and
    /// the report, for the checks of a layer above (the record store compares its indexes with its records
    /// there, adding what it finds to `report.problems`).
    pub fn run_with(
        &self,
        dir: impl AsRef<Path>,
        contents: impl FnOnce(&Db, &mut CheckReport),
    ) -> Result<CheckReport, OpenError> {
        let dir = dir.as_ref();
        let storage = &*self.storage;
        let io_err = |e| StorageError::io(dir, e);
        if !storage.exists(dir).map_err(io_err)? || !storage.exists(&dir.join(names::CURRENT)).map_err(io_err)? {
            return Err(OpenError::NotFound { path: dir.to_path_buf() });
        }
        let lock_file = lock_path(dir);
        let _lock = storage.lock(&lock_file).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => OpenError::Locked { path: lock_file.clone() },
            _ => StorageError::io(&lock_file, e).into(),
        })?;
        let listing = storage.list(dir).map_err(io_err)?;
        let mut report = CheckReport { dir: dir.to_path_buf(), ..CheckReport::default() };
        let ctx = TableContext {
            storage: self.storage.clone(),
            dir: dir.to_path_buf(),
            cache: Arc::new(BlockCache::new(0)),
            retire: None,
        };
        let manifest = check_manifest(&ctx, &mut report);
        if let Some(state) = &manifest {
            check_tables(&ctx, &state.version, &listing, &mut report);
            check_orphans(dir, state, &listing, &mut report);
            check_wals(storage, dir, &listing, state.log_number, &mut report);
        }
        if self.repair {
            if let Some(torn) = &report.torn_wal {
                storage.truncate(&torn.file, torn.valid_len).map_err(|e| StorageError::io(&torn.file, e))?;
                report.repaired = true;
            }
        }
        if report.problems.is_empty() {
            self.check_contents(dir, &mut report, contents);
        }
        Ok(report)
    }

    /// Opens the database through an in-memory overlay and reads it all (a full scan), then runs the
    /// caller's `contents` check on it.
    fn check_contents(&self, dir: &Path, report: &mut CheckReport, contents: impl FnOnce(&Db, &mut CheckReport)) {
        let overlay = Arc::new(OverlayStorage::new(self.storage.clone()));
        let db = match Options::default().storage(overlay).create_if_missing(false).open(dir) {
            Ok(db) => db,
            Err(OpenError::Storage(e)) => return report.problems.push(Finding::from_storage(&e, "open")),
            Err(e) => return report.problem(Some(dir), None, format!("open: {e}")),
        };
        let scanned = db.iter().and_then(|mut it| it.try_fold(0u64, |n, kv| kv.map(|_| n + 1)));
        match scanned {
            Ok(n) => report.live_keys = n,
            Err(e) => return report.problems.push(Finding::from_storage(&e, "full scan")),
        }
        contents(&db, report);
    }
}

/// The state the live manifest describes.
struct ManifestState {
    version: Version,
    log_number: u64,
    number: u64,
}

fn check_manifest(ctx: &TableContext, report: &mut CheckReport) -> Option<ManifestState> {
    let current = ctx.dir.join(names::CURRENT);
    let bytes = match ctx.storage.read(&current) {
        Ok(b) => b,
        Err(e) => {
            report.problem(Some(&current), None, format!("cannot read: {e}"));
            return None;
        }
    };
    let name = std::str::from_utf8(&bytes).ok().and_then(|s| s.strip_suffix('\n'));
    let Some((name, number)) = name.and_then(|n| match names::parse(n) {
        Some(FileKind::Manifest(number)) => Some((n, number)),
        _ => None,
    }) else {
        report.problem(Some(&current), Some(0), "CURRENT does not name a manifest");
        return None;
    };
    let path = ctx.dir.join(name);
    report.manifest = Some(path.clone());
    let bytes = match ctx.storage.read(&path) {
        Ok(b) => b,
        Err(e) => {
            report.problem(Some(&current), Some(0), format!("CURRENT names {name}, which cannot be read: {e}"));
            return None;
        }
    };
    if let Some(found) = read_u32_at(&bytes, 8).filter(|v| *v > MANIFEST_FORMAT_VERSION) {
        report.problem(Some(&path), Some(8), format!("format version {found}; this build reads up to 1"));
        return None;
    }
    let log = match read_log(&bytes, &path, MANIFEST_MAGIC, MANIFEST_FORMAT_VERSION, &|_, _| Some(u64::MAX)) {
        Ok(log) => log,
        Err(e) => {
            report.problems.push(Finding::from_storage(&e, "manifest"));
            return None;
        }
    };
    if let Some(reason) = &log.torn_tail {
        report.warning(
            Some(&path),
            format!(
                "ends in a torn append of {} bytes ({reason}): an edit that never completed, ignored at open",
                bytes.len() as u64 - log.valid_len
            ),
        );
    }
    if log.records.is_empty() {
        report.problem(Some(&path), Some(0), "manifest holds no complete edit");
        return None;
    }
    let (mut version, mut log_number) = (Version::default(), 0);
    for (offset, payload) in log.records {
        let edit = match VersionEdit::decode(payload) {
            Ok(edit) => edit,
            Err(e) => {
                report.problem(Some(&path), Some(offset + 8 + e.offset as u64), format!("manifest edit: {}", e.reason));
                return None;
            }
        };
        log_number = edit.log_number.unwrap_or(log_number);
        version = version.apply(&edit.removed, &edit.added, ctx).0;
        report.manifest_edits += 1;
    }
    Some(ManifestState { version, log_number, number })
}

fn check_tables(ctx: &TableContext, version: &Version, listing: &[String], report: &mut CheckReport) {
    let present: HashSet<&str> = listing.iter().map(String::as_str).collect();
    for (level, t) in version.tables() {
        report.tables += 1;
        let path = names::table(&ctx.dir, t.meta.number);
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !present.contains(file_name) {
            report.problem(Some(&path), None, format!("table at level {level} named by the manifest is missing"));
            continue;
        }
        match ctx.storage.map(&path) {
            Ok(m) if m.bytes().len() as u64 != t.meta.size => {
                report.problem(
                    Some(&path),
                    None,
                    format!("{} bytes on disk, the manifest records {}", m.bytes().len(), t.meta.size),
                );
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                report.problem(Some(&path), None, format!("cannot read: {e}"));
                continue;
            }
        }
        if let Err(e) = check_table(t, report) {
            report.problems.push(Finding::from_storage(&e, "table"));
        }
    }
    for level in 1..NUM_LEVELS {
        let tables = version.levels.get(level).map(Vec::as_slice).unwrap_or_default();
        for pair in tables.windows(2) {
            if let [a, b] = pair {
                if a.largest_user() >= b.smallest_user() {
                    report.problem(
                        None,
                        None,
                        format!("level {level}: key ranges of tables {} and {} overlap", a.meta.number, b.meta.number),
                    );
                }
            }
        }
    }
}

/// Reads every block of one table (checksums, key order within and across blocks: `verify`), then compares
/// its first and last keys, entry count and sequence range with the manifest's metadata.
fn check_table(t: &crate::version::TableHandle, report: &mut CheckReport) -> Result<(), StorageError> {
    let reader = t.reader()?;
    let full = names::table(&report.dir, t.meta.number);
    let entries = reader.verify()?;
    report.table_entries += entries;
    let blocks = reader.block_count();
    report.table_blocks += blocks as u64;
    let mut disagree = |what: String| report.problem(Some(&full), None, format!("disagrees with the manifest: {what}"));
    if entries != t.meta.entries {
        disagree(format!("{entries} entries, the manifest records {}", t.meta.entries));
    }
    let (mut first, mut last, mut seqs) = (None, None, (u64::MAX, 0u64));
    for i in 0..blocks {
        let block = reader.read_block(i, false)?;
        for j in 0..block.len() {
            let k = block.key(j);
            let seq = key::trailer_seq(key::split(k).1);
            seqs = (seqs.0.min(seq), seqs.1.max(seq));
            if first.is_none() {
                first = Some(k.to_vec());
            }
            if i + 1 == blocks && j + 1 == block.len() {
                last = Some(k.to_vec());
            }
        }
    }
    let show = |k: &Option<Vec<u8>>| k.as_deref().map(|k| String::from_utf8_lossy(key::user_key(k)).into_owned());
    if first.as_deref() != Some(t.meta.smallest.as_slice()) {
        disagree(format!(
            "first key {:?}, the manifest records {:?}",
            show(&first),
            show(&Some(t.meta.smallest.clone()))
        ));
    }
    if last.as_deref() != Some(t.meta.largest.as_slice()) {
        disagree(format!("last key {:?}, the manifest records {:?}", show(&last), show(&Some(t.meta.largest.clone()))));
    }
    if entries > 0 && (seqs.0 < t.meta.min_seq || seqs.1 > t.meta.max_seq) {
        disagree(format!(
            "sequences {}..={}, the manifest records {}..={}",
            seqs.0, seqs.1, t.meta.min_seq, t.meta.max_seq
        ));
    }
    Ok(())
}

/// Files an open would delete: warnings, not problems.
fn check_orphans(dir: &Path, state: &ManifestState, listing: &[String], report: &mut CheckReport) {
    let live: BTreeSet<u64> = state.version.tables().map(|(_, t)| t.meta.number).collect();
    let mut names: Vec<&String> = listing.iter().collect();
    names.sort();
    for name in names {
        let why = match names::parse(name) {
            Some(FileKind::Table(n)) if !live.contains(&n) => "table not named by the manifest",
            Some(FileKind::Wal(n)) if n < state.log_number => "WAL older than the manifest's log number",
            Some(FileKind::Manifest(n)) if n != state.number => "manifest not named by CURRENT",
            Some(FileKind::Temp) => "temporary file",
            _ => continue,
        };
        report.warning(Some(&dir.join(name)), format!("orphan ({why}); the next open removes it"));
    }
}

/// Reads every WAL an open would replay, with the same rules, and decodes every batch.
fn check_wals(storage: &dyn Storage, dir: &Path, listing: &[String], log_number: u64, report: &mut CheckReport) {
    let wals = crate::wal::live_wals(listing, log_number);
    let mut last_seq = 0u64;
    for (i, number) in wals.iter().enumerate() {
        report.wal_files += 1;
        let path = names::wal(dir, *number);
        let bytes = match storage.read(&path) {
            Ok(b) => b,
            Err(e) => {
                report.problem(Some(&path), None, format!("cannot read: {e}"));
                continue;
            }
        };
        if let Some(found) = read_u32_at(&bytes, 8).filter(|v| *v > WAL_FORMAT_VERSION) {
            report.problem(Some(&path), Some(8), format!("format version {found}; this build reads up to 1"));
            continue;
        }
        let log = match read_wal(&bytes, &path) {
            Ok(log) => log,
            Err(e) => {
                report.problems.push(Finding::from_storage(&e, "WAL"));
                continue;
            }
        };
        if let Some(reason) = &log.torn_tail {
            if crate::wal::replay::only_headers_after(storage, dir, &wals[i + 1..]) {
                report.torn_wal = Some(torn(&path, &bytes, log.valid_len, reason));
            } else {
                report.problem(Some(&path), Some(log.valid_len), format!("damaged WAL before the newest: {reason}"));
            }
        }
        for (offset, payload) in log.records {
            let bad = |at: usize, reason: &str| {
                Finding::new(Some(&path), Some(offset + 8 + at as u64), format!("WAL batch: {reason}"))
            };
            let decoded = match batch::decode(payload) {
                Ok(d) => d,
                Err(e) => {
                    report.problems.push(bad(e.offset, e.reason));
                    break;
                }
            };
            if let Some(synced) = marker_synced_through(payload) {
                if synced > offset {
                    report.problems.push(bad(0, "sync marker claims bytes after itself"));
                    break;
                }
                report.wal_markers += 1;
                continue;
            }
            if decoded.count == 0 {
                report.problems.push(bad(0, "empty batch"));
                break;
            }
            if decoded.first_seq <= last_seq {
                report.problems.push(bad(0, "sequence numbers do not ascend"));
                break;
            }
            let mut entries = decoded.entries;
            let mut n = 0u64;
            let mut failed = None;
            for entry in entries.by_ref() {
                match entry {
                    Ok(_) => n += 1,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed.or_else(|| entries.finish().err()) {
                report.problems.push(bad(e.offset, e.reason));
                break;
            }
            last_seq = decoded.first_seq + u64::from(decoded.count) - 1;
            report.wal_batches += 1;
            report.wal_entries += n;
        }
    }
}

/// Describes the tail an open (or a repair) would cut off at `valid_len`.
fn torn(path: &Path, bytes: &[u8], valid_len: u64, reason: &str) -> TornWal {
    let after = intact_records_from(bytes, valid_len as usize + 1);
    let mut t = TornWal {
        file: path.to_path_buf(),
        file_len: bytes.len() as u64,
        valid_len,
        dropped_bytes: (written_len(bytes) as u64).saturating_sub(valid_len),
        dropped_records: after.len() as u64,
        dropped_batches: 0,
        dropped_entries: 0,
        reason: reason.to_owned(),
    };
    for (_, payload) in after {
        if let Ok(d) = batch::decode(payload) {
            if d.count > 0 {
                t.dropped_batches += 1;
                t.dropped_entries += u64::from(d.count);
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemStorage;
    use crate::{Compression, Db};

    fn dir() -> &'static Path {
        Path::new("/db")
    }

    fn open(fs: &MemStorage) -> Db {
        Options::default().storage(Arc::new(fs.clone())).compression(Compression::None).open(dir()).unwrap()
    }

    fn check(fs: &MemStorage) -> CheckReport {
        Check::new().storage(Arc::new(fs.clone())).run(dir()).unwrap()
    }

    /// A database with a table of 50 keys and a WAL of 20 more commits.
    fn store() -> MemStorage {
        let fs = MemStorage::new();
        let db = open(&fs);
        for i in 0..50 {
            db.put(format!("key/{i:03}"), format!("value {i}")).unwrap();
        }
        db.flush().unwrap();
        for i in 0..20 {
            db.put(format!("job/{i:03}"), format!("job {i}")).unwrap();
        }
        db.close().unwrap();
        fs
    }

    fn file(fs: &MemStorage, ext: &str) -> (PathBuf, usize) {
        fs.files().into_iter().find(|(p, _)| p.extension().is_some_and(|e| e == ext)).unwrap()
    }

    #[test]
    fn a_healthy_store_passes_and_is_left_unchanged() {
        let fs = store();
        let before: Vec<(PathBuf, Vec<u8>)> =
            fs.files().into_iter().map(|(p, _)| (p.clone(), fs.read(&p).unwrap())).collect();
        let r = check(&fs);
        assert!(r.is_healthy(), "{:?}", r.problems);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!((r.tables, r.table_entries), (1, 50));
        assert!(r.wal_batches >= 20 && r.wal_markers >= 1, "{r:?}");
        assert_eq!(r.live_keys, 70);
        let after: Vec<(PathBuf, Vec<u8>)> =
            fs.files().into_iter().map(|(p, _)| (p.clone(), fs.read(&p).unwrap())).collect();
        assert_eq!(before, after, "check changed the directory");
    }

    #[test]
    fn a_flipped_table_byte_is_a_problem_naming_file_and_offset() {
        let fs = store();
        let (table, len) = file(&fs, "sst");
        fs.mutate_byte(&table, len / 3, |b| b ^ 0x08).unwrap();
        let r = check(&fs);
        assert!(!r.is_healthy());
        let p = &r.problems[0];
        assert_eq!(p.file.as_deref(), Some(table.as_path()), "{p}");
        assert!(p.offset.is_some_and(|o| o <= len as u64 / 3), "{p}");
        assert!(p.message.contains("corruption"), "{p}");
    }

    #[test]
    fn a_torn_wal_tail_is_reported_and_repaired() {
        let fs = store();
        let (wal, len) = file(&fs, "wal");
        // A crash mid-append: a record header promising more bytes than follow.
        let mut f = fs.reopen(&wal, len as u64).unwrap();
        f.append(&[0x11, 0x22, 0x33, 0x44, 200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let r = check(&fs);
        let t = r.torn_wal.clone().unwrap();
        assert!(!r.is_healthy() && r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!((t.file, t.valid_len, t.dropped_bytes, t.dropped_batches), (wal.clone(), len as u64, 11, 0));
        assert_eq!(fs.read(&wal).unwrap().len(), len + 11, "no repair without asking");
        let r = Check::new().storage(Arc::new(fs.clone())).repair(true).run(dir()).unwrap();
        assert!(r.repaired && r.is_healthy(), "{r:?}");
        assert_eq!(fs.read(&wal).unwrap().len(), len);
        assert!(check(&fs).torn_wal.is_none());
        let db = open(&fs);
        assert_eq!(db.get("key/049").unwrap(), Some(b"value 49".to_vec()));
    }

    /// While a database is open (or after a crash) its WAL has zeroed space reserved after the records: no
    /// torn tail; a torn append into it counts its own bytes, not the zeros after them.
    #[test]
    fn a_torn_tail_in_reserved_space_counts_only_written_bytes() {
        let fs = MemStorage::new();
        let db = open(&fs);
        db.put("k", "v").unwrap();
        let image = fs.crash_image();
        drop(db);
        let (wal, reserved) = file(&image, "wal");
        assert_eq!(reserved as u64, crate::wal::format::WAL_RESERVE_BYTES);
        let r = check(&image);
        assert!(r.is_healthy() && r.torn_wal.is_none(), "{r:?}");
        let bytes = image.read(&wal).unwrap();
        let len =
            read_log(&bytes, &wal, crate::wal::format::WAL_MAGIC, WAL_FORMAT_VERSION, &|_, _| None).unwrap().valid_len;
        image.reopen(&wal, len).unwrap().append(&[0x11, 0x22, 0x33, 0x44, 200, 0, 0, 0, 1, 2, 3]).unwrap();
        let t = check(&image).torn_wal.unwrap();
        assert_eq!((t.valid_len, t.dropped_bytes, t.file_len), (len, 11, reserved as u64));
    }

    #[test]
    fn intact_records_after_damage_are_counted_as_dropped() {
        let fs = MemStorage::new();
        open(&fs).close().unwrap();
        let (wal, _) = file(&fs, "wal");
        // What a crashed writer with durability None leaves: five batches, no sync marker vouching for any.
        let mut bytes = crate::wal::format::WAL_MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        for i in 0..5u64 {
            let mut b = crate::WriteBatch::new();
            b.put(format!("k{i}"), "v").delete("gone");
            crate::log::encode_record(&mut bytes, b.stamp(1 + 2 * i));
        }
        bytes[16 + 9] ^= 1;
        fs.create(&wal).unwrap().append(&bytes).unwrap();
        let t = check(&fs).torn_wal.unwrap();
        assert_eq!((t.valid_len, t.dropped_records, t.dropped_batches, t.dropped_entries), (16, 4, 4, 8), "{t:?}");
    }

    #[test]
    fn orphans_are_warnings_and_a_missing_table_is_a_problem() {
        let fs = store();
        let (table, _) = file(&fs, "sst");
        let orphan = dir().join("000999.sst");
        fs.create(&orphan).unwrap().append(b"x").unwrap();
        let r = check(&fs);
        assert!(r.is_healthy(), "{:?}", r.problems);
        assert_eq!(r.warnings.len(), 1);
        assert_eq!(r.warnings[0].file.as_deref(), Some(orphan.as_path()));
        fs.remove(&table).unwrap();
        let r = check(&fs);
        assert!(r.problems.iter().any(|p| p.file.as_deref() == Some(table.as_path())), "{:?}", r.problems);
    }

    #[test]
    fn a_missing_or_locked_directory_is_an_error() {
        let fs = MemStorage::new();
        assert!(matches!(Check::new().storage(Arc::new(fs.clone())).run(dir()), Err(OpenError::NotFound { .. })));
        let db = open(&fs);
        assert!(matches!(Check::new().storage(Arc::new(fs.clone())).run(dir()), Err(OpenError::Locked { .. })));
        db.close().unwrap();
    }
}
