//! Blob store tests: round trips, range reads, damage on disk read back as corruption, removal rules,
//! the writer's memory bound and group sync. The crash, bit-flip and concurrency sweeps are in
//! `tests/tests/blob.rs`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::format::{BlobHeader, BLOB_HEADER_LEN, BLOB_TRAILER_LEN};
use super::{BlobOptions, BlobPin, BlobRef, BlobStore};
use crate::error::StorageError;
use crate::io::{FileLock, MappedFile, MemStorage, Storage, WritableFile};

fn dir() -> &'static Path {
    Path::new("/blobs")
}

fn open(fs: &MemStorage, options: BlobOptions) -> BlobStore {
    BlobStore::open(Arc::new(fs.clone()), dir(), options).unwrap()
}

/// `n` deterministic bytes that differ with `seed`.
fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `bytes` in pieces of `piece` bytes.
fn put(store: &BlobStore, bytes: &[u8], piece: usize) -> (BlobRef, BlobPin) {
    let mut w = store.writer().unwrap();
    for p in bytes.chunks(piece.max(1)) {
        w.write_all(p).unwrap();
    }
    assert_eq!(w.written(), bytes.len() as u64);
    w.finish().unwrap()
}

fn read_range(store: &BlobStore, blob: &BlobRef, start: u64, end: u64, buf_len: usize) -> Vec<u8> {
    let mut r = store.read(blob, start..end).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; buf_len];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

fn blob_path(blob: &BlobRef) -> PathBuf {
    dir().join(format!("{:06}.blob", blob.file))
}

