//! The corruption sweep: a small store (a WAL with a few dozen records, batches and deletes among them; an
//! uncompressed and a zstd-compressed table; the manifest and `CURRENT`) is damaged one bit at a time (one
//! byte at a time in files over 16 KiB), each time on a fresh copy, then reopened and read in full: a get of
//! every key ever written, a full scan forwards and backwards, and `Db::verify`.
//!
//! Every flip must end either as a [`StorageError::Corruption`] naming the damaged file and an offset in it,
//! or be shown harmless: every value read equals the model, no deleted key comes back. Never a panic (on
//! any thread: a panic hook counts them), never a wrong or missing value. Every fifth damaged copy also goes
//! to `cairn_engine::Check`, which must report what the engine detected (naming the file) and nothing else.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cairn_engine::{Check, Compression, Db, MemStorage, OpenError, Storage, StorageError, WriteBatch};

type Model = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Files larger than this are swept one byte at a time (bit `offset % 8` of each), smaller ones bit by bit.
const EVERY_BIT_UP_TO: usize = 16 * 1024;

/// `cairn check` (`cairn_engine::Check`) is run on every this-many-th damaged copy too.
const CHECK_EVERY: usize = 5;

static PANICS: AtomicU64 = AtomicU64::new(0);
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn dir() -> &'static Path {
    Path::new("/db")
}

fn open(fs: &MemStorage, compression: Compression) -> Result<Db, OpenError> {
    Db::builder()
        .storage(Arc::new(fs.clone()))
        .compression(compression)
        .block_size(256)
        .memtable_size(1 << 20)
        .open(dir())
}

fn key(i: u32) -> Vec<u8> {
    format!("job/{i:05}").into_bytes()
}

/// Compressible: zstd blocks come out smaller than the raw ones.
fn value(i: u32, round: u32) -> Vec<u8> {
    format!("{{\"id\":{i},\"round\":{round},\"status\":\"PENDING\"}}").into_bytes()
}

fn put(db: &Db, model: &mut Model, i: u32, round: u32) {
    db.put(key(i), value(i, round)).unwrap();
    model.insert(key(i), Some(value(i, round)));
}

/// Builds the store; returns the file system and what every key must read as.
fn build() -> (MemStorage, Model) {
    let fs = MemStorage::new();
    let mut model = Model::new();
    // Table 1, uncompressed blocks.
    let db = open(&fs, Compression::None).unwrap();
    for i in 0..40 {
        put(&db, &mut model, i, 1);
    }
    db.flush().unwrap();
    db.close().unwrap();
    // Table 2, zstd blocks: overwrites and tombstones shadowing table 1.
    let db = open(&fs, Compression::Zstd { level: 3 }).unwrap();
    for i in (0..40).step_by(3) {
        put(&db, &mut model, i, 2);
    }
    for i in (1..40).step_by(5) {
        db.delete(key(i)).unwrap();
        model.insert(key(i), None);
    }
    for i in 40..60 {
        put(&db, &mut model, i, 2);
    }
    db.flush().unwrap();
    // The WAL: single puts, deletes of keys in tables, and batches.
    for i in 60..80 {
        put(&db, &mut model, i, 3);
    }
    for i in (2..60).step_by(7) {
        db.delete(key(i)).unwrap();
        model.insert(key(i), None);
    }
    for b in 0..6u32 {
        let mut batch = WriteBatch::new();
        for i in (80 + b * 4)..(84 + b * 4) {
            batch.put(key(i), value(i, 4));
            model.insert(key(i), Some(value(i, 4)));
        }
        batch.delete(key(b * 11));
        model.insert(key(b * 11), None);
        db.write(batch).unwrap();
    }
    let stats = db.stats();
    assert_eq!(stats.table_count(), 2, "two tables");
    db.close().unwrap();
    (fs, model)
}

