//! The artifact store's tests: buckets, objects, listings, multipart uploads, statistics, retention,
//! garbage collection, corruption and crashes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use cairn_engine::{BlobOptions, CrashMode, Db, MemStorage, Options};
use sha2::{Digest, Sha256};

use super::*;
use crate::StoreOptions;

fn open_on(fs: &MemStorage, blob: BlobOptions) -> Artifacts {
    let db = Options::default().storage(Arc::new(fs.clone())).open(Path::new("/db")).unwrap();
    let store = Store::with_db(db, StoreOptions::default()).unwrap();
    let opts = ArtifactOptions::default().blob(blob).maintenance_interval(Duration::ZERO);
    Artifacts::open(store, Path::new("/db/blobs"), opts).unwrap()
}

fn open() -> (tempfile::TempDir, Artifacts) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::with_db(Db::open(dir.path()).unwrap(), StoreOptions::default()).unwrap();
    let opts = ArtifactOptions::default().maintenance_interval(Duration::ZERO);
    let artifacts = Artifacts::open(store, &dir.path().join("blobs"), opts).unwrap();
    (dir, artifacts)
}

/// `n` bytes that differ from one seed to another.
fn body(seed: u64, n: usize) -> Vec<u8> {
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

fn put(a: &Artifacts, bucket: &str, key: &str, bytes: &[u8]) -> ObjectMeta {
    a.put_object(bucket, key, PutOptions::default(), &mut &bytes[..]).unwrap()
}

fn get(a: &Artifacts, bucket: &str, key: &str) -> Vec<u8> {
    let (_, mut reader) = a.get_object(bucket, key, None).unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn buckets_are_created_listed_and_deleted_only_when_empty() {
    let (_dir, a) = open();
    let b = a.create_bucket("datasets", Some("vision")).unwrap();
    assert_eq!((b.name.as_str(), b.project.as_deref(), b.stats), ("datasets", Some("vision"), BucketStats::default()));
    assert!(matches!(a.create_bucket("datasets", None), Err(ArtifactError::BucketExists(_))));
    assert!(matches!(a.create_bucket("Bad_Name", None), Err(ArtifactError::InvalidBucketName(_))));
    a.create_bucket("logs", None).unwrap();
    let names: Vec<String> = a.list_buckets().unwrap().into_iter().map(|b| b.name).collect();
    assert_eq!(names, ["datasets", "logs"]);
    put(&a, "logs", "a.txt", b"hello");
    assert!(matches!(a.delete_bucket("logs"), Err(ArtifactError::BucketNotEmpty(_))));
    assert_eq!(get(&a, "logs", "a.txt"), b"hello", "a refused deletion leaves the bucket usable");
    put(&a, "logs", "b.txt", b"more");
    assert!(a.delete_object("logs", "a.txt").unwrap());
    assert!(a.delete_object("logs", "b.txt").unwrap());
    assert!(!a.delete_object("logs", "b.txt").unwrap(), "deleting an absent object is not an error");
    a.delete_bucket("logs").unwrap();
    assert!(matches!(a.bucket("logs"), Err(ArtifactError::NoSuchBucket(_))));
    assert!(matches!(a.delete_bucket("logs"), Err(ArtifactError::NoSuchBucket(_))));
    assert!(matches!(
        a.put_object("logs", "x", PutOptions::default(), &mut &b"x"[..]),
        Err(ArtifactError::NoSuchBucket(_))
    ));
    // Re-created under the same name: it starts empty.
    assert_eq!(a.create_bucket("logs", None).unwrap().stats, BucketStats::default());
}

#[test]
fn objects_round_trip_with_metadata_digests_and_ranges() {
    let (_dir, a) = open();
    a.create_bucket("bk1", None).unwrap();
    for (i, n) in [0usize, 1, 65_535, 65_536, 65_537, 3 << 20].into_iter().enumerate() {
        let bytes = body(i as u64, n);
        let opts = PutOptions {
            content_type: Some("application/octet-stream".into()),
            metadata: BTreeMap::from([("run".to_owned(), "7".to_owned())]),
            ..PutOptions::default()
        };
        let meta = a.put_object("bk1", &format!("k{n}"), opts, &mut &bytes[..]).unwrap();
        assert_eq!(meta.size, n as u64);
        assert_eq!(meta.etag, hex::encode(<md5::Md5 as md5::Digest>::digest(&bytes)));
        assert_eq!(meta.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
        let head = a.head_object("bk1", &format!("k{n}")).unwrap();
        assert_eq!(head, meta);
        assert_eq!(head.metadata.get("run").map(String::as_str), Some("7"));
        assert_eq!(get(&a, "bk1", &format!("k{n}")), bytes, "{n} bytes");
        if n > 10 {
            for range in [0..1, 0..10, (n as u64 - 10)..n as u64, 5..(n as u64 + 100)] {
                let (_, mut r) = a.get_object("bk1", &format!("k{n}"), Some(range.clone())).unwrap();
                let mut got = Vec::new();
                r.read_to_end(&mut got).unwrap();
                let end = range.end.min(n as u64) as usize;
                assert_eq!(got, bytes[range.start as usize..end], "{n} bytes, range {range:?}");
            }
            assert!(matches!(
                a.get_object("bk1", &format!("k{n}"), Some(n as u64..n as u64 + 1)),
                Err(ArtifactError::InvalidRange { .. })
            ));
        }
    }
    assert!(matches!(a.head_object("bk1", "absent"), Err(ArtifactError::NoSuchKey { .. })));
    assert!(matches!(a.head_object("nope", "k0"), Err(ArtifactError::NoSuchBucket(_))));
    assert!(matches!(a.put_object("bk1", "", PutOptions::default(), &mut &b""[..]), Err(ArtifactError::InvalidKey(_))));
}

/// A body read back in pieces of `piece` bytes, failing with `fail_at` bytes read if given.
struct Trickle<'a> {
    bytes: &'a [u8],
    piece: usize,
    read: usize,
    fail_at: Option<usize>,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.fail_at.is_some_and(|at| self.read >= at) {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the client went away"));
        }
        let n = self.piece.min(buf.len()).min(self.bytes.len() - self.read);
        buf[..n].copy_from_slice(&self.bytes[self.read..self.read + n]);
        self.read += n;
        Ok(n)
    }
}

#[test]
fn large_bodies_read_in_odd_pieces_get_the_digests_of_their_bytes() {
    // Around the size past which MD5 moves to a thread of its own (1 MiB) and the size of its batches.
    let (_dir, a) = open();
    a.create_bucket("bk1", None).unwrap();
    for (i, n) in [(1 << 20) - 1, 1 << 20, (1 << 20) + 1, (3 << 20) + 17, 9 << 20].into_iter().enumerate() {
        let bytes = body(100 + i as u64, n);
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &bytes) as u32;
        let opts = PutOptions { expected_crc32c: Some(crc), ..PutOptions::default() };
        let mut reader = Trickle { bytes: &bytes, piece: 7_919, read: 0, fail_at: None };
        let meta = a.put_object("bk1", "k", opts, &mut reader).unwrap();
        assert_eq!(meta.etag, hex::encode(<md5::Md5 as md5::Digest>::digest(&bytes)), "{n} bytes");
        assert_eq!(meta.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)), "{n} bytes");
        assert_eq!(meta.crc32c, Some(crc));
        assert_eq!(get(&a, "bk1", "k"), bytes, "{n} bytes");
    }
    // A body that fails past the first MiB (the MD5 thread running) stores nothing visible.
    let bytes = body(7, 5 << 20);
    let mut reader = Trickle { bytes: &bytes, piece: 65_536, read: 0, fail_at: Some(3 << 20) };
    let err = a.put_object("bk1", "k", PutOptions::default(), &mut reader).unwrap_err();
    assert!(matches!(err, ArtifactError::Read(_)), "{err}");
    assert_eq!(a.head_object("bk1", "k").unwrap().size, 9 << 20, "the last good object stays");
}

