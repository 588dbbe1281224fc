//! `export s3`: a snapshot (chunks, the metrics' chunks and a manifest), then change segments chained by
//! hash, each preceded by the bytes of the artifact objects it holds; retention of old snapshots and
//! segments.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_store::artifacts::{Artifacts, OBJECTS};
use cairn_store::{ChangeOp, Store, StoreSnapshot};
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{PutPayload, WriteMultipart};

use super::blobs::Shipper;
use super::layout::{
    chunk_name, compress, decode_manifest, encode_manifest, encode_segment, manifest_name, metrics_chunk_name,
    parse_manifest_name, snapshot_dir, ChunkEntry, Manifest, MetricsChunkEntry, MetricsLine, MetricsListing,
    SegmentHeader, SegmentName, SnapshotLine, FORMAT, SEGMENTS, SNAPSHOTS,
};
use super::location::ObjectLocation;
use crate::digest::sha256_hex;
use crate::error::SyncError;
use crate::follow::{ensure_consumer, stopped, wait};
use crate::metrics::Fingerprint;
use crate::progress::Progress;
use crate::StopFlag;

/// Multipart uploads send parts of this size (S3's minimum for all but the last part is 5 MiB).
pub(super) const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts uploaded at once.
pub(super) const PART_CONCURRENCY: usize = 4;

/// What [`export_objects`] does. Build with [`ObjectExportOptions::default`] and the setters.
#[derive(Debug, Clone)]
pub struct ObjectExportOptions {
    name: String,
    snapshot: bool,
    keep_snapshots: Option<usize>,
    chunk_records: usize,
    segment_changes: usize,
    multipart_threshold: usize,
    follow: bool,
    poll: Duration,
    snapshot_every: Option<Duration>,
    metrics: bool,
    chunk_points: usize,
}

impl Default for ObjectExportOptions {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            snapshot: false,
            keep_snapshots: None,
            chunk_records: 50_000,
            segment_changes: 10_000,
            multipart_threshold: 8 * 1024 * 1024,
            follow: false,
            poll: Duration::from_millis(200),
            snapshot_every: None,
            metrics: true,
            chunk_points: 500_000,
        }
    }
}

impl ObjectExportOptions {
    /// The export's name: the store's change consumer `s3-NAME` keeps the changes not yet shipped. Default:
    /// `default`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Write a new snapshot even if the location has one. Default: false (a snapshot is written only when
    /// the location has none).
    pub fn snapshot(mut self, snapshot: bool) -> Self {
        self.snapshot = snapshot;
        self
    }

    /// After writing a snapshot, delete all but the newest `n` snapshots (at least 1) and the segments that
    /// end at or before the oldest snapshot kept. Default: keep everything.
    pub fn keep_snapshots(mut self, n: Option<usize>) -> Self {
        self.keep_snapshots = n.map(|n| n.max(1));
        self
    }

    /// Records per snapshot chunk. Default: 50,000.
    pub fn chunk_records(mut self, n: usize) -> Self {
        self.chunk_records = n.max(1);
        self
    }

    /// Changes per segment, at most (a segment always ends at a commit boundary, so one large commit can
    /// exceed it). Default: 10,000.
    pub fn segment_changes(mut self, n: usize) -> Self {
        self.segment_changes = n.max(1);
        self
    }

    /// Objects of at least this many bytes are uploaded in 5 MiB parts (multipart upload). Default: 8 MiB.
    pub fn multipart_threshold(mut self, bytes: usize) -> Self {
        self.multipart_threshold = bytes;
        self
    }

    /// Keep shipping new changes until the stop flag is set. Default: false (stop once caught up).
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// How long a follower waits before looking for new changes when caught up. Default: 200 ms.
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// While following, write a new snapshot (and apply retention) this often. Default: never.
    pub fn snapshot_every(mut self, every: Option<Duration>) -> Self {
        self.snapshot_every = every;
        self
    }

    /// Carry the store's metrics in snapshots. Default: true. Segments never carry metrics (they have no
    /// change events): a snapshot holds them as they are at its sequence.
    pub fn metrics(mut self, metrics: bool) -> Self {
        self.metrics = metrics;
        self
    }

    /// Metric points per snapshot chunk, at most (a longer series continues in the next chunk). Default:
    /// 500,000.
    pub fn chunk_points(mut self, n: usize) -> Self {
        self.chunk_points = n.max(1);
        self
    }