fn corruption_at(e: &StorageError) -> (PathBuf, u64) {
    match e {
        StorageError::Corruption { file, offset, .. } => (file.clone(), *offset),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn blobs_of_every_size_read_back() {
    let fs = MemStorage::new();
    let cs = 256usize;
    let store = open(&fs, BlobOptions::default().chunk_size(cs as u32).sync(false));
    let limit = 16 * cs;
    for (i, n) in [0, 1, cs - 1, cs, cs + 1, 3 * cs + 7, limit - 1, limit, limit + 1, 5 << 20].into_iter().enumerate() {
        let bytes = data(n, i as u64);
        for piece in [1000, 7] {
            if n > 100_000 && piece == 7 {
                continue;
            }
            let (blob, pin) = put(&store, &bytes, piece);
            assert_eq!(blob.len, n as u64);
            assert_eq!(pin.file(), blob.file);
            assert_eq!(store.read_all(&blob).unwrap(), bytes, "size {n}");
            assert_eq!(read_range(&store, &blob, 0, n as u64, 100), bytes, "size {n}, 100-byte reads");
            let own_file = n > limit;
            let shares = store.files().iter().any(|f| f.number == blob.file && f.active);
            assert_eq!(shares, !own_file, "size {n}: small blobs go to the shared file, large to their own");
        }
    }
    let report = store.check();
    assert!(report.is_healthy() && report.incomplete.is_empty(), "{report:?}");
    assert_eq!(report.blobs, 19);
    let listed: usize = store.files().iter().map(|f| store.blobs_in(f.number).unwrap().len()).sum();
    assert_eq!(listed, 19);
    assert_eq!(store.disk_bytes(), store.files().iter().map(|f| f.len).sum::<u64>());
}

#[test]
fn range_reads_at_ends_and_across_chunks() {
    let fs = MemStorage::new();
    let cs = 100u64;
    for n in [1050u64, 5000] {
        let store = open(&fs, BlobOptions::default().chunk_size(cs as u32).sync(false));
        let bytes = data(n as usize, n);
        let (blob, _pin) = put(&store, &bytes, 333);
        let ranges = [
            (0, 0),
            (0, 1),
            (0, cs),
            (cs - 1, cs + 1),
            (cs, 2 * cs),
            (250, 777),
            (n - 1, n),
            (n - 51, n),
            (n, n),
            (0, n),
        ];
        for (a, b) in ranges {
            for buf in [1, 64, 4096] {
                let got = read_range(&store, &blob, a, b, buf);
                assert_eq!(got, &bytes[a as usize..b as usize], "{n}: {a}..{b} by {buf}");
            }
        }
        for (a, b) in [(0, n + 1), (n + 1, n + 1), (5, 4)] {
            let err = store.read(&blob, a..b).unwrap_err();
            assert!(matches!(err, StorageError::OutOfRange { .. }), "{a}..{b}: {err:?}");
        }
        drop(store);
    }
}

#[test]
fn a_range_read_verifies_only_the_chunks_it_touches() {
    let fs = MemStorage::new();
    let store = open(&fs, BlobOptions::default().chunk_size(100).sync(false));
    let bytes = data(1000, 3);
    let (blob, pin) = put(&store, &bytes, 1000);
    drop(pin);
    // Damage chunk 5 (blob bytes 500..600).
    let chunk5 = blob.offset + BLOB_HEADER_LEN as u64 + 5 * 104;
    fs.mutate_byte(&blob_path(&blob), chunk5 as usize + 10, |b| b ^ 0x40).unwrap();
    let store = reopen(&fs, store);
    assert_eq!(read_range(&store, &blob, 0, 500, 64), &bytes[..500]);
    assert_eq!(read_range(&store, &blob, 600, 1000, 64), &bytes[600..]);
    let mut r = store.read(&blob, 450..650).unwrap();
    let mut out = Vec::new();
    let err = r.read_to_end(&mut out).unwrap_err();
    assert_eq!(out, &bytes[450..500], "no byte of the damaged chunk was handed out");
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<StorageError>()).unwrap();
    assert_eq!(corruption_at(inner), (blob_path(&blob), chunk5));
    assert_eq!(corruption_at(&store.read_all(&blob).unwrap_err()), (blob_path(&blob), chunk5));
}

/// Drops `store` (releasing its lock) and opens the same directory again.
fn reopen(fs: &MemStorage, store: BlobStore) -> BlobStore {
    let options = store.options().clone();
    drop(store);
    open(fs, options)
}

#[test]
fn damage_on_disk_is_corruption_naming_file_and_offset() {
    let fs = MemStorage::new();
    let store = open(&fs, BlobOptions::default().chunk_size(64));
    let first = put(&store, &data(300, 1), 50).0;
    let blob = put(&store, &data(300, 2), 50).0;
    let path = blob_path(&blob);
    let store = reopen(&fs, store);
    let file_len = fs.read(&path).unwrap().len();

    // A garbled header.
    let broken = fs.crash_image();
    broken.mutate_byte(&path, blob.offset as usize + 9, |b| b ^ 1).unwrap();
    let s = open(&broken, BlobOptions::default());
    assert_eq!(corruption_at(&s.read_all(&blob).unwrap_err()), (path.clone(), blob.offset));
    assert_eq!(s.read_all(&first).unwrap(), data(300, 1));

    // A truncated file: the trailer (then chunks) missing.
    for cut in [file_len - 1, file_len - BLOB_TRAILER_LEN, blob.offset as usize + 40, blob.offset as usize + 3] {
        let short = fs.crash_image();
        short.truncate(&path, cut as u64).unwrap();
        let s = open(&short, BlobOptions::default());
        assert_eq!(corruption_at(&s.read_all(&blob).unwrap_err()), (path.clone(), blob.offset), "cut at {cut}");
        assert_eq!(s.read_all(&first).unwrap(), data(300, 1));
        assert_eq!(s.blobs_in(blob.file).unwrap(), vec![first], "the cut blob is incomplete, not listed");
        let report = s.check();
        assert!(report.is_healthy(), "nothing proves the cut blob was synced: {report:?}");
        assert_eq!(report.incomplete.len(), 1, "{report:?}");
    }

    // A reference whose length points past the end, or disagrees with the header.
    for len in [301, 1 << 40, u64::MAX] {
        let wrong = BlobRef { len, ..blob };
        assert_eq!(corruption_at(&store.read(&wrong, 0..0).unwrap_err()), (path.clone(), blob.offset));
    }
    let past_end = BlobRef { offset: file_len as u64 + 5, ..blob };
    assert_eq!(corruption_at(&store.read(&past_end, 0..0).unwrap_err()).1, past_end.offset);

    // A header with a valid checksum but a chunk size of zero.
    let zero = fs.crash_image();
    let bytes = zero.read(&path).unwrap();
    let header = BlobHeader::new(0, 300, 16).encode();
    for (i, b) in header.iter().enumerate() {
        let at = blob.offset as usize + i;
        let old = bytes[at];
        zero.mutate_byte(&path, at, |_| *b).unwrap();
        assert!(old == *b || zero.read(&path).unwrap()[at] == *b);
    }
    let s = open(&zero, BlobOptions::default());
    assert_eq!(corruption_at(&s.read_all(&blob).unwrap_err()), (path.clone(), blob.offset));
}

#[test]
fn remove_file_is_refused_while_active_or_pinned() {
    let fs = MemStorage::new();
    let store = open(&fs, BlobOptions::default().chunk_size(64).file_size(500).sync(false));
    let (a, pin_a) = put(&store, &data(600, 1), 100);
    let err = store.remove_file(a.file).unwrap_err();
    assert!(matches!(err, StorageError::FileInUse { .. }), "active and pinned: {err:?}");
    // The next small blob rolls the full shared file over.
    let (b, pin_b) = put(&store, &data(600, 2), 100);
    assert_ne!(a.file, b.file);
    assert!(!store.files().iter().find(|f| f.number == a.file).unwrap().active);
    assert!(matches!(store.remove_file(a.file), Err(StorageError::FileInUse { .. })), "still pinned");
    let extra = store.pin(a.file);
    drop(pin_a);
    assert!(matches!(store.remove_file(a.file), Err(StorageError::FileInUse { .. })), "pinned twice");
    let reader = store.read(&a, 0..600).unwrap();
    drop(extra);
    store.remove_file(a.file).unwrap();
    assert!(store.files().iter().all(|f| f.number != a.file));
    let mut kept = Vec::new();
    { reader }.read_to_end(&mut kept).unwrap();
    assert_eq!(kept, data(600, 1), "a reader opened before the removal keeps working");
    assert!(store.read_all(&a).is_err());
    assert!(store.remove_file(a.file).is_err(), "gone");
    assert!(matches!(store.remove_file(b.file), Err(StorageError::FileInUse { .. })), "b's file is active");
    drop(pin_b);

    // A streaming writer's own file is active until it finishes or is dropped.
    let mut w = store.writer().unwrap();
    w.write_all(&data(5000, 3)).unwrap();
    assert!(w.is_streaming());
    let own = store.files().iter().find(|f| f.active && f.number != b.file).unwrap().number;
    assert!(matches!(store.remove_file(own), Err(StorageError::FileInUse { .. })));
    drop(w);
    store.remove_file(own).unwrap();
}

#[test]
fn a_sealed_shared_file_takes_no_more_blobs_and_can_be_removed() {
    let fs = MemStorage::new();
    let store = open(&fs, BlobOptions::default().chunk_size(64).file_size(1 << 20).sync(false));
    let (a, pin_a) = put(&store, &data(300, 1), 100);
    assert_eq!(store.shared_file(), Some(a.file));
    assert!(!store.seal_shared(a.file + 100), "not the shared file");
    assert!(matches!(store.remove_file(a.file), Err(StorageError::FileInUse { .. })), "active");
    assert!(store.seal_shared(a.file));
    assert_eq!(store.shared_file(), None);
    assert!(!store.files().iter().find(|f| f.number == a.file).unwrap().active);
    let (b, pin_b) = put(&store, &data(300, 2), 100);
    assert_ne!(b.file, a.file, "the next small blob starts a new shared file");
    assert_eq!(store.read_all(&a).unwrap(), data(300, 1), "what the sealed file holds stays readable");
    assert!(matches!(store.remove_file(a.file), Err(StorageError::FileInUse { .. })), "pinned");
    drop(pin_a);
    store.remove_file(a.file).unwrap();
    assert_eq!(store.read_all(&b).unwrap(), data(300, 2));
    drop(pin_b);
}

#[test]
fn appends_racing_seals_and_removals_never_land_in_a_removed_file() {
    // Writers append small blobs and read each back while holding its pin; another thread keeps sealing
    // the shared file and removing every file it may. An append that chose a file just before it was
    // sealed must have pinned it in the same step, or the file could be removed under the append.
    let fs = MemStorage::new();
    let store = open(&fs, BlobOptions::default().chunk_size(64).file_size(1 << 20).sync(false));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (store, stop) = (&store, &stop);
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let bytes = data(40 + (i % 50) as usize, t * 1_000_000 + i);
                    let (blob, pin) = put(store, &bytes, 64);
                    assert_eq!(store.read_all(&blob).unwrap(), bytes, "blob {blob:?} of writer {t}");
                    drop(pin);
                    i += 1;
                }
            });
        }
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(500) {
            if let Some(shared) = store.shared_file() {
                store.seal_shared(shared);
            }
            for f in store.files().iter().filter(|f| !f.active) {
                let _ = store.remove_file(f.number);
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn reopening_lists_names_and_never_appends_to_old_files() {
    let fs = MemStorage::new();
    let store = open(&fs, BlobOptions::default().chunk_size(64).sync(false));
    let (a, _) = put(&store, &data(100, 1), 100);
    fs.create(&dir().join("notes.txt")).unwrap();
    fs.create(&dir().join("7.blob")).unwrap();
    assert!(matches!(
        BlobStore::open(Arc::new(fs.clone()), dir(), BlobOptions::default()),
        Err(crate::OpenError::Locked { .. })
    ));
    let store = reopen(&fs, store);
    assert_eq!(store.files().iter().map(|f| (f.number, f.active)).collect::<Vec<_>>(), vec![(a.file, false)]);
    let (b, _) = put(&store, &data(100, 2), 100);
    assert_eq!(b.file, a.file + 1);
    assert_eq!(store.read_all(&a).unwrap(), data(100, 1));
    assert!(matches!(
        BlobStore::open(Arc::new(MemStorage::new()), dir(), BlobOptions::default().chunk_size(0)),
        Err(crate::OpenError::InvalidOptions(_))
    ));
}

#[test]
fn blob_refs_encode_to_fixed_little_endian_bytes() {
    let r = BlobRef { file: 7, offset: 0x0102_0304, len: u64::MAX };
    let e = r.encode();
    assert_eq!(e.len(), BlobRef::ENCODED_LEN);
    assert_eq!(&e[..8], &[7, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&e[8..12], &[4, 3, 2, 1]);
    assert_eq!(BlobRef::decode(&e), Some(r));
    assert_eq!(BlobRef::decode(&e[..23]), None);
    assert_eq!(BlobRef::decode(&[0; 25]), None);
}

#[test]
fn the_writer_buffer_stays_within_its_bound() {
    let fs = MemStorage::new();
    let options = BlobOptions::default().chunk_size(4096).sync(false);
    let bound = options.writer_buffer_bound();
    assert_eq!(bound, 28 + 16 * 4096 + 16 * 4 + 24);
    let store = open(&fs, options);
    let bytes = data(3 << 20, 9);
    let mut w = store.writer().unwrap();
    let mut max = 0;
    for piece in bytes.chunks(10_000) {
        w.write_all(piece).unwrap();
        max = max.max(w.buffer_capacity());
        assert!(w.buffer_capacity() <= bound, "{} > {bound}", w.buffer_capacity());
        if w.is_streaming() {
            assert!(w.buffer_capacity() <= 4096 + 4, "one chunk once streaming: {}", w.buffer_capacity());
        }
    }
    let (blob, _) = w.finish().unwrap();
    assert!(max > 16 * 4096, "the small-blob buffer was used: {max}");
    assert_eq!(store.read_all(&blob).unwrap(), bytes);
}

// ---------------------------------------------------------------------------------------------------------
// Group sync: a storage whose syncs are slow and counted.
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug)]
struct SlowSync {
    inner: MemStorage,
    syncs: Arc<AtomicU64>,
}

struct SlowFile {
    inner: Box<dyn WritableFile>,
    syncs: Arc<AtomicU64>,
}

impl WritableFile for SlowFile {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.inner.append(data)
    }
    fn reserve(&mut self, len: u64) -> std::io::Result<()> {
        self.inner.reserve(len)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        self.inner.sync()
    }
}

