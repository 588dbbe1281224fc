//! Recovery on real files: reopen after drop, torn WAL tails, flipped bits in tables, damaged manifests,
//! ownership, and the refusal to write after a failed sync.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cairn_engine::{
    Db, Error, FileLock, MappedFile, MemStorage, OpenError, Storage, StorageError, WritableFile, WriteBatch, WriteError,
};

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-{}", "v".repeat((i % 100) as usize)).into_bytes()
}

#[test]
fn reopen_after_drop_without_close_keeps_every_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::builder().memtable_size(64 * 1024).open(dir.path()).unwrap();
        for i in 0..3000 {
            db.put(key(i), value(i)).unwrap();
        }
        for i in (0..3000).step_by(3) {
            db.delete(key(i)).unwrap();
        }
        // Dropped, not closed.
    }
    let db = Db::open(dir.path()).unwrap();
    for i in 0..3000 {
        let want = if i % 3 == 0 { None } else { Some(value(i)) };
        assert_eq!(db.get(key(i)).unwrap(), want, "key {i}");
    }
    assert!(db.stats().table_count() > 0, "the memtable limit forced flushes");
}

#[test]
fn torn_wal_tail_drops_only_the_torn_record() {
    for cut in [1u64, 5, 9, 30] {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        for i in 0..100 {
            db.put(key(i), value(i)).unwrap();
        }
        db.close().unwrap();
        let wal = files(dir.path(), "wal").into_iter().rev().find(|p| fs::metadata(p).unwrap().len() > 16).unwrap();
        // Close sealed the WAL with a 20-byte sync marker vouching for every record; the process that crashed
        // mid-append would have left none. Cut the marker and `cut` bytes of the last record.
        let len = fs::metadata(&wal).unwrap().len() - 20;
        let f = fs::OpenOptions::new().write(true).open(&wal).unwrap();
        f.set_len(len - cut).unwrap();
        drop(f);
        let db = Db::open(dir.path()).unwrap();
        for i in 0..99 {
            assert_eq!(db.get(key(i)).unwrap(), Some(value(i)), "cut {cut} key {i}");
        }
        assert_eq!(db.get(key(99)).unwrap(), None, "the torn record is dropped");
        assert!(db.stats().recovered_torn_bytes > 0);
        assert!(fs::metadata(&wal).unwrap().len() <= len - cut, "the torn tail was cut off before appending");
        // Writing and reopening again works.
        db.put(key(99), value(99)).unwrap();
        db.close().unwrap();
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.get(key(99)).unwrap(), Some(value(99)));
        assert_eq!(db.stats().recovered_torn_bytes, 0);
    }
}

#[test]
fn damage_in_the_middle_of_the_wal_is_corruption_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    for i in 0..50 {
        db.put(key(i), value(i)).unwrap();
    }
    db.close().unwrap();
    let wal = files(dir.path(), "wal").into_iter().rev().find(|p| fs::metadata(p).unwrap().len() > 16).unwrap();
    let mut bytes = fs::read(&wal).unwrap();
    bytes[40] ^= 0x01;
    fs::write(&wal, &bytes).unwrap();
    match Db::open(dir.path()) {
        Err(OpenError::Storage(StorageError::Corruption { file, offset, .. })) => {
            assert_eq!(file, wal);
            assert_eq!(offset, 16, "the first record starts right after the 16-byte header");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn flipped_bits_in_a_table_are_corruption_never_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder().block_cache_size(0).open(dir.path()).unwrap();
    for i in 0..2000 {
        db.put(key(i), value(i)).unwrap();
    }
    db.compact().unwrap();
    db.close().unwrap();
    let table = files(dir.path(), "sst").pop().unwrap();
    let original = fs::read(&table).unwrap();
    let step = original.len() / 37;
    for offset in (0..original.len()).step_by(step.max(1)) {
        let mut bytes = original.clone();
        bytes[offset] ^= 0x04;
        fs::write(&table, &bytes).unwrap();
        let db = Db::builder().block_cache_size(0).open(dir.path()).unwrap();
        let mut errors = 0;
        for i in 0..2000 {
            match db.get(key(i)) {
                Ok(got) => assert_eq!(got, Some(value(i)), "offset {offset}: wrong answer for key {i}"),
                Err(StorageError::Corruption { file, .. }) => {
                    assert_eq!(file, table);
                    errors += 1;
                }
                Err(e) => panic!("offset {offset}: unexpected {e}"),
            }
        }
        assert!(errors > 0, "flipping offset {offset} went unnoticed");
        let scan: Result<Vec<_>, _> = db.iter().unwrap().collect();
        assert!(matches!(scan, Err(StorageError::Corruption { .. })), "offset {offset}: scan must fail");
        assert!(db.verify().unwrap_err().is_corruption());
        db.close().unwrap();
    }
    fs::write(&table, &original).unwrap();
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.verify().unwrap(), 2000);
}

