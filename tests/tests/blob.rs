//! Blob files (`cairn_engine::BlobStore`) under damage, power cuts, concurrency and size: every flipped bit of
//! a small blob file is detected or harmless; a power cut during concurrent writes leaves every finished blob
//! intact and the unfinished ones incomplete, never corrupt; concurrent writers read back what they wrote; a
//! 64 MiB blob streams through bounded memory; garbage collection copies live blobs and removes whole files.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_engine::{BlobOptions, BlobRef, BlobStore, CrashMode, FsStorage, MemStorage, Storage, StorageError};

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

fn put(store: &BlobStore, bytes: &[u8]) -> BlobRef {
    let mut w = store.writer().unwrap();
    for piece in bytes.chunks(997) {
        w.write_all(piece).unwrap();
    }
    w.finish().unwrap().0
}

fn path_of(file: u64) -> PathBuf {
    dir().join(format!("{file:06}.blob"))
}

/// One flip's outcome for one blob.
#[derive(Debug, PartialEq, Eq)]
enum ReadBack {
    Same,
    Corruption(PathBuf, u64),
}

#[test]
fn every_flipped_bit_in_a_small_blob_file_is_detected_or_harmless() {
    let fs = MemStorage::new();
    let store = open(&fs, BlobOptions::default().chunk_size(16));
    let sizes = [0usize, 1, 15, 16, 17, 40];
    let blobs: Vec<(BlobRef, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let bytes = data(n, i as u64 + 1);
            (put(&store, &bytes), bytes)
        })
        .collect();
    drop(store);
    let file = blobs[0].0.file;
    assert!(blobs.iter().all(|(b, _)| b.file == file), "one shared file");
    let path = path_of(file);
    let base = fs.crash_image();
    let len = base.read(&path).unwrap().len();
    let (mut detected, mut harmless, mut checked) = (0, 0, 0);
    for byte in 0..len {
        for bit in 0..8 {
            let copy = base.crash_image();
            copy.mutate_byte(&path, byte, |b| b ^ (1 << bit)).unwrap();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let store = open(&copy, BlobOptions::default());
                let reads: Vec<ReadBack> = blobs
                    .iter()
                    .map(|(blob, bytes)| match store.read_all(blob) {
                        Ok(got) => {
                            assert_eq!(&got, bytes, "flip {byte}.{bit}: wrong bytes read back");
                            ReadBack::Same
                        }
                        Err(StorageError::Corruption { file, offset, .. }) => ReadBack::Corruption(file, offset),
                        Err(e) => panic!("flip {byte}.{bit}: {e}"),
                    })
                    .collect();
                let listed = store.blobs_in(file);
                (reads, listed, store.check())
            }));
            let (reads, listed, report) = outcome.unwrap_or_else(|_| panic!("flip {byte}.{bit} panicked"));
            let mut any_failed = false;
            for r in &reads {
                if let ReadBack::Corruption(f, o) = r {
                    any_failed = true;
                    assert_eq!(f, &path, "flip {byte}.{bit}");
                    assert!(*o <= byte as u64, "flip {byte}.{bit}: reported at {o}, after the damage");
                }
            }
            // blobs_in lists only intact blobs of the original, or reports corruption.
            match &listed {
                Ok(list) => {
                    assert!(list.iter().all(|b| blobs.iter().any(|(o, _)| o == b)), "flip {byte}.{bit}: {list:?}")
                }
                Err(e) => assert!(e.is_corruption(), "flip {byte}.{bit}: {e}"),
            }
            // The check sees whatever the reads saw, at or before the flipped byte.
            let findings: Vec<u64> =
                report.problems.iter().chain(&report.incomplete).filter_map(|f| f.offset).collect();
            if any_failed {
                assert!(!findings.is_empty(), "flip {byte}.{bit}: reads failed, check found nothing");
            }
            if byte < 12 {
                assert!(!report.is_healthy(), "flip {byte}.{bit} in the file header: {report:?}");
            }
            if !findings.is_empty() {
                assert!(findings.iter().any(|&o| o <= byte as u64), "flip {byte}.{bit}: {report:?}");
                checked += 1;
            }
            if any_failed || !findings.is_empty() {
                detected += 1;
            } else {
                harmless += 1;
                assert!((12..16).contains(&byte), "flip {byte}.{bit} went unnoticed outside the reserved field");
            }
        }
    }
    println!("{len} bytes: {detected} flips detected ({checked} by check), {harmless} harmless");
    assert_eq!(harmless, 32, "only the reserved field of the file header is unchecked");
}

