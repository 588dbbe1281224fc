//! `import s3`: the latest snapshot at or before the target (its records, then its metrics), then the
//! chained segments up to it, every object checked against its checksum and every link of the chain against
//! its neighbour; then the bytes of the artifact objects of the restored state, each checked against its
//! SHA-256.

use std::time::{Duration, Instant};

use cairn_store::artifacts::Artifacts;
use cairn_store::metrics::Point;
use cairn_store::{ChangeOp, Store};

use super::blobs::restore_blobs;
use super::export::{list_segments, list_snapshots};
use super::layout::{
    decode_manifest, decode_segment, lines, manifest_name, open_checked, snapshot_dir, Manifest, MetricsLine,
    SegmentName, SnapshotLine,
};
use super::location::ObjectLocation;
use super::sink::{Sink, StoreSink};
use crate::error::SyncError;
use crate::progress::{json_len, Progress};

/// How far a restore goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreTarget {
    /// Everything the location holds: the newest snapshot and every segment after it.
    Latest,
    /// The state right after commit sequence `n`: the newest snapshot at or before `n`, then every change
    /// with a sequence up to `n`. Fails if the location's changes end before `n`.
    Seq(u64),
    /// The state at a time (ms since the Unix epoch): the newest snapshot taken at or before it, then the
    /// commits made at or before it (by their commit time).
    Time(i64),
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreReport {
    /// The snapshot it started from.
    pub snapshot_seq: u64,
    /// The source sequence the restored state corresponds to.
    pub seq: u64,
    /// Records read from the snapshot.
    pub snapshot_records: u64,
    /// Changes replayed from segments.
    pub changes: u64,
    /// Segments read.
    pub segments: u64,
    /// Bytes downloaded (compressed).
    pub downloaded: u64,
    /// Bytes of documents restored, as JSON.
    pub bytes: u64,
    /// Artifact objects given their bytes.
    pub artifact_objects: u64,
    /// Distinct blobs downloaded for them (objects with the same content share one).
    pub blobs_downloaded: u64,
    /// Bytes of those blobs.
    pub blob_bytes: u64,
    /// The snapshot carries metrics (exports leave them out with `metrics(false)`; snapshots written
    /// before Cairn exported metrics have none).
    pub with_metrics: bool,
    /// Metric series read from the snapshot.
    pub metric_series: u64,
    /// Metric points read from the snapshot.
    pub metric_points: u64,
    /// Time spent.
    pub elapsed: Duration,
}