#[test]
fn damaged_manifest_or_current_fails_open_with_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.put(b"k", b"v").unwrap();
    db.flush().unwrap();
    db.close().unwrap();
    let current = dir.path().join("CURRENT");
    let name = fs::read_to_string(&current).unwrap();
    let manifest = dir.path().join(name.trim_end());
    let mut bytes = fs::read(&manifest).unwrap();
    bytes[20] ^= 0x80;
    fs::write(&manifest, &bytes).unwrap();
    let err = Db::open(dir.path()).unwrap_err();
    assert!(Error::from(err).is_corruption());
    bytes[20] ^= 0x80;
    fs::write(&manifest, &bytes).unwrap();
    fs::write(&current, "garbage\n").unwrap();
    let err = Db::open(dir.path()).unwrap_err();
    assert!(Error::from(err).is_corruption());
    fs::write(&current, &name).unwrap();
    assert_eq!(Db::open(dir.path()).unwrap().get(b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn second_open_is_locked_until_close() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    assert!(matches!(Db::open(dir.path()), Err(OpenError::Locked { .. })));
    let clone = db.clone();
    db.close().unwrap();
    assert!(matches!(clone.get(b"x"), Err(StorageError::Closed)));
    assert!(matches!(clone.put(b"x", b"y"), Err(WriteError::Storage(StorageError::Closed))));
    drop(clone);
    Db::open(dir.path()).unwrap();
}

#[test]
fn opening_without_writing_leaves_no_wal_behind() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.put(b"k", b"v").unwrap();
    db.close().unwrap();
    for _ in 0..5 {
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.get(b"k").unwrap(), Some(b"v".to_vec()));
        db.close().unwrap();
    }
    assert_eq!(files(dir.path(), "wal").len(), 1, "every open appends to the same WAL");
    assert_eq!(files(dir.path(), "sst").len(), 0, "an open rewrites nothing");
    let db = Db::open(dir.path()).unwrap();
    db.flush().unwrap();
    assert_eq!(files(dir.path(), "wal").len(), 1, "the flush retired the old WAL");
    assert_eq!(files(dir.path(), "sst").len(), 1);
    assert_eq!(db.get(b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn open_options_missing_and_existing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    assert!(matches!(Db::builder().create_if_missing(false).open(&path), Err(OpenError::NotFound { .. })));
    Db::open(&path).unwrap().close().unwrap();
    assert!(matches!(Db::builder().error_if_exists(true).open(&path), Err(OpenError::AlreadyExists { .. })));
    assert!(matches!(Db::builder().memtable_size(1).open(&path), Err(OpenError::InvalidOptions(_))));
}

#[test]
fn values_of_64_mib_survive_flush_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..64 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let db = Db::open(dir.path()).unwrap();
    db.put(b"big", &big).unwrap();
    db.put(b"small", b"s").unwrap();
    assert_eq!(db.get(b"big").unwrap().as_deref(), Some(&big[..]));
    db.close().unwrap();
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.get(b"big").unwrap().as_deref(), Some(&big[..]), "replayed from the WAL");
    db.flush().unwrap();
    assert_eq!(db.get(b"big").unwrap().as_deref(), Some(&big[..]), "read from a table");
    db.close().unwrap();
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.get(b"big").unwrap().as_deref(), Some(&big[..]));
    assert_eq!(db.get(b"small").unwrap(), Some(b"s".to_vec()));
}