/// Writers stream blobs of mixed sizes while power cuts are taken; every blob finished before a cut reads
/// back intact from its image, and nothing in any image is reported as corruption.
#[test]
fn a_power_cut_during_concurrent_writes_keeps_every_finished_blob() {
    let fs = MemStorage::new();
    let options = BlobOptions::default().chunk_size(256).file_size(32 << 10);
    let store = open(&fs, options.clone());
    let finished: Arc<Mutex<Vec<(BlobRef, u64, usize)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..6u64)
        .map(|t| {
            let (store, finished, stop) = (store.clone(), finished.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let seed = t * 1_000_000 + i;
                    let n = match i % 5 {
                        0 => 0,
                        1 => 100,
                        2 => 3000,
                        3 => 6000, // past the small-blob limit (4 KiB): a file of its own
                        _ => 257,
                    };
                    let bytes = data(n, seed);
                    let mut w = store.writer().unwrap();
                    for piece in bytes.chunks(300) {
                        w.write_all(piece).unwrap();
                        std::thread::yield_now();
                    }
                    if i % 7 == 6 {
                        drop(w); // abandoned: an incomplete blob
                    } else {
                        let (blob, _pin) = w.finish().unwrap();
                        finished.lock().unwrap().push((blob, seed, n));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let modes = [CrashMode::Drop, CrashMode::Tear, CrashMode::Garble, CrashMode::Mixed];
    let mut images = Vec::new();
    for round in 0..12u64 {
        std::thread::sleep(Duration::from_millis(15));
        let done = finished.lock().unwrap().clone();
        images.push((fs.crash(round + 1, modes[round as usize % 4]), done, modes[round as usize % 4]));
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let mut incomplete = 0;
    let mut checked = 0;
    for (image, done, mode) in images {
        let store = open(&image, options.clone());
        for (blob, seed, n) in &done {
            assert_eq!(store.read_all(blob).unwrap(), data(*n, *seed), "{mode:?}: {blob:?}");
        }
        let report = store.check();
        assert!(report.is_healthy(), "{mode:?}: {:#?}", report.problems);
        assert!(report.blobs >= done.len() as u64);
        let mut per_file: BTreeMap<u64, Vec<BlobRef>> = BTreeMap::new();
        for f in store.files() {
            per_file.insert(f.number, store.blobs_in(f.number).unwrap());
        }
        for (blob, _, _) in &done {
            assert!(per_file.get(&blob.file).is_some_and(|l| l.contains(blob)), "{mode:?}: {blob:?} not listed");
        }
        incomplete += report.incomplete.len();
        checked += done.len();
    }
    println!("{checked} finished blobs checked across the images; {incomplete} incomplete ones recognised");
    assert!(checked > 0);
}

/// A blob streamed into a file of its own whose writer dies, and a small blob appended but not yet synced:
/// after a power cut both are incomplete, the finished blob before them intact.
#[test]
fn unfinished_blobs_are_incomplete_after_a_power_cut() {
    for mode in [CrashMode::Drop, CrashMode::Tear, CrashMode::Garble, CrashMode::Mixed] {
        for seed in 1..20 {
            let fs = MemStorage::new();
            let store = open(&fs, BlobOptions::default().chunk_size(64));
            let done = put(&store, &data(500, 1));
            let mut streaming = store.writer().unwrap();
            streaming.write_all(&data(3000, 2)).unwrap();
            assert!(streaming.is_streaming());
            let image = fs.crash(seed, mode);
            let s = open(&image, BlobOptions::default());
            assert_eq!(s.read_all(&done).unwrap(), data(500, 1));
            let report = s.check();
            assert!(report.is_healthy(), "{mode:?} {seed}: {report:?}");
            let own = s.files().into_iter().find(|f| f.number != done.file).unwrap();
            assert!(s.blobs_in(own.number).unwrap().is_empty(), "{mode:?} {seed}");
            let own_path = path_of(own.number);
            if own.len > 16 {
                assert!(
                    report.incomplete.iter().any(|f| f.file.as_deref() == Some(own_path.as_path())),
                    "{mode:?} {seed}: {report:?}"
                );
            }
            drop(streaming);
        }
    }
}

#[test]
fn concurrent_writers_read_back_what_they_wrote() {
    let fs = MemStorage::new();
    let store = open(&fs, BlobOptions::default().chunk_size(4096).file_size(256 << 10));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..12u64 {
                    let n = if (t + i) % 4 == 0 {
                        100_000 + (i as usize) * 1000
                    } else {
                        (i as usize * 977 + t as usize) % 5000
                    };
                    let seed = t * 100 + i;
                    let bytes = data(n, seed);
                    mine.push((put(&store, &bytes), seed, n));
                }
                for (blob, seed, n) in &mine {
                    assert_eq!(store.read_all(blob).unwrap(), data(*n, *seed));
                }
                mine
            })
        })
        .collect();
    let all: Vec<_> = threads.into_iter().flat_map(|h| h.join().unwrap()).collect();
    for (blob, seed, n) in &all {
        assert_eq!(store.read_all(blob).unwrap(), data(*n, *seed));
    }
    let report = store.check();
    assert!(report.is_healthy() && report.incomplete.is_empty(), "{report:?}");
    assert_eq!(report.blobs, 96);
    let own_files = all.iter().filter(|(_, _, n)| *n > 16 * 4096).count();
    assert!(own_files > 0 && store.files().len() > own_files, "large blobs in files of their own, small ones shared");
}