#[test]
fn a_sha256_verified_by_the_reader_is_taken_and_still_checked_against_the_clients() {
    let (_dir, a) = open();
    a.create_bucket("bk1", None).unwrap();
    let bytes = body(3, 2 << 20);
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    let opts = PutOptions { verified_sha256: Some(sha), ..PutOptions::default() };
    let meta = a.put_object("bk1", "k", opts, &mut &bytes[..]).unwrap();
    assert_eq!((meta.sha256, meta.etag.clone()), (sha, hex::encode(<md5::Md5 as md5::Digest>::digest(&bytes))));
    // Taken as given (the reader vouches for it): the store does not hash the body again.
    let opts = PutOptions { verified_sha256: Some([7; 32]), ..PutOptions::default() };
    assert_eq!(a.put_object("bk1", "k2", opts, &mut &b"x"[..]).unwrap().sha256, [7; 32]);
    // A client's x-amz-checksum-sha256 is still compared with it.
    let opts = PutOptions { verified_sha256: Some(sha), expected_sha256: Some([0; 32]), ..PutOptions::default() };
    let err = a.put_object("bk1", "k3", opts, &mut &bytes[..]).unwrap_err();
    assert!(matches!(err, ArtifactError::BadDigest(_)), "{err}");
    assert!(matches!(a.head_object("bk1", "k3"), Err(ArtifactError::NoSuchKey { .. })));
}

#[test]
fn a_bad_digest_stores_nothing_visible() {
    let (_dir, a) = open();
    a.create_bucket("bk1", None).unwrap();
    put(&a, "bk1", "k", b"first");
    for opts in [
        PutOptions { expected_md5: Some([0; 16]), ..PutOptions::default() },
        PutOptions { expected_sha256: Some([0; 32]), ..PutOptions::default() },
        PutOptions { expected_crc32c: Some(1), ..PutOptions::default() },
    ] {
        let err = a.put_object("bk1", "k", opts, &mut &b"second"[..]).unwrap_err();
        assert!(matches!(err, ArtifactError::BadDigest(_)), "{err}");
    }
    assert_eq!(get(&a, "bk1", "k"), b"first");
    // The right CRC32C (Castagnoli) of "second" is accepted and kept.
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, b"second") as u32;
    let meta = a.put_object(
        "bk1",
        "k",
        PutOptions { expected_crc32c: Some(crc), ..PutOptions::default() },
        &mut &b"second"[..],
    );
    assert_eq!(meta.unwrap().crc32c, Some(crc));
    assert_eq!(a.bucket("bk1").unwrap().stats, BucketStats { objects: 1, bytes: 6 });
}