/// A storage whose syncs start failing on demand, and which records every truncation.
#[derive(Debug, Clone)]
struct FailingSync {
    inner: MemStorage,
    fail: Arc<AtomicBool>,
    truncated: Arc<Mutex<Vec<(PathBuf, u64)>>>,
}

impl FailingSync {
    fn new() -> Self {
        Self { inner: MemStorage::new(), fail: Arc::default(), truncated: Arc::default() }
    }
}

struct FailingFile {
    inner: Box<dyn WritableFile>,
    fail: Arc<AtomicBool>,
}

impl WritableFile for FailingFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.inner.append(data)
    }

    fn reserve(&mut self, len: u64) -> io::Result<()> {
        self.inner.reserve(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected EIO"));
        }
        self.inner.sync()
    }
}

impl Storage for FailingSync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(FailingFile { inner: self.inner.create(path)?, fail: self.fail.clone() }))
    }
    fn reopen(&self, path: &Path, at: u64) -> io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(FailingFile { inner: self.inner.reopen(path, at)?, fail: self.fail.clone() }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn map(&self, path: &Path) -> io::Result<Arc<dyn MappedFile>> {
        self.inner.map(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.truncated.lock().unwrap().push((path.to_path_buf(), len));
        self.inner.truncate(path, len)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn FileLock>> {
        self.inner.lock(path)
    }
}

#[test]
fn a_failed_sync_refuses_further_writes_until_reopen() {
    let fs = FailingSync::new();
    let db = Db::builder().storage(Arc::new(fs.clone())).open("/db").unwrap();
    for i in 0..10 {
        db.put(key(i), value(i)).unwrap();
    }
    fs.fail.store(true, Ordering::SeqCst);
    assert!(matches!(db.put(key(10), value(10)), Err(WriteError::Storage(StorageError::Io { .. }))));
    fs.fail.store(false, Ordering::SeqCst);
    assert!(matches!(db.put(key(11), value(11)), Err(WriteError::Poisoned { .. })), "refuses after a failed sync");
    assert!(db.flush().is_err());
    assert_eq!(db.get(key(9)).unwrap(), Some(value(9)), "reads still work");
    let image = fs.inner.crash_image();
    drop(db);
    let db = Db::builder().storage(Arc::new(image)).open("/db").unwrap();
    for i in 0..10 {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i)));
    }
    assert_eq!(db.get(key(11)).unwrap(), None);
    db.put(key(11), value(11)).unwrap();
}

/// Regression (found by the engine_model fuzz target, twice): a WAL being created when the power failed,
/// its header written but not synced while its name was already durable (another thread synced the
/// directory, or the header's sync failed), came back garbled or cut short and made the database refuse to
/// open ("format version 1711276033"; after a second power cut, which undid the file's removal, "damaged
/// WAL before the newest: file header cut short"). Such a file never held a commit and is dropped wherever
/// it sits; a damaged header followed by records is still corruption.
#[test]
fn a_wal_with_an_unsynced_damaged_header_is_dropped() {
    let open = |fs: &MemStorage| Db::builder().storage(Arc::new(fs.clone())).open(Path::new("/db"));
    let check = |db: &Db| {
        for i in 0..20 {
            assert_eq!(db.get(key(i)).unwrap(), Some(value(i)));
        }
    };
    for damaged in [&[0x01, 0xe4, 0x00, 0x66, 0x00, 0x00, 0x00, 0x00][..], &[0x01, 0x00][..], &[][..]] {
        let fs = MemStorage::new();
        let db = open(&fs).unwrap();
        for i in 0..20 {
            db.put(key(i), value(i)).unwrap();
        }
        drop(db);
        let mut header = b"CAIRNWAL".to_vec();
        header.extend_from_slice(damaged);
        let mut file = fs.create(Path::new("/db/000099.wal")).unwrap();
        file.append(&header).unwrap();
        file.sync().unwrap();
        fs.sync_dir(Path::new("/db")).unwrap();
        drop(file);

        let db = open(&fs).unwrap_or_else(|e| panic!("a never-synced WAL header must not stop the open: {e}"));
        check(&db);
        db.put(b"after", b"1").unwrap();
        // A power cut before the damaged file's removal reached the disk: it now sits before the new WAL.
        let image = fs.crash_image();
        drop(db);
        let db = open(&image).unwrap_or_else(|e| panic!("a damaged header before the newest WAL: {e}"));
        check(&db);
        assert_eq!(db.get(b"after").unwrap(), Some(b"1".to_vec()));
        drop(db);

        // The same damage in a WAL that holds records after its header is corruption.
        let wal = image.files().into_iter().map(|(p, _)| p).filter(|p| p.extension().is_some_and(|e| e == "wal")).max();
        image.mutate_byte(&wal.unwrap(), 9, |_| 0xe4).unwrap();
        assert!(open(&image).is_err(), "a damaged header before records must not be ignored");
    }
}

