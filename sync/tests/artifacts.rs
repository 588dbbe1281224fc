//! Artifact objects' bytes carried by export, restore and verify, against moto's S3 server started for this
//! test binary. The scenarios share the server (one prefix each), so they run in one test function, in
//! order.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod support;

use std::io::Read;
use std::path::Path as FsPath;
use std::time::Duration;

use cairn_store::artifacts::{blob_dir, ArtifactOptions, Artifacts, BucketStats, PutOptions, OBJECTS, PARTS, UPLOADS};
use cairn_store::engine::BlobOptions;
use cairn_store::Store;
use cairn_sync::{
    export_objects, restore_objects, verify_objects, BlobCheck, ObjectExport, ObjectExportOptions, ObjectLocation,
    Progress, RestoreReport, RestoreTarget, SyncError,
};
use object_store::path::Path;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use support::{runtime, Moto, State};

const BUCKET: &str = "cairn-artifacts-test";
const BIG: usize = 20 << 20;

fn location(moto: &Moto, prefix: &str) -> ObjectLocation {
    moto.location(BUCKET, prefix)
}

/// A raw client of the same bucket, to look at and tamper with objects.
fn raw(moto: &Moto) -> object_store::aws::AmazonS3 {
    moto.raw(BUCKET)
}

/// Every blob under `prefix`: name → size.
async fn blobs_at(s3: &object_store::aws::AmazonS3, prefix: &str) -> Vec<(String, u64)> {
    use futures_util::TryStreamExt;
    let listed: Vec<_> = s3.list(Some(&Path::from(format!("{prefix}/blobs/sha256")))).try_collect().await.unwrap();
    let mut out: Vec<(String, u64)> = listed.into_iter().map(|m| (m.location.to_string(), m.size)).collect();
    out.sort();
    out
}

/// A store and its artifact store in `dir`, without a maintenance thread; blob files of 1 MiB, so that
/// large objects' files are sealed and collectable.
fn open(dir: &FsPath) -> (Store, Artifacts) {
    let store = Store::open(dir).unwrap();
    let opts =
        ArtifactOptions::default().maintenance_interval(Duration::ZERO).blob(BlobOptions::default().file_size(1 << 20));
    let artifacts = Artifacts::open(store.clone(), &blob_dir(dir), opts).unwrap();
    (store, artifacts)
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

/// A body of `n` bytes streamed from a generator: the 20 MiB object is never held whole by the writer.
struct Generated {
    x: u64,
    left: usize,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left);
        for b in &mut buf[..n] {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            *b = self.x as u8;
        }
        self.left -= n;
        Ok(n)
    }
}

fn put(a: &Artifacts, bucket: &str, key: &str, bytes: &[u8]) {
    a.put_object(bucket, key, PutOptions::default(), &mut &bytes[..]).unwrap();
}

fn get(a: &Artifacts, bucket: &str, key: &str) -> Vec<u8> {
    let (_, mut reader) = a.get_object(bucket, key, None).unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}

/// Every record as verification compares them (artifact objects without their blob pointers), without
/// the multipart uploads in progress, which a restore leaves out.
fn restorable_state(store: &Store) -> State {
    let snap = store.snapshot();
    let mut out = State::new();
    for spec in snap.collections().unwrap() {
        if spec.name == UPLOADS || spec.name == PARTS {
            continue;
        }
        for r in snap.records(&spec.name, None).unwrap() {
            let r = r.unwrap();
            let digest = cairn_sync::record_digest_in(&spec.name, r.version, &r.doc);
            out.insert((spec.name.clone(), r.id), (r.version, digest));
        }
    }
    out
}

async fn export(store: &Store, a: &Artifacts, loc: &ObjectLocation, opts: &ObjectExportOptions) -> ObjectExport {
    export_objects(store, Some(a), loc, opts, &Progress::hidden(), None).await.unwrap()
}

/// Restores into a new directory; returns it with its store, artifact store and the report.
async fn restore(
    loc: &ObjectLocation,
    target: RestoreTarget,
) -> Result<(tempfile::TempDir, Store, Artifacts, RestoreReport), SyncError> {
    let dir = tempfile::tempdir().unwrap();
    let (store, artifacts) = open(dir.path());
    let report = restore_objects(loc, target, &store, Some(&artifacts), &Progress::hidden()).await?;
    store.check_indexes().unwrap();
    Ok((dir, store, artifacts, report))
}