/// How one flip ended.
enum Outcome {
    /// Reported as corruption of the flipped file, at this offset.
    Detected(u64),
    /// Everything read equals the model.
    Harmless,
}

/// Fails unless `e` is corruption in `file`.
fn expect_corruption(e: &StorageError, file: &Path, len: usize) -> Result<u64, String> {
    match e {
        StorageError::Corruption { file: f, offset, .. } if f == file && *offset <= len as u64 => Ok(*offset),
        other => Err(format!("not a corruption error naming {} and an offset in it: {other}", file.display())),
    }
}

/// Reopens the damaged copy and reads everything.
fn examine(fs: &MemStorage, file: &Path, len: usize, model: &Model) -> Result<Outcome, String> {
    let db = match open(fs, Compression::None) {
        Ok(db) => db,
        Err(OpenError::Storage(e)) => return expect_corruption(&e, file, len).map(Outcome::Detected),
        // The version field of a log header is not under a checksum: a flip there reads as a newer format
        // and is refused as such, naming the file (the version is at offset 8).
        Err(OpenError::UnsupportedVersion { file: f, .. }) if f == file => return Ok(Outcome::Detected(8)),
        Err(e) => return Err(format!("open failed without naming corruption: {e}")),
    };
    let detected = |e: StorageError| expect_corruption(&e, file, len).map(Outcome::Detected);
    for (k, want) in model {
        match db.get(k) {
            Ok(got) if got == *want => {}
            Ok(got) => {
                return Err(format!(
                    "{}: read {:?}, model says {:?}",
                    String::from_utf8_lossy(k),
                    got.map(|v| String::from_utf8_lossy(&v).into_owned()),
                    want.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())
                ));
            }
            Err(e) => return detected(e),
        }
    }
    let live: Vec<(Vec<u8>, Vec<u8>)> =
        model.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone()))).collect();
    for reverse in [false, true] {
        let iter = if reverse { db.range_rev::<&[u8], _>(..) } else { db.iter() };
        let scanned: Result<Vec<_>, _> = match iter {
            Ok(it) => it.collect(),
            Err(e) => return detected(e),
        };
        match scanned {
            Ok(mut pairs) => {
                if reverse {
                    pairs.reverse();
                }
                if pairs != live {
                    return Err(format!("scan (reverse {reverse}) differs from the model"));
                }
            }
            Err(e) => return detected(e),
        }
    }
    if let Err(e) = db.verify() {
        return detected(e);
    }
    drop(db);
    Ok(Outcome::Harmless)
}

#[derive(Debug, Default)]
struct Counts {
    flips: u64,
    detected: u64,
    /// Of the detected: reported at an offset at or before the flipped byte (the start of the record, block
    /// or field holding it).
    located: u64,
    harmless: u64,
    /// Damaged copies also given to `Check`.
    checked: u64,
}

/// Flips every bit (or every byte) of one file, one at a time, each on a fresh copy of `base`.
fn sweep_file(base: &MemStorage, file: &Path, len: usize, model: &Model, failures: &mut Vec<String>) -> Counts {
    let mut counts = Counts::default();
    let positions: Vec<(usize, u8)> = if len <= EVERY_BIT_UP_TO {
        (0..len * 8).map(|bit| (bit / 8, 1u8 << (bit % 8))).collect()
    } else {
        (0..len).map(|byte| (byte, 1u8 << (byte % 8))).collect()
    };
    for (n, (offset, mask)) in positions.into_iter().enumerate() {
        let copy = base.crash_image();
        copy.mutate_byte(file, offset, |b| b ^ mask).unwrap();
        // Opening writes to the copy (a new manifest, a cut torn tail): keep the damaged state for `Check`.
        let for_check = (n % CHECK_EVERY == 0).then(|| copy.crash_image());
        let panics = PANICS.load(Ordering::SeqCst);
        let result = catch_unwind(AssertUnwindSafe(|| examine(&copy, file, len, model)));
        counts.flips += 1;
        let where_ = format!("{} byte {offset} mask {mask:#04x}", file.display());
        if let (Some(damaged), Ok(Ok(outcome))) = (for_check, &result) {
            counts.checked += 1;
            if let Err(why) = check_agrees(&damaged, file, outcome) {
                failures.push(format!("{where_}: cairn check: {why}"));
            }
        }
        match result {
            _ if PANICS.load(Ordering::SeqCst) != panics => {
                failures.push(format!("{where_}: panic: {}", LAST_PANIC.lock().unwrap()));
            }
            Err(_) => failures.push(format!("{where_}: panic")),
            Ok(Err(why)) => failures.push(format!("{where_}: {why}")),
            Ok(Ok(Outcome::Detected(at))) => {
                counts.detected += 1;
                counts.located += u64::from(at <= offset as u64);
            }
            Ok(Ok(Outcome::Harmless)) => counts.harmless += 1,
        }
    }
    counts
}