/// Restores the state `target` names from `location` into `store`, which must hold no records and no metrics
/// yet (its collections, if any, are empty: those of a new artifact store, say). Any missing object,
/// checksum mismatch or break in the segment chain fails the restore. The metrics are those of the snapshot
/// the restore starts from (segments carry none), bit for bit.
///
/// `artifacts` is the artifact store of `store`: once the records are in, every artifact object gets its
/// bytes from the location, checked against its SHA-256, and every bucket's statistics are recomputed.
/// Multipart uploads in progress (`_artifact_uploads`, `_artifact_parts`) are not restored. Without it, a
/// restore that meets an artifact object fails.
pub async fn restore_objects(
    location: &ObjectLocation,
    target: RestoreTarget,
    store: &Store,
    artifacts: Option<&Artifacts>,
    progress: &Progress,
) -> Result<RestoreReport, SyncError> {
    let snap = store.snapshot();
    for spec in snap.collections()? {
        if snap.records(&spec.name, None)?.next().is_some() {
            return Err(SyncError::invalid(format!(
                "{}: the destination store already holds records (in {}); restore into a new, empty data directory",
                store.db().path().display(),
                spec.name
            )));
        }
    }
    if crate::metrics::has_metrics(store)? {
        return Err(SyncError::invalid(format!(
            "{}: the destination store already holds metrics; restore into a new, empty data directory",
            store.db().path().display()
        )));
    }
    let started = Instant::now();
    let mut sink = StoreSink::new(store, artifacts.is_some());
    let mut report = replay(location, target, &mut sink, progress).await?;
    if let Some(artifacts) = artifacts {
        restore_blobs(location, artifacts, progress, &mut report).await?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Reads the snapshot and segments `target` needs from `location` into `sink`.
pub(crate) async fn replay(
    location: &ObjectLocation,
    target: RestoreTarget,
    sink: &mut impl Sink,
    progress: &Progress,
) -> Result<RestoreReport, SyncError> {
    let started = Instant::now();
    let mut report = RestoreReport::default();
    let manifest = choose_snapshot(location, target, &mut report).await?;
    load_snapshot(location, &manifest, sink, progress, &mut report).await?;
    report.snapshot_seq = manifest.seq;
    report.seq = manifest.seq;
    replay_segments(location, target, manifest.seq, sink, progress, &mut report).await?;
    sink.finish()?;
    if let RestoreTarget::Seq(n) = target {
        report.seq = n;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn get(location: &ObjectLocation, name: &str, report: &mut RestoreReport) -> Result<Vec<u8>, SyncError> {
    let bytes = location.store()?.get(&location.path(name)).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => SyncError::Gap(format!("{name} is missing from {}", location.url())),
        other => other.into(),
    })?;
    let bytes = bytes.bytes().await?;
    report.downloaded += bytes.len() as u64;
    Ok(bytes.to_vec())
}

/// Downloads snapshot object `name` and opens it: its size must be the manifest's `len` and its SHA-256
/// `sha256`; the decompressed text.
async fn get_checked(
    location: &ObjectLocation,
    name: &str,
    len: u64,
    sha256: &str,
    report: &mut RestoreReport,
) -> Result<Vec<u8>, SyncError> {
    let bytes = get(location, name, report).await?;
    if bytes.len() as u64 != len {
        return Err(SyncError::corrupt(name, format!("{} bytes, manifest says {len}", bytes.len())));
    }
    open_checked(name, &bytes, sha256)
}

/// The newest snapshot at or before the target.
async fn choose_snapshot(
    location: &ObjectLocation,
    target: RestoreTarget,
    report: &mut RestoreReport,
) -> Result<Manifest, SyncError> {
    let seqs = list_snapshots(location).await?;
    for &seq in seqs.iter().rev() {
        if let RestoreTarget::Seq(n) = target {
            if seq > n {
                continue;
            }
        }
        let name = manifest_name(seq);
        let manifest = decode_manifest(&name, &get(location, &name, report).await?)?;
        if manifest.seq != seq {
            return Err(SyncError::corrupt(name, format!("manifest says seq {}", manifest.seq)));
        }
        if let RestoreTarget::Time(t) = target {
            if manifest.taken_at_ms > t {
                continue;
            }
        }
        return Ok(manifest);
    }
    Err(SyncError::Gap(format!("{} has no snapshot at or before the target {target:?}", location.url())))
}

async fn load_snapshot(
    location: &ObjectLocation,
    manifest: &Manifest,
    sink: &mut impl Sink,
    progress: &Progress,
    report: &mut RestoreReport,
) -> Result<(), SyncError> {
    for spec in &manifest.collections {
        sink.declare(spec)?;
    }
    progress.phase("restore: snapshot", Some(manifest.records));
    let dir = snapshot_dir(manifest.seq);
    for entry in &manifest.objects {
        let name = format!("{dir}{}", entry.name);
        let text = get_checked(location, &name, entry.bytes, &entry.sha256, report).await?;
        let records: Vec<SnapshotLine> = lines(&name, &text)?;
        if records.len() as u64 != entry.records {
            return Err(SyncError::corrupt(
                &name,
                format!("{} records, manifest says {}", records.len(), entry.records),
            ));
        }
        let n = records.len() as u64;
        for r in records {
            sink.put(&entry.collection, &r.id, r.version, r.doc)?;
            sink.boundary()?;
        }
        report.snapshot_records += n;
        report.bytes += text.len() as u64;
        progress.add(n, text.len() as u64);
    }
    let total: u64 = manifest.objects.iter().map(|o| o.records).sum();
    if total != manifest.records {
        return Err(SyncError::corrupt(manifest_name(manifest.seq), "record counts do not add up"));
    }
    progress.finish();
    load_metrics(location, manifest, sink, progress, report).await
}

/// Reads the snapshot's metrics chunks into `sink`: every line checked to continue its series where the
/// previous line left it, or to start the next series (in (run, key) order) at position 0.
async fn load_metrics(
    location: &ObjectLocation,
    manifest: &Manifest,
    sink: &mut impl Sink,
    progress: &Progress,
    report: &mut RestoreReport,
) -> Result<(), SyncError> {
    let Some(listing) = &manifest.metrics else { return Ok(()) };
    report.with_metrics = true;
    progress.phase("restore: metrics", Some(listing.points));
    let dir = snapshot_dir(manifest.seq);
    // The series being read and the position its next point takes.
    let mut at: Option<((String, String), u64)> = None;
    let mut points = Vec::new();
    for entry in &listing.objects {
        let name = format!("{dir}{}", entry.name);
        let text = get_checked(location, &name, entry.bytes, &entry.sha256, report).await?;
        let lines: Vec<MetricsLine> = lines(&name, &text)?;
        let n: u64 = lines.iter().map(|l| l.steps.len() as u64).sum();
        if lines.len() as u64 != entry.lines || n != entry.points {
            return Err(SyncError::corrupt(
                &name,
                format!("{} lines of {n} points, manifest says {} of {}", lines.len(), entry.lines, entry.points),
            ));
        }
        for line in lines {
            let len = line.steps.len();
            if len == 0 || line.timestamps_ms.len() != len || line.value_bits.len() != len {
                return Err(SyncError::corrupt(
                    &name,
                    format!("{}/{}: columns of unequal or no length", line.run, line.key),
                ));
            }
            let id = (line.run, line.key);
            let expected = match &at {
                Some((current, next)) if *current == id => *next,
                Some((current, _)) if *current > id => {
                    return Err(SyncError::corrupt(&name, format!("{}/{}: series out of order", id.0, id.1)));
                }
                _ => {
                    report.metric_series += 1;
                    0
                }
            };
            if line.from != expected {
                return Err(SyncError::corrupt(
                    &name,
                    format!("{}/{}: a line starts at point {}, {} expected", id.0, id.1, line.from, expected),
                ));
            }
            points.clear();
            for ((&step, &timestamp_ms), &bits) in line.steps.iter().zip(&line.timestamps_ms).zip(&line.value_bits) {
                points.push(Point { step, timestamp_ms, value: f64::from_bits(bits) });
            }
            sink.metric_points(&id.0, &id.1, &points)?;
            at = Some((id, expected + len as u64));
        }
        report.metric_points += n;
        progress.add(n, text.len() as u64);
    }
    if report.metric_series != listing.series || report.metric_points != listing.points {
        return Err(SyncError::corrupt(
            manifest_name(manifest.seq),
            format!(
                "{} metric series of {} points, the manifest says {} of {}",
                report.metric_series, report.metric_points, listing.series, listing.points
            ),
        ));
    }
    progress.finish();
    Ok(())
}

/// Walks the chain from the segment holding `from + 1` and applies its changes up to the target.
async fn replay_segments(
    location: &ObjectLocation,
    target: RestoreTarget,
    from: u64,
    sink: &mut impl Sink,
    progress: &Progress,
    report: &mut RestoreReport,
) -> Result<(), SyncError> {
    let segments = list_segments(location).await?;
    let wanted = match target {
        RestoreTarget::Seq(n) => Some(n),
        _ => None,
    };
    if wanted.is_some_and(|n| n <= from) {
        return Ok(());
    }
    progress.phase("restore: changes", None);
    // The first segment holds the changes right after the snapshot: `after <= from < through`.
    let mut next = segments.iter().filter(|s| s.after <= from && from < s.through).min_by_key(|s| s.after);
    let mut prev: Option<&SegmentName> = None;
    let mut reached = from;
    let mut declared = Vec::new();
    'chain: while let Some(seg) = next {
        let bytes = get(location, &seg.name(), report).await?;
        let (header, changes) = decode_segment(seg, &bytes)?;
        if let Some(p) = prev {
            if header.prev_sha256.as_deref() != Some(p.sha256.as_str()) {
                return Err(SyncError::corrupt(
                    seg.name(),
                    format!("its previous-segment hash does not match {}", p.name()),
                ));
            }
        }
        for spec in &header.collections {
            if !declared.contains(spec) {
                sink.declare(spec)?;
                declared.push(spec.clone());
            }
        }
        report.segments += 1;
        let mut current = None;
        for c in changes {
            if c.seq <= from {
                continue;
            }
            let past = match target {
                RestoreTarget::Seq(n) => c.seq > n,
                RestoreTarget::Time(t) => c.at_ms > t,
                RestoreTarget::Latest => false,
            };
            if current != Some(c.seq) {
                if current.is_some() {
                    sink.boundary()?;
                }
                if past {
                    if let Some(n) = wanted {
                        reached = n;
                    }
                    break 'chain;
                }
                current = Some(c.seq);
                reached = c.seq;
            }
            let len = c.doc.as_ref().map_or(0, json_len);
            match (c.op, c.doc) {
                (ChangeOp::Delete, _) => sink.delete(&c.collection, &c.id)?,
                (_, Some(doc)) => sink.put(&c.collection, &c.id, c.version, doc)?,
                (_, None) => return Err(SyncError::corrupt(seg.name(), format!("{} without a document", c.id))),
            }
            report.changes += 1;
            report.bytes += len;
            progress.add(1, len);
        }
        sink.boundary()?;
        reached = reached.max(seg.through.min(wanted.unwrap_or(u64::MAX)));
        if let RestoreTarget::Time(t) = target {
            if header.last_at_ms > t {
                break;
            }
        }
        if wanted.is_some_and(|n| seg.through >= n) {
            break;
        }
        prev = Some(seg);
        next = segments.iter().find(|s| s.after == seg.through);
        if next.is_none() {
            if let Some(later) = segments.iter().filter(|s| s.after > seg.through).min_by_key(|s| s.after) {
                return Err(SyncError::Gap(format!(
                    "no segment starts at seq {}: the next one, {}, starts at {}",
                    seg.through,
                    later.name(),
                    later.after
                )));
            }
        }
    }
    if next.is_none() {
        if let Some(later) = segments.iter().filter(|s| s.after > reached).min_by_key(|s| s.after) {
            return Err(SyncError::Gap(format!(
                "no segment covers seq {}: the next one, {}, starts at {}",
                reached + 1,
                later.name(),
                later.after
            )));
        }
    }
    if let Some(n) = wanted {
        if reached < n {
            return Err(SyncError::Gap(format!(
                "{} holds changes through seq {reached} only; seq {n} was requested",
                location.url()
            )));
        }
    }
    report.seq = reached;
    progress.finish();
    Ok(())
}