#[test]
fn artifact_bytes_travel_with_the_records() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let rt = runtime();
    rt.block_on(round_trip_and_incremental(&moto));
    rt.block_on(point_in_time_brings_back_the_objects_of_that_time(&moto));
    rt.block_on(bytes_gone_before_the_export(&moto));
    rt.block_on(altered_and_missing_blobs_are_found(&moto));
}

/// Small objects, a 20 MiB one (uploaded in parts), a copy and an unfinished multipart upload out and back;
/// then an incremental export that uploads only the new bytes.
async fn round_trip_and_incremental(moto: &Moto) {
    let dir = tempfile::tempdir().unwrap();
    let (src, a) = open(dir.path());
    support::populate(&src, 1_000);
    a.create_bucket("datasets", Some("vision")).unwrap();
    a.create_bucket("logs", None).unwrap();
    let mut small_bytes = 0u64;
    for i in 0..30u64 {
        let n = 1 + (i as usize * 2_311) % 65_536;
        put(&a, if i % 3 == 0 { "logs" } else { "datasets" }, &format!("part-{i:03}.bin"), &body(i, n));
        small_bytes += n as u64;
    }
    let big =
        a.put_object("datasets", "ckpt/model.pt", PutOptions::default(), &mut Generated { x: 77, left: BIG }).unwrap();
    a.copy_object("datasets", "part-001.bin", "logs", "copy-of-1.bin", None).unwrap();
    let upload = a.create_multipart("datasets", "unfinished", PutOptions::default()).unwrap();
    a.upload_part("datasets", "unfinished", &upload, 1, &mut &body(500, 1_000)[..]).unwrap();

    let loc = location(moto, "rt");
    let opts = ObjectExportOptions::default();
    let first = export(&src, &a, &loc, &opts).await;
    eprintln!("first export: {first:?}");
    assert_eq!(first.blobs_uploaded, 31, "30 small objects and the large one; the copy shares its bytes");
    assert_eq!(first.blob_bytes_uploaded, small_bytes + BIG as u64);
    assert_eq!((first.blobs_present, first.blobs_skipped), (1, 0));
    let s3 = raw(moto);
    let listed = blobs_at(&s3, "rt").await;
    assert_eq!(listed.len(), 31);
    let big_name = format!("rt/blobs/sha256/{}", hex::encode(big.sha256));
    assert!(listed.contains(&(big_name, BIG as u64)), "{listed:?}");
    let report = verify_objects(&src, &loc, BlobCheck::Sha256).await.unwrap();
    assert!(report.equal() && report.blobs == 32, "{report:?}");

    let (_restored_dir, restored, b, report) = restore(&loc, RestoreTarget::Latest).await.unwrap();
    eprintln!("restore: {report:?}");
    assert_eq!((report.artifact_objects, report.blobs_downloaded), (32, 31));
    assert_eq!(report.blob_bytes, small_bytes + BIG as u64);
    support::assert_same("restored records", &restorable_state(&src), &restorable_state(&restored));
    for bucket in ["datasets", "logs"] {
        assert_eq!(b.bucket(bucket).unwrap().stats, a.bucket(bucket).unwrap().stats, "{bucket}");
        let page =
            a.list_objects(bucket, &cairn_store::artifacts::ListRequest { max_keys: 1000, ..Default::default() });
        for o in page.unwrap().objects {
            assert_eq!(b.head_object(bucket, &o.key).unwrap(), o, "{bucket}/{}", o.key);
            let got = get(&b, bucket, &o.key);
            assert_eq!(<[u8; 32]>::from(Sha256::digest(&got)), o.sha256, "{bucket}/{}", o.key);
        }
    }
    assert!(b.list_uploads("datasets").unwrap().is_empty(), "uploads in progress are not restored");
    assert!(b.check().unwrap().problems.is_empty());
    b.delete_object("logs", "copy-of-1.bin").unwrap();
    assert_eq!(get(&b, "datasets", "part-001.bin"), get(&a, "datasets", "part-001.bin"), "shared bytes stay");

    // Incremental: three new objects, one overwritten, one deleted, one copied; only new bytes go up.
    let mut new_bytes = 0u64;
    for i in 100..103u64 {
        let bytes = body(i, 10_000 + i as usize);
        new_bytes += bytes.len() as u64;
        put(&a, "datasets", &format!("new-{i}"), &bytes);
    }
    let overwrite = body(200, 3_000_000);
    new_bytes += overwrite.len() as u64;
    put(&a, "logs", "part-000.bin", &overwrite);
    a.delete_object("datasets", "part-002.bin").unwrap();
    a.copy_object("datasets", "ckpt/model.pt", "logs", "model-copy.pt", None).unwrap();
    let second = export(&src, &a, &loc, &opts).await;
    eprintln!("incremental export: {second:?}");
    assert!(second.snapshots.is_empty());
    assert_eq!((second.blobs_uploaded, second.blob_bytes_uploaded), (4, new_bytes));
    assert_eq!(second.blobs_present, 1, "the copy of the large object: its bytes are there");
    assert_eq!(blobs_at(&s3, "rt").await.len(), 35);
    let again = export(&src, &a, &loc, &opts).await;
    assert_eq!((again.segments, again.blobs_uploaded), (0, 0), "nothing new: nothing sent");
    let (_d, restored, b, _) = restore(&loc, RestoreTarget::Latest).await.unwrap();
    support::assert_same("after the incremental export", &restorable_state(&src), &restorable_state(&restored));
    assert_eq!(get(&b, "logs", "part-000.bin"), overwrite);
    assert_eq!(get(&b, "logs", "model-copy.pt").len(), BIG);
    assert_eq!(b.totals().unwrap(), a.totals().unwrap());

    // Without the artifact store, an export of a store holding objects refuses instead of leaving bytes out.
    let err = export_objects(&src, None, &location(moto, "no-artifacts"), &opts, &Progress::hidden(), None)
        .await
        .unwrap_err();
    assert!(matches!(&err, SyncError::Invalid(m) if m.contains("artifact store")), "{err}");
}