impl Storage for SlowSync {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(SlowFile { inner: self.inner.create(path)?, syncs: self.syncs.clone() }))
    }
    fn reopen(&self, path: &Path, at: u64) -> std::io::Result<Box<dyn WritableFile>> {
        self.inner.reopen(path, at)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn map(&self, path: &Path) -> std::io::Result<Arc<dyn MappedFile>> {
        self.inner.map(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> std::io::Result<()> {
        self.inner.truncate(path, len)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        self.inner.exists(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn FileLock>> {
        self.inner.lock(path)
    }
}

#[test]
fn writers_finishing_together_share_a_sync() {
    let syncs = Arc::new(AtomicU64::new(0));
    let storage = Arc::new(SlowSync { inner: MemStorage::new(), syncs: syncs.clone() });
    let store = BlobStore::open(storage, dir(), BlobOptions::default().chunk_size(64)).unwrap();
    put(&store, b"starts the shared file", 100);
    let before = syncs.load(Ordering::SeqCst);
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                let bytes = data(200, t as u64);
                let mut w = store.writer().unwrap();
                w.write_all(&bytes).unwrap();
                barrier.wait();
                let (blob, _pin) = w.finish().unwrap();
                (blob, bytes)
            })
        })
        .collect();
    for h in handles {
        let (blob, bytes) = h.join().unwrap();
        assert_eq!(store.read_all(&blob).unwrap(), bytes);
    }
    let used = syncs.load(Ordering::SeqCst) - before;
    assert!((1..threads as u64).contains(&used), "{threads} finishing writers used {used} syncs");
}