#[test]
fn statistics_follow_puts_overwrites_copies_and_deletes() {
    let (_dir, a) = open();
    a.create_bucket("bk1", None).unwrap();
    a.create_bucket("bk2", None).unwrap();
    put(&a, "bk1", "x", &[1; 100]);
    put(&a, "bk1", "y", &[1; 50]);
    put(&a, "bk1", "x", &[1; 30]);
    a.copy_object("bk1", "y", "bk2", "y2", None).unwrap();
    assert_eq!(a.bucket("bk1").unwrap().stats, BucketStats { objects: 2, bytes: 80 });
    assert_eq!(a.bucket("bk2").unwrap().stats, BucketStats { objects: 1, bytes: 50 });
    a.delete_object("bk1", "y").unwrap();
    assert_eq!(get(&a, "bk2", "y2"), [1; 50], "a copy shares the bytes and outlives its source");
    assert_eq!(a.totals().unwrap(), BucketStats { objects: 2, bytes: 80 });
    // Many writes fold their entries into one when read.
    for i in 0..300 {
        put(&a, "bk2", &format!("f{i}"), &[2; 3]);
    }
    assert_eq!(a.bucket("bk2").unwrap().stats, BucketStats { objects: 301, bytes: 950 });
    let entries = stats::sum_at(&a.inner.store.db().snapshot(), "bk2").unwrap().1;
    assert_eq!(entries, 1, "folded");
    assert_eq!(a.bucket("bk2").unwrap().stats, BucketStats { objects: 301, bytes: 950 });
}

#[test]
fn copies_keep_or_replace_metadata() {
    let (_dir, a) = open();
    a.create_bucket("bk1", None).unwrap();
    let opts = PutOptions { content_type: Some("text/plain".into()), ..PutOptions::default() };
    a.put_object("bk1", "src", opts, &mut &b"abc"[..]).unwrap();
    let kept = a.copy_object("bk1", "src", "bk1", "same", None).unwrap();
    assert_eq!(
        (kept.content_type.as_deref(), kept.etag.clone()),
        (Some("text/plain"), a.head_object("bk1", "src").unwrap().etag)
    );
    let replace = PutOptions { content_type: Some("text/csv".into()), ..PutOptions::default() };
    let replaced = a.copy_object("bk1", "src", "bk1", "other", Some(replace)).unwrap();
    assert_eq!(replaced.content_type.as_deref(), Some("text/csv"));
    assert!(matches!(a.copy_object("bk1", "absent", "bk1", "z", None), Err(ArtifactError::NoSuchKey { .. })));
}

/// Every page of a listing, followed to the end.
fn list_all(a: &Artifacts, prefix: &str, delimiter: Option<&str>, max_keys: usize) -> (Vec<String>, Vec<String>) {
    let (mut keys, mut prefixes) = (Vec::new(), Vec::new());
    let mut after = None;
    loop {
        let req = ListRequest {
            prefix: prefix.to_owned(),
            delimiter: delimiter.map(str::to_owned),
            start_after: after.clone(),
            max_keys,
        };
        let page = a.list_objects("bkt", &req).unwrap();
        assert!(page.objects.len() + page.common_prefixes.len() <= max_keys);
        keys.extend(page.objects.into_iter().map(|o| o.key));
        prefixes.extend(page.common_prefixes);
        if !page.truncated {
            return (keys, prefixes);
        }
        after = page.next_start_after;
        assert!(after.is_some());
    }
}

#[test]
fn listings_page_through_prefixes_and_delimiters_as_s3_does() {
    let (_dir, a) = open();
    a.create_bucket("bkt", None).unwrap();
    let mut all = Vec::new();
    for d in 0..12 {
        for f in 0..40 {
            all.push(format!("runs/{d:02}/file-{f:03}.bin"));
        }
        all.push(format!("runs/{d:02}.json"));
    }
    all.extend(["top.txt".to_owned(), "runs".to_owned(), "runsx/1".to_owned()]);
    for k in &all {
        put(&a, "bkt", k, b"");
    }
    all.sort();
    for max in [1, 7, 1000] {
        let (keys, prefixes) = list_all(&a, "", None, max);
        assert_eq!((keys, prefixes.len()), (all.clone(), 0), "max {max}");
        let (keys, prefixes) = list_all(&a, "", Some("/"), max);
        assert_eq!(keys, ["runs", "top.txt"], "max {max}");
        assert_eq!(prefixes, ["runs/", "runsx/"], "max {max}");
        let (keys, prefixes) = list_all(&a, "runs/", Some("/"), max);
        let want_keys: Vec<String> = (0..12).map(|d| format!("runs/{d:02}.json")).collect();
        let want_prefixes: Vec<String> = (0..12).map(|d| format!("runs/{d:02}/")).collect();
        assert_eq!((keys, prefixes), (want_keys, want_prefixes), "max {max}");
        let (keys, _) = list_all(&a, "runs/03/", Some("/"), max);
        assert_eq!(keys.len(), 40, "max {max}");
    }
    let start =
        ListRequest { start_after: Some("runs/11/file-039.bin".into()), max_keys: 10, ..ListRequest::default() };
    let keys: Vec<String> = a.list_objects("bkt", &start).unwrap().objects.into_iter().map(|o| o.key).collect();
    // "runs/11.json" sorts before "runs/11/..." ('.' < '/').
    assert_eq!(keys, ["runsx/1", "top.txt"]);
}