/// A WAL grows in zero-filled steps of 4 MiB reserved ahead of its appends (docs/format/wal.md, "Reserved
/// space"). After a power cut the zeros after the last record end the log (they are not a torn tail), the
/// reopened database appends over them, a memtable switch cuts them off the WAL it leaves, and a clean close
/// cuts them off the last one.
#[test]
fn wal_reserved_space_is_the_end_of_the_log_and_is_cut_at_close() {
    const RESERVE: usize = 4 << 20;
    let open = |fs: &MemStorage| Db::builder().storage(Arc::new(fs.clone())).open("/db").unwrap();
    let wals = |fs: &MemStorage| {
        let mut w: Vec<(PathBuf, usize)> =
            fs.files().into_iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "wal")).collect();
        w.sort();
        w
    };
    let fs = MemStorage::new();
    let db = open(&fs);
    for i in 0..200 {
        db.put(key(i), value(i)).unwrap();
    }
    let (wal, len) = wals(&fs).pop().unwrap();
    assert_eq!(len, RESERVE);

    let image = fs.crash_image();
    drop(db);
    let db = open(&image);
    for i in 0..200 {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    assert_eq!(db.stats().recovered_torn_bytes, 0, "reserved space is not a torn tail");
    assert_eq!(wals(&image), vec![(wal.clone(), RESERVE)], "the WAL is appended to, its reserved space kept");
    // Past the first 4 MiB, the next step is reserved.
    for b in 0..60 {
        let mut batch = WriteBatch::new();
        for i in 0..1000 {
            let n = 1000 + b * 1000 + i;
            batch.put(key(n), value(n));
        }
        db.write(batch).unwrap();
    }
    db.put(key(200), value(200)).unwrap();
    assert_eq!(wals(&image), vec![(wal.clone(), 2 * RESERVE)]);

    let image2 = image.crash_image();
    drop(db);
    let db = open(&image2);
    assert_eq!(db.get(key(200)).unwrap(), Some(value(200)), "written over the reserved zeros after the reopen");
    assert_eq!(db.get(key(60_999)).unwrap(), Some(value(60_999)));
    assert_eq!(db.stats().recovered_torn_bytes, 0);
    db.close().unwrap();
    let (_, closed) = wals(&image2).pop().unwrap();
    assert!(closed > RESERVE && closed % RESERVE != 0, "a clean close cuts the reserved space off: {closed}");
    let db = open(&image2);
    assert_eq!(db.get(key(0)).unwrap(), Some(value(0)));
    drop(db);

    // A memtable switch cuts the reserved space off the WAL it leaves (before anything goes to the next):
    // only the newest WAL ever has any.
    let fs = FailingSync::new();
    let db = Db::builder().storage(Arc::new(fs.clone())).memtable_size(64 * 1024).open("/db").unwrap();
    let mut left = Vec::new();
    for i in 0..3000 {
        db.put(key(i), value(i)).unwrap();
        let mut all = wals(&fs.inner);
        let (newest, len) = all.pop().unwrap();
        assert_eq!(len, RESERVE, "the newest WAL has its reserved space");
        for (path, len) in all {
            assert!(len < RESERVE, "{} was left with reserved space", path.display());
        }
        if left.last() != Some(&newest) {
            left.push(newest);
        }
    }
    left.pop();
    assert!(left.len() >= 3, "memtable switches: {left:?}");
    let truncated: Vec<PathBuf> = fs.truncated.lock().unwrap().iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(truncated, left, "each WAL left behind was cut, once");
}