/// Restores to a sequence bring back exactly the objects of that moment: one deleted later is back (with
/// its bytes, though the source has collected them), one created later is absent.
async fn point_in_time_brings_back_the_objects_of_that_time(moto: &Moto) {
    let dir = tempfile::tempdir().unwrap();
    let (src, a) = open(dir.path());
    a.create_bucket("runs", None).unwrap();
    put(&a, "runs", "kept", &body(1, 5_000));
    put(&a, "runs", "deleted-later", &body(2, 1_500_000));
    let loc = location(moto, "pitr");
    let opts = ObjectExportOptions::default().segment_changes(3);
    export(&src, &a, &loc, &opts).await;
    put(&a, "runs", "made-between", &body(3, 7_000));
    let between = src.db().last_sequence();
    a.delete_object("runs", "deleted-later").unwrap();
    put(&a, "runs", "created-later", &body(4, 9_000));
    put(&a, "runs", "kept", &body(5, 6_000));
    a.collect_garbage().unwrap();
    let shipped = export(&src, &a, &loc, &opts).await;
    assert!(shipped.segments >= 2 && shipped.blobs_uploaded == 3, "{shipped:?}");

    let (_d, _store, b, report) = restore(&loc, RestoreTarget::Seq(between)).await.unwrap();
    assert_eq!(report.seq, between);
    assert_eq!(get(&b, "runs", "deleted-later"), body(2, 1_500_000), "deleted later: back, with its bytes");
    assert_eq!(get(&b, "runs", "made-between"), body(3, 7_000));
    assert_eq!(get(&b, "runs", "kept"), body(1, 5_000), "the version of that time");
    assert!(b.head_object("runs", "created-later").is_err(), "created later: absent");
    assert_eq!(b.bucket("runs").unwrap().stats, BucketStats { objects: 3, bytes: 1_512_000 });

    let (_d, _store, b, _) = restore(&loc, RestoreTarget::Latest).await.unwrap();
    assert!(b.head_object("runs", "deleted-later").is_err());
    assert_eq!(get(&b, "runs", "created-later"), body(4, 9_000));
    assert_eq!(get(&b, "runs", "kept"), body(5, 6_000));
    assert_eq!(b.bucket("runs").unwrap().stats, a.bucket("runs").unwrap().stats);
}