    fn consumer(&self) -> String {
        format!("s3-{}", self.name)
    }
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectExport {
    /// Snapshots written, by sequence.
    pub snapshots: Vec<u64>,
    /// Records written in snapshots.
    pub snapshot_records: u64,
    /// Bytes of their documents, as JSON (uncompressed).
    pub snapshot_bytes: u64,
    /// Bytes uploaded for snapshots (compressed chunks and manifests).
    pub snapshot_uploaded: u64,
    /// Time spent writing snapshots.
    pub snapshot_time: Duration,
    /// Segments written.
    pub segments: u64,
    /// Changes shipped in them.
    pub changes: u64,
    /// The sequence the location's change chain now reaches.
    pub through: u64,
    /// Snapshots and segments deleted by retention.
    pub deleted: u64,
    /// Artifact objects' bytes uploaded (`blobs/sha256/...`), one per distinct content.
    pub blobs_uploaded: u64,
    /// Bytes of those uploads.
    pub blob_bytes_uploaded: u64,
    /// Object records whose bytes were already at the location (from an earlier run, or another object
    /// with the same content).
    pub blobs_present: u64,
    /// Object versions whose bytes were gone from the store (overwritten or deleted, then garbage
    /// collected) and superseded by a later version in the export: their bytes are not at the location,
    /// so a restore to a point where that version is current fails.
    pub blobs_skipped: u64,
    /// Metric series written in snapshots.
    pub snapshot_metric_series: u64,
    /// Metric points written in snapshots.
    pub snapshot_metric_points: u64,
    /// The store's metrics differ from those of the location's newest snapshot (segments do not carry
    /// metrics; a new snapshot does). Checked at the end of an export that does not follow.
    pub metrics_changed: bool,
}

/// The end of the change chain in a location: its last sequence and the hash of its last segment.
#[derive(Debug, Clone)]
struct ChainEnd {
    through: u64,
    sha256: Option<String>,
}

/// Exports `store` to `location`: a snapshot if the location has none (or if asked), then every change
/// since the end of the location's chain, as segments. With `follow`, keeps shipping until `stop` is set.
///
/// `artifacts` is the artifact store of `store`, if it has one: the bytes of every artifact object a
/// snapshot or a segment holds are uploaded (once per content) before that snapshot's manifest or that
/// segment. Without it, an export that meets an artifact object fails.
///
/// Metrics (unless left out) travel in snapshots only, read at the snapshot's sequence: a restore gets
/// those of the snapshot it starts from. An export that does not follow reports whether the store's
/// metrics changed since the newest snapshot (`metrics_changed`).
pub async fn export_objects(
    store: &Store,
    artifacts: Option<&Artifacts>,
    location: &ObjectLocation,
    opts: &ObjectExportOptions,
    progress: &Progress,
    stop: Option<StopFlag>,
) -> Result<ObjectExport, SyncError> {
    let mut report = ObjectExport::default();
    let mut shipper = Shipper::new(artifacts, opts.multipart_threshold);
    let mut end = chain_end(location).await?;
    if let Some(e) = end.clone() {
        ensure_consumer(store, &opts.consumer(), e.through)?;
        match store.changes_since(e.through, 1) {
            Ok(_) => {
                // Bytes gone from the store are superseded by the snapshot that follows, when one is asked.
                let shipped = ship(store, location, opts, &e, (&mut shipper, opts.snapshot), &mut report).await?;
                if let Some(sha) = shipped {
                    end = Some(ChainEnd { through: report.through, sha256: Some(sha) });
                }
            }
            // The store no longer has what the chain needs: only a new snapshot (a new chain) can go on.
            Err(cairn_store::ChangesError::ChangesTrimmed { .. }) if opts.snapshot => end = None,
            Err(e) => return Err(e.into()),
        }
    }
    let mut last_snapshot = Instant::now();
    // The consumer is registered from here on: above for an existing chain, by `snapshot` for a new one.
    let mut end = match end {
        Some(e) if !opts.snapshot => e,
        end => {
            let seq = snapshot(store, location, opts, progress, &mut shipper, &mut report).await?;
            end.unwrap_or(ChainEnd { through: seq, sha256: None })
        }
    };
    loop {
        let shipped = ship(store, location, opts, &end, (&mut shipper, false), &mut report).await?;
        if let Some(sha) = shipped {
            end = ChainEnd { through: report.through, sha256: Some(sha) };
        }
        if !opts.follow || stopped(&stop) {
            break;
        }
        if opts.snapshot_every.is_some_and(|every| last_snapshot.elapsed() >= every) {
            snapshot(store, location, opts, progress, &mut shipper, &mut report).await?;
            last_snapshot = Instant::now();
        }
        wait(&stop, opts.poll).await;
    }
    report.through = report.through.max(end.through);
    if opts.metrics && !opts.follow {
        report.metrics_changed = metrics_changed(store, location).await?;
    }
    Ok(report)
}

/// Whether the store's metrics differ from those of the location's newest snapshot: by their fingerprints,
/// without reading a point; a snapshot without metrics differs from a store that has some.
async fn metrics_changed(store: &Store, location: &ObjectLocation) -> Result<bool, SyncError> {
    let Some(&seq) = list_snapshots(location).await?.last() else { return Ok(false) };
    let name = manifest_name(seq);
    let bytes = location.store()?.get(&location.path(&name)).await?.bytes().await?;
    let manifest = decode_manifest(&name, &bytes)?;
    let snap = store.snapshot();
    Ok(match manifest.metrics {
        Some(listed) => listed.fingerprint != crate::metrics::fingerprint(&snap)?,
        None => snap.metric_series()?.next().is_some(),
    })
}

/// Ships every change after `end` as segments, each after the bytes of the artifact objects it writes;
/// returns the last segment's hash if any was written. With `superseded`, objects' bytes gone from the
/// store are skipped (a snapshot follows).
async fn ship(
    store: &Store,
    location: &ObjectLocation,
    opts: &ObjectExportOptions,
    end: &ChainEnd,
    (shipper, superseded): (&mut Shipper<'_>, bool),
    report: &mut ObjectExport,
) -> Result<Option<String>, SyncError> {
    let mut after = end.through;
    let mut prev = end.sha256.clone();
    let mut wrote = None;
    loop {
        let page = store.changes_since(after, opts.segment_changes)?;
        let (Some(first), Some(last)) = (page.first(), page.last()) else { break };
        for c in page.iter().filter(|c| c.collection == OBJECTS && c.op != ChangeOp::Delete) {
            if let Some(doc) = &c.doc {
                shipper.ship(store, location, (&c.id, c.seq, doc), superseded, report).await?;
            }
        }
        let header = SegmentHeader {
            format: FORMAT,
            after,
            through: last.seq,
            prev_sha256: prev.clone(),
            changes: page.len() as u64,
            first_at_ms: first.at_ms,
            last_at_ms: last.at_ms,
            collections: crate::exported(store.collections()),
        };
        let bytes = encode_segment(&header, &page)?;
        let name = SegmentName { after, through: last.seq, sha256: sha256_hex(&bytes) };
        put(location, &location.path(&name.name()), bytes, opts.multipart_threshold).await?;
        report.segments += 1;
        report.changes += page.len() as u64;
        report.through = last.seq;
        after = last.seq;
        prev = Some(name.sha256.clone());
        wrote = Some(name.sha256);
        store.ack(&opts.consumer(), last.seq)?;
    }
    Ok(wrote)
}

/// Writes a snapshot of the store as it is now (the bytes of its artifact objects before its manifest),
/// then applies retention. Returns its sequence.
async fn snapshot(
    store: &Store,
    location: &ObjectLocation,
    opts: &ObjectExportOptions,
    progress: &Progress,
    shipper: &mut Shipper<'_>,
    report: &mut ObjectExport,
) -> Result<u64, SyncError> {
    let started = Instant::now();
    let snap = store.snapshot();
    let seq = snap.sequence();
    // Changes after the snapshot are kept for the segments that follow it. A consumer already registered
    // stays where it is: it still guards changes the chain has not shipped yet.
    ensure_consumer(store, &opts.consumer(), seq)?;
    let taken_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let collections = crate::exported(snap.collections()?);
    progress.phase("s3: snapshot", None);
    let dir = snapshot_dir(seq);
    let mut objects = Vec::new();
    let mut records = 0u64;
    for spec in &collections {
        let objects_of_artifacts = spec.name == OBJECTS;
        if objects_of_artifacts {
            shipper.list(location).await?;
        }
        let mut iter = snap.records(&spec.name, None)?;
        let mut part = 0u32;
        loop {
            let mut text = Vec::with_capacity(1 << 20);
            let mut n = 0u64;
            let mut doc_bytes = 0u64;
            for r in iter.by_ref().take(opts.chunk_records) {
                let r = r?;
                if objects_of_artifacts {
                    shipper.ship(store, location, (&r.id, seq, &r.doc), false, report).await?;
                }
                let line = SnapshotLine {
                    id: r.id,
                    version: r.version,
                    seq: r.seq,
                    created_at_ms: r.created_at_ms,
                    updated_at_ms: r.updated_at_ms,
                    doc: r.doc,
                };
                let start = text.len();
                serde_json::to_writer(&mut text, &line).map_err(|e| SyncError::invalid(e.to_string()))?;
                text.push(b'\n');
                doc_bytes += (text.len() - start) as u64;
                n += 1;
            }
            if n == 0 {
                break;
            }
            let bytes = compress(&text)?;
            let name = chunk_name(&spec.name, part);
            let entry = ChunkEntry {
                name: name.clone(),
                collection: spec.name.clone(),
                records: n,
                bytes: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
            };
            report.snapshot_uploaded += bytes.len() as u64;
            put(location, &location.path(&format!("{dir}{name}")), bytes, opts.multipart_threshold).await?;
            objects.push(entry);
            records += n;
            report.snapshot_bytes += doc_bytes;
            progress.add(n, doc_bytes);
            part += 1;
        }
    }
    progress.finish();
    let metrics =
        if opts.metrics { Some(snapshot_metrics(&snap, location, opts, progress, report).await?) } else { None };
    let manifest = Manifest { format: FORMAT, seq, taken_at_ms, collections, objects, records, metrics };
    let bytes = encode_manifest(&manifest);
    report.snapshot_uploaded += bytes.len() as u64;
    // The manifest goes last: a snapshot exists once its manifest does.
    put(location, &location.path(&manifest_name(seq)), bytes, opts.multipart_threshold).await?;
    report.snapshots.push(seq);
    report.snapshot_records += records;
    report.snapshot_time += started.elapsed();
    if let Some(keep) = opts.keep_snapshots {
        report.deleted += retain(location, keep).await?;
    }
    Ok(seq)
}

/// A metrics chunk being filled.
#[derive(Default)]
struct MetricsChunk {
    text: Vec<u8>,
    lines: u64,
    points: u64,
}

impl MetricsChunk {
    fn push(&mut self, line: &MetricsLine) -> Result<(), SyncError> {
        serde_json::to_writer(&mut self.text, line).map_err(|e| SyncError::invalid(e.to_string()))?;
        self.text.push(b'\n');
        self.lines += 1;
        self.points += line.steps.len() as u64;
        Ok(())
    }

    /// Uploads the chunk (if it holds a line) into the snapshot's directory `dir`, lists it, and empties it.
    async fn upload(
        &mut self,
        dir: &str,
        location: &ObjectLocation,
        opts: &ObjectExportOptions,
        listing: &mut MetricsListing,
        report: &mut ObjectExport,
    ) -> Result<(), SyncError> {
        let chunk = std::mem::take(self);
        if chunk.lines == 0 {
            return Ok(());
        }
        let bytes = compress(&chunk.text)?;
        let name = metrics_chunk_name(u32::try_from(listing.objects.len()).unwrap_or(u32::MAX));
        let entry = MetricsChunkEntry {
            name: name.clone(),
            lines: chunk.lines,
            points: chunk.points,
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        };
        report.snapshot_uploaded += bytes.len() as u64;
        put(location, &location.path(&format!("{dir}{name}")), bytes, opts.multipart_threshold).await?;
        listing.objects.push(entry);
        Ok(())
    }
}

/// Writes the metrics of `snap` as chunks of at most `chunk_points` points (series in (run, key) order,
/// each series' points in history order, a long series cut into several lines) and returns their listing.
async fn snapshot_metrics(
    snap: &StoreSnapshot,
    location: &ObjectLocation,
    opts: &ObjectExportOptions,
    progress: &Progress,
    report: &mut ObjectExport,
) -> Result<MetricsListing, SyncError> {
    let dir = snapshot_dir(snap.sequence());
    let mut listing = MetricsListing { series: 0, points: 0, fingerprint: String::new(), objects: Vec::new() };
    let mut fingerprint = Fingerprint::default();
    let mut chunk = MetricsChunk::default();
    let room = opts.chunk_points as u64;
    progress.phase("s3: metrics", None);
    for s in snap.metric_series()? {
        let s = s?;
        fingerprint.add(&s.run, &s.key, s.fingerprint);
        let empty = |from| MetricsLine {
            run: s.run.clone(),
            key: s.key.clone(),
            from,
            steps: Vec::new(),
            timestamps_ms: Vec::new(),
            value_bits: Vec::new(),
        };
        let mut line = empty(0);
        let mut n = 0u64;
        for p in snap.metric_points(&s.run, &s.key)? {
            let p = p?;
            line.steps.push(p.step);
            line.timestamps_ms.push(p.timestamp_ms);
            line.value_bits.push(p.value.to_bits());
            n += 1;
            if chunk.points + line.steps.len() as u64 >= room {
                chunk.push(&line)?;
                progress.add(line.steps.len() as u64, 0);
                chunk.upload(&dir, location, opts, &mut listing, report).await?;
                line = empty(n);
            }
        }
        if !line.steps.is_empty() {
            chunk.push(&line)?;
            progress.add(line.steps.len() as u64, 0);
        }
        listing.series += 1;
        listing.points += n;
    }
    chunk.upload(&dir, location, opts, &mut listing, report).await?;
    listing.fingerprint = fingerprint.hex();
    report.snapshot_metric_series += listing.series;
    report.snapshot_metric_points += listing.points;
    progress.finish();
    Ok(listing)
}

/// Uploads `bytes`, in parts when they reach `threshold`.
async fn put(location: &ObjectLocation, path: &Path, bytes: Vec<u8>, threshold: usize) -> Result<(), SyncError> {
    let store = location.store()?;
    if bytes.len() >= threshold {
        let upload = store.put_multipart(path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        for part in Bytes::from(bytes).chunks(PART_SIZE) {
            writer.wait_for_capacity(PART_CONCURRENCY).await?;
            writer.write(part);
        }
        writer.finish().await?;
    } else {
        store.put(path, PutPayload::from(bytes)).await?;
    }
    Ok(())
}

/// Every manifest's sequence in the location, ascending.
pub(crate) async fn list_snapshots(location: &ObjectLocation) -> Result<Vec<u64>, SyncError> {
    let listed: Vec<_> = location.store()?.list(Some(&location.path(SNAPSHOTS))).try_collect().await?;
    let mut seqs: Vec<u64> =
        listed.iter().filter_map(|m| parse_manifest_name(location.relative(&m.location))).collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Every segment in the location, by `after`.
pub(crate) async fn list_segments(location: &ObjectLocation) -> Result<Vec<SegmentName>, SyncError> {
    let listed: Vec<_> = location.store()?.list(Some(&location.path(SEGMENTS))).try_collect().await?;
    let mut segs: Vec<SegmentName> =
        listed.iter().filter_map(|m| SegmentName::parse(location.relative(&m.location))).collect();
    segs.sort_by_key(|s| (s.after, s.through));
    Ok(segs)
}

/// Where the location's chain ends: its last segment, else its newest snapshot; `None` if it is empty.
async fn chain_end(location: &ObjectLocation) -> Result<Option<ChainEnd>, SyncError> {
    let segments = list_segments(location).await?;
    if let Some(last) = segments.iter().max_by_key(|s| s.through) {
        return Ok(Some(ChainEnd { through: last.through, sha256: Some(last.sha256.clone()) }));
    }
    Ok(list_snapshots(location).await?.last().map(|&seq| ChainEnd { through: seq, sha256: None }))
}

/// Deletes all but the newest `keep` snapshots (manifest first, so a half-deleted snapshot is never
/// listed), then every segment that ends at or before the oldest snapshot kept. Returns the number of
/// snapshots and segments deleted.
async fn retain(location: &ObjectLocation, keep: usize) -> Result<u64, SyncError> {
    let snapshots = list_snapshots(location).await?;
    if snapshots.len() <= keep {
        return Ok(0);
    }
    let store = location.store()?;
    let (old, kept) = snapshots.split_at(snapshots.len() - keep);
    let mut deleted = 0;
    for &seq in old {
        store.delete(&location.path(&manifest_name(seq))).await?;
        let objects: Vec<_> = store.list(Some(&location.path(&snapshot_dir(seq)))).try_collect().await?;
        for o in objects {
            store.delete(&o.location).await?;
        }
        deleted += 1;
    }
    let oldest_kept = kept.first().copied().unwrap_or(0);
    for seg in list_segments(location).await? {
        if seg.through <= oldest_kept {
            store.delete(&location.path(&seg.name())).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}
