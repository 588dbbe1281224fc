//! Export, restore and verification against moto's S3 server, started for this test binary. Every scenario
//! shares one server (one prefix or bucket each), so they run in one test function, in order.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod support;

use std::time::{Duration, Instant};

use cairn_sync::{
    export_objects, restore_objects, verify_objects, BlobCheck, ObjectExportOptions, ObjectLocation, Progress,
    RestoreTarget, SyncError,
};
use object_store::path::Path;
use object_store::ObjectStore;
use support::{assert_same, mutate, open, populate, runtime, state, Moto, State};

const RECORDS: usize = 100_000;
const BUCKET: &str = "cairn-test";

fn location(moto: &Moto, prefix: &str) -> ObjectLocation {
    moto.location(BUCKET, prefix)
}

/// A raw client of the same bucket, to look at and tamper with objects.
fn raw(moto: &Moto) -> object_store::aws::AmazonS3 {
    moto.raw(BUCKET)
}

async fn names(s3: &object_store::aws::AmazonS3, prefix: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let listed: Vec<_> = s3.list(Some(&Path::from(prefix))).try_collect().await.unwrap();
    let mut names: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
    names.sort();
    names
}

async fn restore(loc: &ObjectLocation, target: RestoreTarget) -> Result<(State, cairn_sync::RestoreReport), SyncError> {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let report = restore_objects(loc, target, &store, None, &Progress::hidden()).await?;
    store.check_indexes().unwrap();
    Ok((state(&store), report))
}

#[test]
fn object_store_export_restore_verify() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let rt = runtime();
    let timed = |name: &str, started: Instant| eprintln!("{name}: {:?}", started.elapsed());
    let t = Instant::now();
    rt.block_on(round_trip_100k(&moto));
    timed("round trip", t);
    let t = Instant::now();
    rt.block_on(point_in_time(&moto));
    timed("point in time", t);
    let t = Instant::now();
    rt.block_on(tampering_and_gaps_fail_loudly(&moto));
    rt.block_on(retention_keeps_the_newest_snapshots(&moto));
    rt.block_on(follow_ships_new_changes(&moto));
    timed("tamper, retention, follow", t);
}

/// 100k records out as a snapshot (in multipart chunks) and change segments, back identical.
async fn round_trip_100k(moto: &Moto) {
    let dir = tempfile::tempdir().unwrap();
    let src = open(dir.path());
    populate(&src, RECORDS);
    let loc = location(moto, "rt");
    // Chunks of 25k records are about 200 KB compressed: over the threshold, so uploaded in parts.
    let opts = ObjectExportOptions::default().chunk_records(25_000).multipart_threshold(64 * 1024);
    let started = Instant::now();
    let report = export_objects(&src, None, &loc, &opts, &Progress::hidden(), None).await.unwrap();
    eprintln!("export: {report:?} in {:?}", started.elapsed());
    assert_eq!(report.snapshot_records, (RECORDS + RECORDS / 10) as u64);
    assert_eq!(report.segments, 0);
    let snapshot_seq = report.snapshots[0];
    let made = mutate(&src, RECORDS, 41, 1);
    let last = src.changes_since(snapshot_seq, usize::MAX).unwrap().last().unwrap().seq;
    let shipped = export_objects(&src, None, &loc, &opts, &Progress::hidden(), None).await.unwrap();
    assert_eq!((shipped.snapshots.len(), shipped.changes), (0, made as u64));

    let s3 = raw(moto);
    let objects = names(&s3, "rt").await;
    let chunks = objects.iter().filter(|n| n.starts_with("rt/snapshots/") && n.ends_with(".jsonl.zst")).count();
    assert_eq!(chunks, 4 + 1, "4 chunks of jobs, 1 of notes: {objects:?}");
    assert!(objects.contains(&format!("rt/snapshots/{snapshot_seq:020}/manifest.json")));

    let started = Instant::now();
    let (latest, report) = restore(&loc, RestoreTarget::Latest).await.unwrap();
    eprintln!("restore: {report:?} in {:?}", started.elapsed());
    assert_same("latest restore", &state(&src), &latest);
    assert_eq!(report.seq, last);
    assert_eq!(report.changes, made as u64);
    assert!(verify_objects(&src, &loc, BlobCheck::Listed).await.unwrap().equal());
}