/// Bytes collected before the export read them: skipped when a later version of the object is exported
/// (counted), a clear failure otherwise, until a new snapshot supersedes them.
async fn bytes_gone_before_the_export(moto: &Moto) {
    let dir = tempfile::tempdir().unwrap();
    let (src, a) = open(dir.path());
    a.create_bucket("ckpts", None).unwrap();
    put(&a, "ckpts", "base", &body(10, 2_000));
    let loc = location(moto, "gone");
    let opts = ObjectExportOptions::default();
    export(&src, &a, &loc, &opts).await;
    // Written, overwritten and collected before the next export: the later version is exported instead.
    put(&a, "ckpts", "step", &body(11, 1_500_000));
    put(&a, "ckpts", "step", &body(12, 1_500_000));
    assert!(a.collect_garbage().unwrap().files_removed > 0);
    let shipped = export(&src, &a, &loc, &opts).await;
    assert_eq!((shipped.blobs_uploaded, shipped.blobs_skipped), (1, 1), "{shipped:?}");
    // Written, deleted and collected: no later version, so this part of the chain cannot be shipped.
    put(&a, "ckpts", "tmp", &body(13, 1_500_000));
    a.delete_object("ckpts", "tmp").unwrap();
    a.collect_garbage().unwrap();
    let err = export_objects(&src, Some(&a), &loc, &opts, &Progress::hidden(), None).await.unwrap_err();
    assert!(matches!(&err, SyncError::BytesGone(m) if m.contains("ckpts/tmp")), "{err}");
    // A new snapshot supersedes it: the pending changes are shipped without those bytes, then the snapshot.
    let fresh = export(&src, &a, &loc, &opts.clone().snapshot(true)).await;
    assert_eq!((fresh.snapshots.len(), fresh.blobs_skipped), (1, 1), "{fresh:?}");
    let (_d, restored, b, _) = restore(&loc, RestoreTarget::Latest).await.unwrap();
    support::assert_same("after the new snapshot", &restorable_state(&src), &restorable_state(&restored));
    assert_eq!(get(&b, "ckpts", "step"), body(12, 1_500_000));
}

/// A blob whose bytes were altered at the location fails the restore, naming the object; verify finds it
/// when hashing, and finds a missing blob from the listing alone.
async fn altered_and_missing_blobs_are_found(moto: &Moto) {
    let dir = tempfile::tempdir().unwrap();
    let (src, a) = open(dir.path());
    a.create_bucket("models", None).unwrap();
    put(&a, "models", "resnet.pt", &body(20, 300_000));
    put(&a, "models", "vit.pt", &body(21, 2_000));
    let meta = a.head_object("models", "resnet.pt").unwrap();
    let loc = location(moto, "tamper");
    export(&src, &a, &loc, &ObjectExportOptions::default()).await;
    assert!(verify_objects(&src, &loc, BlobCheck::Sha256).await.unwrap().equal());

    let s3 = raw(moto);
    let path = Path::from(format!("tamper/blobs/sha256/{}", hex::encode(meta.sha256)));
    let original = s3.get(&path).await.unwrap().bytes().await.unwrap();
    let mut altered = original.to_vec();
    altered[150_000] ^= 0x04;
    s3.put(&path, altered.into()).await.unwrap();
    let err = restore(&loc, RestoreTarget::Latest).await.map(|_| ()).unwrap_err();
    assert!(matches!(err, SyncError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("models/resnet.pt") && err.to_string().contains("checksum mismatch"), "{err}");
    assert!(verify_objects(&src, &loc, BlobCheck::Listed).await.unwrap().equal(), "same size: a listing cannot tell");
    let report = verify_objects(&src, &loc, BlobCheck::Sha256).await.unwrap();
    assert_eq!(report.differences, 1, "{report:?}");
    assert_eq!((report.listed[0].collection.as_str(), report.listed[0].id.as_str()), (OBJECTS, "models/resnet.pt"));
    assert!(report.listed[0].what.contains("do not match their sha256"), "{}", report.listed[0]);

    s3.delete(&path).await.unwrap();
    let report = verify_objects(&src, &loc, BlobCheck::Listed).await.unwrap();
    assert_eq!(report.differences, 1, "{report:?}");
    assert!(report.listed[0].what.starts_with("bytes missing at the location"), "{}", report.listed[0]);
    let err = restore(&loc, RestoreTarget::Latest).await.map(|_| ()).unwrap_err();
    assert!(matches!(&err, SyncError::Gap(m) if m.contains("models/resnet.pt")), "{err}");
    // A new snapshot's listing finds the bytes absent and uploads them again.
    let fresh = export(&src, &a, &loc, &ObjectExportOptions::default().snapshot(true)).await;
    assert_eq!(fresh.blobs_uploaded, 1);
    s3.put(&path, original.into()).await.unwrap();
    assert!(verify_objects(&src, &loc, BlobCheck::Sha256).await.unwrap().equal());
}