#[test]
fn multipart_uploads_assemble_parts_in_order() {
    let (_dir, a) = open();
    a.create_bucket("bk1", None).unwrap();
    let opts = PutOptions { content_type: Some("application/x-tar".into()), ..PutOptions::default() };
    let id = a.create_multipart("bk1", "ckpt.tar", opts).unwrap();
    let parts: Vec<Vec<u8>> = vec![body(1, MIN_PART_SIZE as usize), body(2, MIN_PART_SIZE as usize + 3), body(3, 1000)];
    let mut etags = Vec::new();
    // Uploaded out of order, and part 2 twice: the later one counts.
    for n in [3u32, 2, 1, 2] {
        let info = a.upload_part("bk1", "ckpt.tar", &id, n, &mut &parts[n as usize - 1][..]).unwrap();
        etags.push((n, info.etag));
    }
    let listed: Vec<u32> = a.list_parts("bk1", "ckpt.tar", &id).unwrap().iter().map(|p| p.part_number).collect();
    assert_eq!(listed, [1, 2, 3]);
    assert_eq!(a.list_uploads("bk1").unwrap().len(), 1);
    let etag = |n: u32| etags.iter().rev().find(|e| e.0 == n).map(|e| e.1.clone()).unwrap();
    assert!(matches!(
        a.complete_multipart("bk1", "ckpt.tar", &id, &[(2, etag(2)), (1, etag(1))]),
        Err(ArtifactError::InvalidPartOrder)
    ));
    assert!(matches!(
        a.complete_multipart("bk1", "ckpt.tar", &id, &[(1, etag(1)), (2, "\"0000\"".into())]),
        Err(ArtifactError::InvalidPart(_))
    ));
    assert!(matches!(
        a.complete_multipart("bk1", "ckpt.tar", &id, &[(3, etag(3)), (4, etag(3))]),
        Err(ArtifactError::InvalidPart(_))
    ));
    assert!(matches!(a.upload_part("bk1", "ckpt.tar", &id, 0, &mut &b""[..]), Err(ArtifactError::InvalidPart(_))));
    let small = a.create_multipart("bk1", "small", PutOptions::default()).unwrap();
    let e1 = a.upload_part("bk1", "small", &small, 1, &mut &b"tiny"[..]).unwrap().etag;
    let e2 = a.upload_part("bk1", "small", &small, 2, &mut &b"end"[..]).unwrap().etag;
    assert!(matches!(
        a.complete_multipart("bk1", "small", &small, &[(1, e1.clone()), (2, e2)]),
        Err(ArtifactError::EntityTooSmall { part: 1 })
    ));
    a.abort_multipart("bk1", "small", &small).unwrap();
    assert!(matches!(a.list_parts("bk1", "small", &small), Err(ArtifactError::NoSuchUpload(_))));

    let meta = a
        .complete_multipart("bk1", "ckpt.tar", &id, &[(1, etag(1)), (2, etag(2)), (3, format!("\"{}\"", etag(3)))])
        .unwrap();
    let whole = parts.concat();
    assert_eq!(meta.size, whole.len() as u64);
    assert!(meta.etag.ends_with("-3"), "{}", meta.etag);
    assert_eq!(meta.sha256, <[u8; 32]>::from(Sha256::digest(&whole)));
    assert_eq!(meta.content_type.as_deref(), Some("application/x-tar"));
    assert_eq!(get(&a, "bk1", "ckpt.tar"), whole);
    let boundary = MIN_PART_SIZE - 5..MIN_PART_SIZE + 5;
    let (_, mut r) = a.get_object("bk1", "ckpt.tar", Some(boundary.clone())).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, whole[boundary.start as usize..boundary.end as usize], "a range across two parts");
    assert!(a.list_uploads("bk1").unwrap().is_empty());
    assert!(matches!(a.list_parts("bk1", "ckpt.tar", &id), Err(ArtifactError::NoSuchUpload(_))));
    assert_eq!(a.bucket("bk1").unwrap().stats, BucketStats { objects: 1, bytes: whole.len() as u64 });
    assert!(a.check().unwrap().problems.is_empty());
}

#[test]
fn garbage_collection_gives_space_back_and_keeps_every_live_object() {
    let fs = MemStorage::new();
    let a = open_on(&fs, BlobOptions::default().file_size(256 << 10));
    a.create_bucket("bk1", None).unwrap();
    for i in 0..120u64 {
        put(&a, "bk1", &format!("k{i:03}"), &body(i, 20_000 + i as usize * 37));
    }
    // A large object in a file of its own, then overwritten: its file becomes all garbage.
    put(&a, "bk1", "big", &body(999, 3 << 20));
    put(&a, "bk1", "big", &body(1000, 10));
    // An upload that never finished and a part whose upload was aborted.
    let mut unfinished = a.blobs().writer().unwrap();
    std::io::Write::write_all(&mut unfinished, &body(5, 50_000)).unwrap();
    drop(unfinished);
    let id = a.create_multipart("bk1", "m", PutOptions::default()).unwrap();
    a.upload_part("bk1", "m", &id, 1, &mut &body(6, 100_000)[..]).unwrap();
    a.abort_multipart("bk1", "m", &id).unwrap();
    for i in (0..120u64).filter(|i| i % 4 != 0) {
        a.delete_object("bk1", &format!("k{i:03}")).unwrap();
    }
    let before = a.blobs().disk_bytes();
    let report = a.collect_garbage().unwrap();
    let after = a.blobs().disk_bytes();
    let live = a.health().live_bytes;
    assert!(report.files_removed > 0 && report.blobs_moved > 0, "{report:?}");
    assert!(after < before / 2, "{before} -> {after} bytes ({report:?})");
    // What stays is live bytes, their blob framing, and the files still being appended to.
    assert!(after <= live * 2 + (512 << 10), "{after} bytes on disk for {live} live");
    for i in (0..120u64).filter(|i| i % 4 == 0) {
        assert_eq!(get(&a, "bk1", &format!("k{i:03}")), body(i, 20_000 + i as usize * 37));
    }
    assert_eq!(get(&a, "bk1", "big"), body(1000, 10));
    let check = a.check().unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    // Versions are unchanged by the moves.
    assert_eq!(a.head_object("bk1", "k000").unwrap().version, 1);
}