/// Restores to a sequence inside a segment, at the end of a round of changes, and to a time land exactly
/// there; before the first snapshot or past the end of the chain there is nothing to land on.
async fn point_in_time(moto: &Moto) {
    const N: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let src = open(dir.path());
    populate(&src, N);
    let loc = location(moto, "pitr");
    let opts = ObjectExportOptions::default().segment_changes(40);
    let report = export_objects(&src, None, &loc, &opts, &Progress::hidden(), None).await.unwrap();
    let snapshot_seq = report.snapshots[0];

    // Rounds of changes, with the state (and a time) after each.
    let mut checkpoints: Vec<(u64, i64, State)> = Vec::new();
    let mut all_changes = Vec::new();
    for round in 1..=4 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let before = src.db().last_sequence();
        mutate(&src, N, 41 + round, round);
        let changes = src.changes_since(before, usize::MAX).unwrap();
        let last = changes.last().unwrap();
        checkpoints.push((last.seq, last.at_ms, state(&src)));
        all_changes.extend(changes);
        let shipped = export_objects(&src, None, &loc, &opts, &Progress::hidden(), None).await.unwrap();
        assert!(shipped.snapshots.is_empty());
        assert!(shipped.segments >= 2, "{shipped:?}");
    }

    // Exactly at each checkpoint (a segment boundary or not), and at its time.
    for (seq, at, expected) in &checkpoints {
        let (got, report) = restore(&loc, RestoreTarget::Seq(*seq)).await.unwrap();
        assert_eq!(report.seq, *seq);
        assert_same(&format!("restore to seq {seq}"), expected, &got);
        let (got, _) = restore(&loc, RestoreTarget::Time(*at)).await.unwrap();
        assert_same(&format!("restore to time {at}"), expected, &got);
    }
    // In the middle of a round: the state at round 1's end plus round 2's changes up to the target.
    let (first_end, _, first_state) = &checkpoints[0];
    let target = first_end + (checkpoints[1].0 - first_end) / 2;
    let mut expected = first_state.clone();
    for c in all_changes.iter().filter(|c| c.seq > *first_end && c.seq <= target) {
        let key = (c.collection.clone(), c.id.clone());
        match &c.doc {
            Some(doc) => expected.insert(key, (c.version, cairn_sync::record_digest(c.version, doc))),
            None => expected.remove(&key),
        };
    }
    let (got, report) = restore(&loc, RestoreTarget::Seq(target)).await.unwrap();
    assert_eq!(report.seq, target);
    assert_eq!(report.changes, all_changes.iter().filter(|c| c.seq <= target).count() as u64);
    assert_same(&format!("restore to seq {target}, inside a segment"), &expected, &got);
    // Before the first snapshot there is nothing to restore from; past the end of the chain is a gap.
    assert!(matches!(restore(&loc, RestoreTarget::Seq(snapshot_seq - 1)).await, Err(SyncError::Gap(_))));
    let end = checkpoints.last().unwrap().0;
    assert!(matches!(restore(&loc, RestoreTarget::Seq(end + 5)).await, Err(SyncError::Gap(_))));
}

/// A flipped byte in a chunk or a segment, an edited manifest or a missing segment each fail the restore.
async fn tampering_and_gaps_fail_loudly(moto: &Moto) {
    let dir = tempfile::tempdir().unwrap();
    let src = open(dir.path());
    populate(&src, 3_000);
    let loc = location(moto, "tamper");
    let opts = ObjectExportOptions::default().segment_changes(50);
    export_objects(&src, None, &loc, &opts, &Progress::hidden(), None).await.unwrap();
    mutate(&src, 3_000, 7, 1);
    export_objects(&src, None, &loc, &opts, &Progress::hidden(), None).await.unwrap();
    assert!(restore(&loc, RestoreTarget::Latest).await.is_ok());
    let s3 = raw(moto);
    let objects = names(&s3, "tamper").await;
    let segments: Vec<_> = objects.iter().filter(|n| n.starts_with("tamper/segments/")).cloned().collect();
    assert!(segments.len() >= 5);
    let chunk = objects.iter().find(|n| n.ends_with("000000.jsonl.zst") && n.contains("/jobs/")).unwrap().clone();
    let manifest = objects.iter().find(|n| n.ends_with("manifest.json")).unwrap().clone();

    let flip = |name: String| {
        let s3 = &s3;
        async move {
            let path = Path::from(name.as_str());
            let original = s3.get(&path).await.unwrap().bytes().await.unwrap();
            let mut bad = original.to_vec();
            let at = bad.len() / 2;
            bad[at] ^= 0x20;
            s3.put(&path, bad.into()).await.unwrap();
            original
        }
    };
    let restore_original = |name: String, bytes: bytes::Bytes| {
        let s3 = &s3;
        async move { s3.put(&Path::from(name.as_str()), bytes.into()).await.unwrap() }
    };
    for name in [chunk, segments[2].clone(), manifest] {
        let original = flip(name.clone()).await;
        let err = restore(&loc, RestoreTarget::Latest).await.unwrap_err();
        assert!(matches!(err, SyncError::Corrupt { .. }), "{name}: {err}");
        assert!(err.to_string().contains("checksum mismatch"), "{name}: {err}");
        let err = verify_objects(&src, &loc, BlobCheck::Listed).await.unwrap_err();
        assert!(matches!(err, SyncError::Corrupt { .. }), "{err}");
        restore_original(name, original).await;
    }
    // A segment removed from the middle of the chain.
    let gone = segments[3].clone();
    let kept = s3.get(&Path::from(gone.as_str())).await.unwrap().bytes().await.unwrap();
    s3.delete(&Path::from(gone.as_str())).await.unwrap();
    let err = restore(&loc, RestoreTarget::Latest).await.unwrap_err();
    assert!(matches!(&err, SyncError::Gap(m) if m.contains("no segment starts at seq")), "{err}");
    // A segment replaced by another with a valid checksum but a different predecessor hash.
    s3.put(&Path::from(gone.as_str()), kept.into()).await.unwrap();
    assert!(restore(&loc, RestoreTarget::Latest).await.is_ok());
}