/// Regression: a read of the shared file while it was being appended to left a map of it as long as it was
/// then; once the file was full and no longer appended to, that map was reused as if it held the whole
/// file, and every blob appended after it failed to read ("blob header cut short"), forever.
#[test]
fn blobs_appended_after_a_read_stay_readable_once_the_file_is_full() {
    let fs = MemStorage::new();
    let store = open(&fs, BlobOptions::default().file_size(64 << 10));
    let (first, _pin) = put(&store, &data(1000, 1), 1000);
    assert_eq!(store.read_all(&first).unwrap(), data(1000, 1), "mapped while short");
    let mut blobs = vec![(first, data(1000, 1))];
    for i in 2..12u64 {
        let bytes = data(20_000, i);
        let (blob, _pin) = put(&store, &bytes, 7000);
        blobs.push((blob, bytes));
    }
    let first_file = blobs[0].0.file;
    assert!(store.files().iter().any(|f| f.number == first_file && !f.active), "the first file filled up");
    for (blob, bytes) in &blobs {
        assert_eq!(&store.read_all(blob).unwrap(), bytes, "{blob:?}");
    }
    let listed = store.blobs_in(first_file).unwrap();
    let expected: Vec<BlobRef> = blobs.iter().map(|(b, _)| *b).filter(|b| b.file == first_file).collect();
    assert_eq!(listed, expected);
    assert!(store.check().is_healthy());
}