#[test]
fn the_shared_file_is_sealed_and_collected_once_it_holds_enough_garbage() {
    // 1 MiB objects are small blobs (at most 16 chunks of 64 KiB): they share one file, which at 256 MiB
    // never fills here. Shorter than an eighth of that it is left alone; longer, with half or more
    // garbage, it is sealed and rewritten.
    let fs = MemStorage::new();
    let a = open_on(&fs, BlobOptions::default());
    a.create_bucket("bk1", None).unwrap();
    let mib = 1 << 20;
    for i in 0..10u64 {
        put(&a, "bk1", &format!("k{i:02}"), &body(i, mib));
    }
    for i in 0..5u64 {
        a.delete_object("bk1", &format!("k{i:02}")).unwrap();
    }
    let shared = a.blobs().shared_file().unwrap();
    a.collect_garbage().unwrap();
    assert_eq!(a.blobs().shared_file(), Some(shared), "10 MiB: shorter than 32 MiB, kept");
    for i in 10..40u64 {
        put(&a, "bk1", &format!("k{i:02}"), &body(i, mib));
    }
    for i in (10..40u64).filter(|i| i % 3 != 0) {
        a.delete_object("bk1", &format!("k{i:02}")).unwrap();
    }
    let before = a.blobs().disk_bytes();
    let report = a.collect_garbage().unwrap();
    let (after, live) = (a.blobs().disk_bytes(), a.health().live_bytes);
    assert_ne!(a.blobs().shared_file(), Some(shared), "sealed");
    assert!(report.files_removed >= 1 && report.blobs_moved == 15, "{report:?}");
    assert_eq!(live, 15 * mib as u64);
    assert!(after < live + live / 20, "{before} -> {after} bytes on disk for {live} live ({report:?})");
    for i in (5..40u64).filter(|i| *i < 10 || i % 3 == 0) {
        assert_eq!(get(&a, "bk1", &format!("k{i:02}")), body(i, mib), "k{i:02}");
    }
    put(&a, "bk1", "after", b"the next small blob goes to a new shared file");
    assert_eq!(get(&a, "bk1", "after"), b"the next small blob goes to a new shared file");
    assert!(a.check().unwrap().problems.is_empty());
}

#[test]
fn a_reader_keeps_its_file_while_garbage_is_collected() {
    let fs = MemStorage::new();
    let a = open_on(&fs, BlobOptions::default().file_size(64 << 10));
    a.create_bucket("bk1", None).unwrap();
    let bytes = body(1, 2 << 20);
    put(&a, "bk1", "big", &bytes);
    let (_, mut reader) = a.get_object("bk1", "big", None).unwrap();
    let mut first = vec![0; 1000];
    reader.read_exact(&mut first).unwrap();
    a.delete_object("bk1", "big").unwrap();
    a.collect_garbage().unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    first.extend(rest);
    assert_eq!(first, bytes);
    drop(reader);
    let disk = a.blobs().disk_bytes();
    a.collect_garbage().unwrap();
    assert!(a.blobs().disk_bytes() < disk, "removed once the reader let go");
}

#[test]
fn retention_expires_old_objects_only() {
    let (_dir, a) = open();
    a.create_bucket("logs", None).unwrap();
    a.create_bucket("keep", None).unwrap();
    for k in ["old1", "old2", "new"] {
        put(&a, "logs", k, b"x");
        put(&a, "keep", k, b"x");
    }
    assert!(matches!(a.set_retention("logs", Some(0)), Err(ArtifactError::Invalid(_))));
    assert_eq!(a.set_retention("logs", Some(7)).unwrap().retention_days, Some(7));
    // Age two objects of each bucket by 8 days.
    for bucket in ["logs", "keep"] {
        for k in ["old1", "old2"] {
            let id = object_id(bucket, k);
            a.commit(|tx| {
                let stored = tx.get_doc(OBJECTS, &id)?.unwrap();
                let mut doc: ObjectDoc = buckets::decode(stored.doc, &id)?;
                doc.modified_ms -= 8 * 86_400_000;
                tx.restore_doc(OBJECTS, &id, stored.version, buckets::encode(&doc)?)?;
                Ok(())
            })
            .unwrap();
        }
    }
    assert_eq!(a.expire().unwrap(), 2);
    assert!(matches!(a.head_object("logs", "old1"), Err(ArtifactError::NoSuchKey { .. })));
    assert!(a.head_object("logs", "new").is_ok());
    assert!(a.head_object("keep", "old1").is_ok(), "a bucket without retention keeps everything");
    assert_eq!(a.bucket("logs").unwrap().stats.objects, 1);
    a.set_retention("logs", None).unwrap();
    assert_eq!(a.expire().unwrap(), 0);
}

use super::model::ObjectDoc;
use super::names::{object_id, OBJECTS};

