//! Export, restore and verification against moto's S3 server, started for this test binary. Every scenario
//! shares one server (one prefix or bucket each), so they run in one test function, in order.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod support;

use std::time::{Duration, Instant};

use cairn_store::metrics::{HistoryRequest, MetricPoint, Metrics};
use cairn_sync::{
    export_objects, restore_objects, verify_objects, BlobCheck, ObjectExportOptions, ObjectLocation, Progress,
    RestoreTarget, SyncError,
};
use object_store::path::Path;
use object_store::ObjectStore;
use support::{
    assert_same, assert_same_metrics, log_metrics, metric_state, mutate, open, populate, runtime, state, MetricState,
    Moto, State,
};

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
    let t = Instant::now();
    rt.block_on(metrics_in_snapshots(&moto));
    timed("metrics", t);
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

/// A restore into a new store, and its metrics.
async fn restore_metrics(
    loc: &ObjectLocation,
    target: RestoreTarget,
) -> (MetricState, cairn_sync::RestoreReport, tempfile::TempDir, cairn_store::Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let report = restore_objects(loc, target, &store, None, &Progress::hidden()).await.unwrap();
    (metric_state(&store), report, dir, store)
}

/// Metrics in snapshots: out in chunks (long series cut across lines and chunks) and back bit for bit.
/// Segments carry none: a restore gets those of its snapshot, and `verify` lists the series logged since
/// until a new snapshot ships them. A flipped byte in a metrics chunk fails the restore; `verify` finds a
/// changed value and a missing point; an export can leave metrics out.
async fn metrics_in_snapshots(moto: &Moto) {
    let dir = tempfile::tempdir().unwrap();
    let src = open(dir.path());
    populate(&src, 200);
    let logged = log_metrics(&src);
    let loc = location(moto, "metrics");
    let opts = ObjectExportOptions::default().chunk_points(1_000);
    let report = export_objects(&src, None, &loc, &opts, &Progress::hidden(), None).await.unwrap();
    assert_eq!((report.snapshot_metric_series, report.snapshot_metric_points), (5, logged));
    assert!(!report.metrics_changed);
    let first = report.snapshots[0];
    let s3 = raw(moto);
    let chunks: Vec<String> = names(&s3, &format!("metrics/snapshots/{first:020}"))
        .await
        .into_iter()
        .filter(|n| n.contains("/metrics-"))
        .collect();
    assert_eq!(chunks.len(), logged.div_ceil(1000) as usize, "{chunks:?}");
    assert!(chunks[0].ends_with("/metrics-000000.jsonl.zst"), "{chunks:?}");

    let at_first = metric_state(&src);
    let (got, report, _, _) = restore_metrics(&loc, RestoreTarget::Latest).await;
    assert_same_metrics("restored", &at_first, &got);
    assert_eq!((report.with_metrics, report.metric_series, report.metric_points), (true, 5, logged));
    let verified = verify_objects(&src, &loc, BlobCheck::Listed).await.unwrap();
    assert!(verified.equal() && verified.metrics, "{verified:?}");
    assert_eq!((verified.local_points, verified.remote_points), (logged, logged));

    // Logged after the snapshot: segments do not carry it, the export says so, verify finds it.
    Metrics::new(src.clone()).log("run-a", &[MetricPoint::new("loss", 5000, 0, 1.0)]).unwrap();
    mutate(&src, 200, 7, 1);
    let report = export_objects(&src, None, &loc, &opts, &Progress::hidden(), None).await.unwrap();
    assert!(report.snapshots.is_empty() && report.segments >= 1 && report.metrics_changed, "{report:?}");
    let verified = verify_objects(&src, &loc, BlobCheck::Listed).await.unwrap();
    assert_eq!(verified.differences, 0);
    let listed: Vec<String> = verified.listed_series.iter().map(ToString::to_string).collect();
    assert_eq!(listed, ["metrics run-a/loss: 3201 points != 3200"]);
    let (got, report, _, _) = restore_metrics(&loc, RestoreTarget::Latest).await;
    assert_same_metrics("restored after the segments", &at_first, &got);
    assert!(report.changes > 0);
    // A new snapshot ships them; a restore to the first snapshot still gets the metrics as they were then.
    let report =
        export_objects(&src, None, &loc, &opts.clone().snapshot(true), &Progress::hidden(), None).await.unwrap();
    assert!(report.snapshots.len() == 1 && !report.metrics_changed, "{report:?}");
    assert!(verify_objects(&src, &loc, BlobCheck::Listed).await.unwrap().equal());
    let (got, _, _, _) = restore_metrics(&loc, RestoreTarget::Latest).await;
    assert_same_metrics("restored from the second snapshot", &metric_state(&src), &got);
    let (got, _, _, _) = restore_metrics(&loc, RestoreTarget::Seq(first)).await;
    assert_same_metrics("restored to the first snapshot", &at_first, &got);

    // A store differing from the location in one value's bits and by one point.
    let (_, _, _other_dir, other) = restore_metrics(&loc, RestoreTarget::Latest).await;
    let m = Metrics::new(other.clone());
    let relog = |run: &str, key: &str, edit: &dyn Fn(&mut Vec<MetricPoint>)| {
        let mut points: Vec<MetricPoint> = m
            .history(&HistoryRequest::new(run, key))
            .unwrap()
            .points
            .iter()
            .map(|p| MetricPoint::new(key, p.step, p.timestamp_ms, p.value))
            .collect();
        edit(&mut points);
        m.delete_run(run).unwrap();
        m.log(run, &points).unwrap();
    };
    relog("run-b", "loss", &|p| p[10].value = f64::from_bits(p[10].value.to_bits() ^ 1));
    relog("run/c", "grad norm", &|p| drop(p.remove(1)));
    let verified = verify_objects(&other, &loc, BlobCheck::Listed).await.unwrap();
    let listed: Vec<String> = verified.listed_series.iter().map(ToString::to_string).collect();
    assert_eq!(listed, ["metrics run-b/loss: points differ", "metrics run/c/grad norm: 2 points != 3"]);
    // A restore does not add metrics to a store that has some.
    let err = restore_objects(&loc, RestoreTarget::Latest, &other, None, &Progress::hidden()).await.unwrap_err();
    assert!(matches!(&err, SyncError::Invalid(m) if m.contains("already holds")), "{err}");

    // A flipped byte in a metrics chunk fails the restore and verify.
    let chunk = Path::from(chunks[2].as_str());
    let original = s3.get(&chunk).await.unwrap().bytes().await.unwrap();
    let mut bad = original.to_vec();
    let at = bad.len() / 2;
    bad[at] ^= 0x01;
    s3.put(&chunk, bad.into()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = restore_objects(&loc, RestoreTarget::Seq(first), &open(dir.path()), None, &Progress::hidden()).await;
    assert!(matches!(&err, Err(SyncError::Corrupt { reason, .. }) if reason.contains("checksum mismatch")), "{err:?}");
    s3.put(&chunk, original.into()).await.unwrap();

    // Without metrics: none in the snapshot, none compared or restored.
    let plain = location(moto, "nometrics");
    let report =
        export_objects(&src, None, &plain, &opts.clone().metrics(false), &Progress::hidden(), None).await.unwrap();
    assert_eq!(report.snapshot_metric_series, 0);
    let verified = verify_objects(&src, &plain, BlobCheck::Listed).await.unwrap();
    assert!(verified.equal() && !verified.metrics, "{verified:?}");
    let (got, report, _, _) = restore_metrics(&plain, RestoreTarget::Latest).await;
    assert!(got.is_empty() && !report.with_metrics);
}