/// 64 MiB through a 64 KiB buffer: the writer never holds more than its bound (one chunk once streaming), the
/// reader no buffer at all.
#[test]
fn a_64_mib_blob_streams_through_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(Arc::new(FsStorage), tmp.path(), BlobOptions::default().sync(false)).unwrap();
    let bound = store.options().writer_buffer_bound();
    let total = 64usize << 20;
    let piece = 64usize << 10;
    let mut w = store.writer().unwrap();
    let mut hasher = crc32fast::Hasher::new();
    let mut max = 0;
    for i in 0..total / piece {
        let bytes = data(piece, i as u64);
        hasher.update(&bytes);
        w.write_all(&bytes).unwrap();
        max = max.max(w.buffer_capacity());
        if w.is_streaming() {
            assert!(w.buffer_capacity() <= (64 << 10) + 4, "{}", w.buffer_capacity());
        }
    }
    assert!(max <= bound, "{max} > {bound}");
    let (blob, _pin) = w.finish().unwrap();
    assert_eq!(blob.len, total as u64);
    let mut r = store.read(&blob, 0..blob.len).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut back = crc32fast::Hasher::new();
    let mut read = 0;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        back.update(&buf[..n]);
        read += n;
    }
    assert_eq!((read, back.finalize()), (total, hasher.finalize()));
    let tail = {
        let mut t = Vec::new();
        store.read(&blob, blob.len - 10..blob.len).unwrap().read_to_end(&mut t).unwrap();
        t
    };
    assert_eq!(tail, data(piece, (total / piece - 1) as u64)[piece - 10..]);
}

/// Garbage collection as the layer above does it: copy the live blobs of a file elsewhere, switch the
/// references, drop the pins, remove the file.
#[test]
fn garbage_collection_copies_live_blobs_and_removes_the_file() {
    let fs = MemStorage::new();
    let store = open(&fs, BlobOptions::default().chunk_size(128).file_size(4096));
    let mut live = BTreeMap::new();
    for i in 0..20u64 {
        let bytes = data(300, i);
        let blob = put(&store, &bytes);
        if i % 3 == 0 {
            live.insert(i, blob);
        }
    }
    let victim = store.files().into_iter().find(|f| !f.active).unwrap().number;
    let before = store.disk_bytes();
    let in_victim = store.blobs_in(victim).unwrap();
    assert!(!in_victim.is_empty());
    let mut pins = Vec::new();
    for (i, blob) in live.iter_mut() {
        if blob.file == victim {
            assert!(in_victim.contains(blob));
            let mut w = store.writer().unwrap();
            std::io::copy(&mut store.read(blob, 0..blob.len).unwrap(), &mut w).unwrap();
            let (moved, pin) = w.finish().unwrap();
            assert_ne!(moved.file, victim);
            assert_eq!(store.read_all(&moved).unwrap(), data(300, *i));
            *blob = moved;
            pins.push(pin);
        }
    }
    store.remove_file(victim).unwrap();
    assert!(store.disk_bytes() < before + 4096);
    for (i, blob) in &live {
        assert_eq!(store.read_all(blob).unwrap(), data(300, *i));
    }
    assert!(store.check().is_healthy());
}