#[test]
fn a_flipped_byte_in_a_blob_is_an_error_naming_the_file_never_wrong_bytes() {
    let fs = MemStorage::new();
    let a = open_on(&fs, BlobOptions::default());
    a.create_bucket("bk1", None).unwrap();
    let bytes = body(3, 200_000);
    put(&a, "bk1", "k", &bytes);
    let (file, len) = fs.files().into_iter().find(|(p, _)| p.extension().is_some_and(|e| e == "blob")).unwrap();
    fs.mutate_byte(&file, len / 2, |b| b ^ 0x10).unwrap();
    let (_, mut reader) = a.get_object("bk1", "k", None).unwrap();
    let mut got = Vec::new();
    let err = reader.read_to_end(&mut got).unwrap_err();
    let storage = digest::io_storage(err);
    assert!(storage.is_corruption(), "{storage}");
    assert!(storage.to_string().contains(&file.display().to_string()), "{storage}");
    assert!(bytes.starts_with(&got), "only verified bytes were handed out");
    let check = a.check().unwrap();
    assert!(!check.problems.is_empty() && check.problems[0].contains(".blob"), "{:?}", check.problems);
}

#[test]
fn concurrent_puts_all_land_and_are_counted() {
    let (_dir, a) = open();
    a.create_bucket("bk1", None).unwrap();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let a = a.clone();
            s.spawn(move || {
                for i in 0..40u64 {
                    let n = if i % 10 == 0 { 1_500_000 } else { 3000 };
                    put(&a, "bk1", &format!("t{t}/{i}"), &body(t * 100 + i, n));
                }
            });
        }
    });
    let stats = a.bucket("bk1").unwrap().stats;
    assert_eq!(stats.objects, 320);
    assert_eq!(stats.bytes, 8 * (4 * 1_500_000 + 36 * 3000));
    for t in 0..8u64 {
        for i in 0..40u64 {
            let n = if i % 10 == 0 { 1_500_000 } else { 3000 };
            assert_eq!(get(&a, "bk1", &format!("t{t}/{i}")), body(t * 100 + i, n));
        }
    }
}

/// Power cuts while writers upload: after each, every object is whole (its bytes match its SHA-256), the
/// statistics match the objects, and garbage collection leaves nothing unreferenced behind.
#[test]
fn power_cuts_during_uploads_leave_whole_objects_and_no_leaked_space() {
    let fs = MemStorage::new();
    let a = open_on(&fs, BlobOptions::default().file_size(512 << 10));
    a.create_bucket("bk1", None).unwrap();
    let writer = {
        let a = a.clone();
        std::thread::spawn(move || {
            for i in 0..60u64 {
                let n = if i % 7 == 0 { 1_200_000 } else { 10_000 + i as usize };
                put(&a, "bk1", &format!("k{}", i % 25), &body(i, n));
                if i % 5 == 4 {
                    a.delete_object("bk1", &format!("k{}", (i + 3) % 25)).unwrap();
                }
            }
        })
    };
    let mut images = Vec::new();
    while !writer.is_finished() {
        images.push(
            fs.crash(images.len() as u64, [CrashMode::Drop, CrashMode::Tear, CrashMode::Garble][images.len() % 3]),
        );
        std::thread::sleep(Duration::from_millis(3));
    }
    writer.join().unwrap();
    assert!(images.len() >= 3, "{} images", images.len());
    for image in images {
        let a = open_on(&image, BlobOptions::default().file_size(512 << 10));
        let page = a.list_objects("bk1", &ListRequest { max_keys: 1000, ..ListRequest::default() }).unwrap();
        let mut bytes = 0;
        for o in &page.objects {
            let got = get(&a, "bk1", &o.key);
            assert_eq!(<[u8; 32]>::from(Sha256::digest(&got)), o.sha256, "{} is whole", o.key);
            bytes += o.size;
        }
        assert_eq!(a.bucket("bk1").unwrap().stats, BucketStats { objects: page.objects.len() as u64, bytes });
        a.collect_garbage().unwrap();
        let check = a.check().unwrap();
        assert!(check.problems.is_empty(), "{:?}", check.problems);
        let files = a.blobs().files();
        let sealed: u64 = files.iter().filter(|f| !f.active).map(|f| f.len).sum();
        assert!(sealed <= bytes * 2 + (1 << 20), "{sealed} bytes in sealed files for {bytes} live");
    }
}

#[test]
fn check_store_reads_every_blob_and_names_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::with_db(Db::open(dir.path()).unwrap(), StoreOptions::default()).unwrap();
        let opts = ArtifactOptions::default().maintenance_interval(Duration::ZERO);
        let a = Artifacts::open(store, &blob_dir(dir.path()), opts).unwrap();
        a.create_bucket("bk1", None).unwrap();
        put(&a, "bk1", "k", &body(1, 300_000));
    }
    let healthy = crate::check_store(&cairn_engine::Check::new(), dir.path()).unwrap();
    assert!(healthy.is_healthy(), "{:?}", healthy.engine.problems);
    assert!(
        healthy.blobs == 1 && healthy.blob_bytes >= 300_000,
        "{} blobs, {} bytes",
        healthy.blobs,
        healthy.blob_bytes
    );
    let file = std::fs::read_dir(blob_dir(dir.path()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "blob"))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let damaged = crate::check_store(&cairn_engine::Check::new(), dir.path()).unwrap();
    assert!(!damaged.is_healthy());
    let problem = damaged.engine.problems.iter().map(ToString::to_string).find(|p| p.contains("artifacts")).unwrap();
    assert!(problem.contains(&file.display().to_string()), "{problem}");
}