/// `Check` must report every flip the engine detects, naming the file, and find no problem in a harmless
/// one (a harmless flip in the WAL's final marker does read as a torn tail, which is no problem).
fn check_agrees(damaged: &MemStorage, file: &Path, outcome: &Outcome) -> Result<(), String> {
    let report = Check::new().storage(Arc::new(damaged.clone())).run(dir()).map_err(|e| e.to_string())?;
    match outcome {
        Outcome::Detected(_) if report.problems.iter().any(|p| p.file.as_deref() == Some(file)) => Ok(()),
        Outcome::Detected(_) => Err(format!("the engine detected it, check reports {:?}", report.problems)),
        Outcome::Harmless if report.problems.is_empty() => Ok(()),
        Outcome::Harmless => Err(format!("harmless, but check reports {:?}", report.problems)),
    }
}

fn kind(file: &Path) -> &'static str {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.ends_with(".wal") {
        "wal"
    } else if name.ends_with(".sst") {
        "table"
    } else if name.starts_with("MANIFEST") {
        "manifest"
    } else {
        "current"
    }
}

#[test]
fn every_flipped_bit_is_detected_or_harmless() {
    std::panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        *LAST_PANIC.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = info.to_string();
    }));
    let (base, model) = build();
    // The undamaged store reads back as the model.
    let files: Vec<(PathBuf, usize)> =
        base.files().into_iter().filter(|(p, len)| *len > 0 && kind(p) != "current").collect();
    let current = dir().join("CURRENT");
    assert!(matches!(examine(&base.crash_image(), &current, 0, &model), Ok(Outcome::Harmless)));
    let mut sweep: Vec<(PathBuf, usize)> = files;
    sweep.push((current.clone(), base.read(&current).unwrap().len()));
    let kinds: Vec<&str> = sweep.iter().map(|(p, _)| kind(p)).collect();
    for k in ["wal", "table", "manifest", "current"] {
        assert!(kinds.contains(&k), "the store has a {k} file: {sweep:?}");
    }

    let mut failures = Vec::new();
    let mut totals: BTreeMap<&str, Counts> = BTreeMap::new();
    for (file, len) in &sweep {
        let c = sweep_file(&base, file, *len, &model, &mut failures);
        println!(
            "{}: {len} bytes, {} flips: {} detected ({} at or before the flipped byte), {} harmless",
            file.display(),
            c.flips,
            c.detected,
            c.located,
            c.harmless
        );
        let t = totals.entry(kind(file)).or_default();
        t.flips += c.flips;
        t.detected += c.detected;
        t.located += c.located;
        t.checked += c.checked;
        t.harmless += c.harmless;
    }
    let _ = std::panic::take_hook();
    for (k, t) in &totals {
        println!(
            "{k}: {} flips, {} detected ({} located), {} harmless; {} also checked by cairn check",
            t.flips, t.detected, t.located, t.harmless, t.checked
        );
    }
    assert!(
        failures.is_empty(),
        "{} flips went wrong, first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
}