/// With `keep_snapshots(2)`, a third snapshot deletes the first and the segments before the second; the
/// newest state still restores, the deleted one no longer does.
async fn retention_keeps_the_newest_snapshots(moto: &Moto) {
    let dir = tempfile::tempdir().unwrap();
    let src = open(dir.path());
    populate(&src, 2_000);
    let loc = location(moto, "retain");
    let base = ObjectExportOptions::default().segment_changes(100).keep_snapshots(Some(2));
    let mut snapshots = Vec::new();
    for round in 1..=3 {
        let opts = base.clone().snapshot(round > 1);
        let report = export_objects(&src, None, &loc, &opts, &Progress::hidden(), None).await.unwrap();
        snapshots.extend(report.snapshots);
        mutate(&src, 2_000, 9, round);
        export_objects(&src, None, &loc, &base, &Progress::hidden(), None).await.unwrap();
    }
    assert_eq!(snapshots.len(), 3);
    let s3 = raw(moto);
    let objects = names(&s3, "retain").await;
    let manifests: Vec<_> = objects.iter().filter(|n| n.ends_with("manifest.json")).collect();
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    assert!(!objects.iter().any(|n| n.contains(&format!("{:020}", snapshots[0]))));
    let oldest_segment_after = objects
        .iter()
        .filter_map(|n| n.strip_prefix("retain/segments/"))
        .map(|n| n[..20].parse::<u64>().unwrap())
        .min()
        .unwrap();
    assert!(oldest_segment_after >= snapshots[0]);
    let (latest, _) = restore(&loc, RestoreTarget::Latest).await.unwrap();
    assert_same("after retention", &state(&src), &latest);
    assert!(matches!(restore(&loc, RestoreTarget::Seq(snapshots[1] - 1)).await, Err(SyncError::Gap(_))));
}

/// `follow` ships changes while they happen and stops when asked.
async fn follow_ships_new_changes(moto: &Moto) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    populate(&store, 1_000);
    let loc = location(moto, "follow");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opts = ObjectExportOptions::default().follow(true).poll(Duration::from_millis(50));
    let task = {
        let (store, loc) = (store.clone(), loc.clone());
        tokio::spawn(async move { export_objects(&store, None, &loc, &opts, &Progress::hidden(), Some(stop_rx)).await })
    };
    let s3 = raw(moto);
    let started = Instant::now();
    while !names(&s3, "follow/snapshots").await.iter().any(|n| n.ends_with("manifest.json")) {
        assert!(started.elapsed() < Duration::from_secs(60), "the follower never wrote its snapshot");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let jobs = store.collection_dyn("jobs").unwrap();
    let mut lags = Vec::new();
    for i in 0..5 {
        let seq = jobs.upsert("job-0000003", support::job(3, 20 + i)).unwrap().seq;
        let started = Instant::now();
        loop {
            let shipped = names(&s3, "follow/segments").await.iter().any(|n| n.contains(&format!("-{seq:020}-")));
            if shipped {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "seq {seq} never shipped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        lags.push(started.elapsed());
    }
    eprintln!("follow lags: {lags:?}");
    stop_tx.send(true).unwrap();
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.changes, 5);
    assert!(verify_objects(&store, &loc, BlobCheck::Listed).await.unwrap().equal());
}