#[test]
fn a_checkpoint_carries_every_object_it_lists() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::with_db(Db::open(dir.path().join("live")).unwrap(), StoreOptions::default()).unwrap();
    let opts =
        ArtifactOptions::default().maintenance_interval(Duration::ZERO).blob(BlobOptions::default().file_size(1 << 20));
    let a = Artifacts::open(store, &blob_dir(&dir.path().join("live")), opts).unwrap();
    a.create_bucket("bk1", None).unwrap();
    for i in 0..30u64 {
        put(&a, "bk1", &format!("k{i}"), &body(i, if i % 10 == 0 { 1_500_000 } else { 40_000 }));
    }
    let copy = dir.path().join("copy");
    let (info, files, bytes) = std::thread::scope(|s| {
        // Writers and a collector keep going while the copy is made.
        let busy = s.spawn(|| {
            for i in 0..20u64 {
                a.delete_object("bk1", &format!("k{i}")).unwrap();
                put(&a, "bk1", &format!("n{i}"), &body(100 + i, 30_000));
                a.collect_garbage().unwrap();
            }
        });
        let made = a.checkpoint(&copy).unwrap();
        busy.join().unwrap();
        made
    });
    assert!(files > 0 && bytes > 0 && info.dir == copy);
    drop(a);
    let healthy = crate::check_store(&cairn_engine::Check::new(), &copy).unwrap();
    assert!(healthy.is_healthy(), "{:?}", healthy.engine.problems);
    let store = Store::with_db(Db::open(&copy).unwrap(), StoreOptions::default()).unwrap();
    let opts = ArtifactOptions::default().maintenance_interval(Duration::ZERO);
    let restored = Artifacts::open(store, &blob_dir(&copy), opts).unwrap();
    let page = restored.list_objects("bk1", &ListRequest { max_keys: 1000, ..ListRequest::default() }).unwrap();
    // 30 objects at every moment, but between a deletion and the next put.
    assert!(page.objects.len() >= 29, "{} objects", page.objects.len());
    for o in page.objects {
        assert_eq!(<[u8; 32]>::from(Sha256::digest(get(&restored, "bk1", &o.key))), o.sha256, "{}", o.key);
    }
}

/// Every record of a collection: id, version and document.
fn records_of(a: &Artifacts, collection: &str) -> Vec<(String, u64, serde_json::Value)> {
    let snap = a.store().snapshot();
    snap.records(collection, None).unwrap().map(|r| r.unwrap()).map(|r| (r.id, r.version, r.doc)).collect()
}

fn read(mut reader: ObjectReader) -> Vec<u8> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn read_document_reads_an_exported_version_and_follows_moved_bytes() {
    let fs = MemStorage::new();
    let a = open_on(&fs, BlobOptions::default().file_size(64 << 10));
    a.create_bucket("bk1", None).unwrap();
    for i in 0..40u64 {
        put(&a, "bk1", &format!("k{i:02}"), &body(i, 20_000));
    }
    let exported = records_of(&a, OBJECTS);
    let meta = Artifacts::document_meta(&exported[0].2, exported[0].1).unwrap();
    assert_eq!((meta.bucket.as_str(), meta.key.as_str(), meta.size), ("bk1", "k00", 20_000));
    assert_eq!(meta.sha256, <[u8; 32]>::from(Sha256::digest(body(0, 20_000))));
    assert_eq!(read(a.read_document(&exported[0].2).unwrap().unwrap()), body(0, 20_000));
    // Most objects deleted: garbage collection moves the survivors' bytes; the documents read before the
    // move still find them.
    for i in (0..40u64).filter(|i| i % 8 != 0) {
        a.delete_object("bk1", &format!("k{i:02}")).unwrap();
    }
    let report = a.collect_garbage().unwrap();
    assert!(report.blobs_moved > 0, "{report:?}");
    for (id, _, doc) in exported.iter().filter(|(id, _, _)| a.head_object("bk1", &id[4..]).is_ok()) {
        let i: u64 = id[5..].parse().unwrap();
        assert_eq!(read(a.read_document(doc).unwrap().unwrap()), body(i, 20_000), "{id}");
    }
    // Overwritten and collected: the old version's bytes are gone.
    put(&a, "bk1", "k00", b"new");
    a.collect_garbage().unwrap();
    assert!(a.read_document(&exported[0].2).unwrap().is_none());
    // A deleted object's bytes are gone too once collected.
    assert!(a.read_document(&exported[1].2).unwrap().is_none());
    assert!(matches!(a.read_document(&serde_json::json!({"x": 1})), Err(ArtifactError::Internal(_))));
}