/// The file named `suffix`-ish in the store, and its bytes.
fn file_ending(fs: &MemStorage, pred: impl Fn(&str) -> bool) -> (PathBuf, Vec<u8>) {
    let (path, _) =
        fs.files().into_iter().find(|(p, _)| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred)).unwrap();
    let bytes = fs.read(&path).unwrap();
    (path, bytes)
}

/// Regression (found by the sweep): after a clean close nothing followed the WAL's last records, so a flip
/// in them was taken for a torn tail and acknowledged, synced commits vanished without an error. Close now
/// seals the WAL with a sync marker.
#[test]
fn a_flip_in_the_last_wal_record_after_a_clean_close_is_corruption() {
    let fs = MemStorage::new();
    let db = open(&fs, Compression::None).unwrap();
    db.put("job/1", "PENDING").unwrap();
    db.put("job/2", "RUNNING").unwrap();
    db.close().unwrap();
    let (wal, bytes) = file_ending(&fs, |n| n.ends_with(".wal"));
    // The record of job/2 is the last batch; the marker (20 bytes) follows it.
    let last_batch_byte = bytes.len() - 20 - 1;
    fs.mutate_byte(&wal, last_batch_byte, |b| b ^ 1).unwrap();
    match open(&fs, Compression::None) {
        Err(OpenError::Storage(StorageError::Corruption { file, .. })) => assert_eq!(file, wal),
        other => panic!("expected corruption of {}, got {other:?}", wal.display()),
    }
    // Reopening and closing again without writes adds no marker.
    fs.mutate_byte(&wal, last_batch_byte, |b| b ^ 1).unwrap();
    open(&fs, Compression::None).unwrap().close().unwrap();
    assert_eq!(fs.read(&wal).unwrap().len(), bytes.len());
}

/// Regression (found by the sweep): a flip in the manifest's last edit (here: the flush that retired the
/// WAL) was taken for a torn tail; the open then forgot the table and, with it, data whose WAL was gone.
/// Every edit is now followed by a synced seal record before anything acts on it.
#[test]
fn a_flip_in_the_last_manifest_edit_is_corruption() {
    let fs = MemStorage::new();
    let db = open(&fs, Compression::None).unwrap();
    db.put("job/1", "PENDING").unwrap();
    db.flush().unwrap();
    // Keep the manifest as the flush left it: a crash image taken before close (close writes nothing to it).
    let image = fs.crash_image();
    db.close().unwrap();
    let (manifest, bytes) = file_ending(&image, |n| n.starts_with("MANIFEST"));
    // The last 8 bytes are the seal (an empty record); the flush edit ends right before it.
    fs.mutate_byte(&manifest, bytes.len() - 8 - 1, |b| b ^ 1).unwrap();
    match open(&fs, Compression::None) {
        Err(OpenError::Storage(StorageError::Corruption { file, .. })) => assert_eq!(file, manifest),
        other => panic!("expected corruption of {}, got {other:?}", manifest.display()),
    }
}

/// Regression (found by the sweep): a flipped digit in `CURRENT` named a manifest that does not exist and
/// the open failed with an I/O error (not found) instead of corruption naming `CURRENT`.
#[test]
fn current_naming_a_missing_manifest_is_corruption() {
    let fs = MemStorage::new();
    open(&fs, Compression::None).unwrap().close().unwrap();
    let current = dir().join("CURRENT");
    let len = fs.read(&current).unwrap().len();
    fs.mutate_byte(&current, len - 2, |b| if b == b'9' { b'8' } else { b + 1 }).unwrap();
    match open(&fs, Compression::None) {
        Err(OpenError::Storage(StorageError::Corruption { file, offset: 0, .. })) => assert_eq!(file, current),
        other => panic!("expected corruption of CURRENT, got {other:?}"),
    }
}