#[test]
fn restored_records_get_their_bytes_back_and_refuse_a_mismatch() {
    let (_src_dir, src) = open();
    src.create_bucket("bk1", Some("vision")).unwrap();
    let big = body(7, MIN_PART_SIZE as usize + 10);
    let id = src.create_multipart("bk1", "ckpt", PutOptions::default()).unwrap();
    let e1 = src.upload_part("bk1", "ckpt", &id, 1, &mut &big[..MIN_PART_SIZE as usize]).unwrap().etag;
    let e2 = src.upload_part("bk1", "ckpt", &id, 2, &mut &big[MIN_PART_SIZE as usize..]).unwrap().etag;
    src.complete_multipart("bk1", "ckpt", &id, &[(1, e1), (2, e2)]).unwrap();
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, b"small") as u32;
    put(&src, "bk1", "small", b"small");
    src.put_object(
        "bk1",
        "small",
        PutOptions { expected_crc32c: Some(crc), ..PutOptions::default() },
        &mut &b"small"[..],
    )
    .unwrap();
    src.copy_object("bk1", "small", "bk1", "copy", None).unwrap();

    // The records arrive as a restore writes them: as exported, versions kept, places emptied.
    let (_dir, dst) = open();
    dst.store()
        .transaction(|tx| {
            for collection in [BUCKETS, OBJECTS] {
                for (id, version, doc) in records_of(&src, collection) {
                    tx.restore_doc(collection, &id, version, portable_document(&doc))?;
                }
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(dst.bucket("bk1").unwrap().stats, BucketStats::default(), "no statistics written yet");
    let err = dst.restore_object_bytes("bk1", "small", &mut &b"smalL"[..]).unwrap_err();
    assert!(matches!(&err, ArtifactError::BadDigest(m) if m.contains("SHA-256")), "{err}");
    let err = dst.restore_object_bytes("bk1", "ckpt", &mut &big[1..]).unwrap_err();
    assert!(matches!(err, ArtifactError::BadDigest(_)), "{err}");
    assert!(a_reader_is_empty(&dst, "small"), "a refused body changes nothing");

    let restored = dst.restore_object_bytes("bk1", "ckpt", &mut &big[..]).unwrap();
    assert_eq!(restored, src.head_object("bk1", "ckpt").unwrap(), "metadata and version as exported");
    assert_eq!(get(&dst, "bk1", "ckpt"), big);
    dst.restore_object_bytes("bk1", "small", &mut &b"small"[..]).unwrap();
    assert_eq!(dst.head_object("bk1", "small").unwrap().version, 2);
    assert!(matches!(dst.share_object_bytes("bk1", "copy", "bk1", "ckpt"), Err(ArtifactError::Invalid(_))));
    dst.share_object_bytes("bk1", "copy", "bk1", "small").unwrap();
    assert_eq!(get(&dst, "bk1", "copy"), b"small");
    assert!(matches!(dst.restore_object_bytes("bk1", "absent", &mut &b""[..]), Err(ArtifactError::NoSuchKey { .. })));

    let totals = dst.rebuild_stats().unwrap();
    assert_eq!(totals, src.totals().unwrap());
    assert_eq!(dst.bucket("bk1").unwrap().stats, src.bucket("bk1").unwrap().stats);
    assert!(dst.check().unwrap().problems.is_empty());
    // The restored store works as any other: garbage collection keeps what the records point to.
    dst.collect_garbage().unwrap();
    assert_eq!(get(&dst, "bk1", "ckpt"), big);
}

/// Whether the object's reader yields nothing (its record points at no bytes yet).
fn a_reader_is_empty(a: &Artifacts, key: &str) -> bool {
    let (_, reader) = a.get_object("bk1", key, None).unwrap();
    read(reader).is_empty()
}

#[test]
fn rebuild_stats_recomputes_every_bucket_from_its_objects() {
    let (_dir, a) = open();
    a.create_bucket("bk1", None).unwrap();
    a.create_bucket("bk2", None).unwrap();
    a.create_bucket("empty", None).unwrap();
    for i in 0..300u64 {
        put(&a, if i % 3 == 0 { "bk2" } else { "bk1" }, &format!("k{i}"), &body(i, i as usize));
    }
    // Statistics gone wrong: an entry of changes that never happened, and one of a bucket that is gone
    // (written with a record, as entries are).
    a.commit(|tx| {
        let bucket = tx.get_doc(BUCKETS, "empty")?.unwrap();
        tx.restore_doc(BUCKETS, "empty", bucket.version, bucket.doc)?;
        stats::add(tx, "bk1", 5, 1_000);
        stats::add(tx, "empty", -2, 7);
        stats::add(tx, "gone", 1, 1);
        Ok(())
    })
    .unwrap();
    assert_ne!(a.bucket("bk1").unwrap().stats, BucketStats { objects: 200, bytes: 30_000 });
    let totals = a.rebuild_stats().unwrap();
    assert_eq!(totals, BucketStats { objects: 300, bytes: (0..300).sum() });
    assert_eq!(a.bucket("bk1").unwrap().stats, BucketStats { objects: 200, bytes: 30_000 });
    assert_eq!(a.bucket("bk2").unwrap().stats, BucketStats { objects: 100, bytes: 14_850 });
    assert_eq!(a.bucket("empty").unwrap().stats, BucketStats::default());
    assert_eq!(stats::sum_at(&a.store().db().snapshot(), "gone").unwrap().1, 0, "entries of a gone bucket dropped");
    // Writes after the rebuild add to it.
    a.delete_object("bk1", "k1").unwrap();
    put(&a, "empty", "x", b"xyz");
    assert_eq!(a.bucket("bk1").unwrap().stats, BucketStats { objects: 199, bytes: 29_999 });
    assert_eq!(a.bucket("empty").unwrap().stats, BucketStats { objects: 1, bytes: 3 });
    assert_eq!(a.rebuild_stats().unwrap(), BucketStats { objects: 300, bytes: (0..300).sum::<u64>() - 1 + 3 });
    assert_eq!(a.bucket("empty").unwrap().stats, BucketStats { objects: 1, bytes: 3 });
}

#[test]
fn portable_documents_empty_only_the_blob_pointers() {
    let doc = serde_json::json!({"bucket": "b", "key": "k", "sha256": "00", "segments": [[1, 2, 3]]});
    assert_eq!(portable_document(&doc), serde_json::json!({"bucket": "b", "key": "k", "sha256": "00", "segments": []}));
    let other = serde_json::json!({"name": "job"});
    assert_eq!(portable_document(&other), other);
}
