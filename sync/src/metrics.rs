//! Metric series on their way in and out, whatever the other end: the digests verification compares, the
//! fingerprint of a snapshot's metrics, and the writer that logs imported points back into a store.

use cairn_store::metrics::{MetricPoint, Metrics, Point, MAX_LOG_POINTS};
use cairn_store::{Store, StoreSnapshot};
use sha2::{Digest as _, Sha256};

use crate::digest::{PointsDigest, SeriesDigests};
use crate::error::SyncError;

/// Every series of `snap` with its point count and digest.
pub(crate) fn local_digests(snap: &StoreSnapshot) -> Result<SeriesDigests, SyncError> {
    let mut out = SeriesDigests::new();
    for s in snap.metric_series()? {
        let s = s?;
        let mut digest = PointsDigest::default();
        for p in snap.metric_points(&s.run, &s.key)? {
            digest.add(&p?);
        }
        out.insert((s.run, s.key), digest.finish());
    }
    Ok(out)
}

/// Adds one series to a fingerprint of a whole metrics state (see [`Fingerprint`]).
#[derive(Default)]
pub(crate) struct Fingerprint(Sha256);

impl Fingerprint {
    /// Adds a series: its run, `0x00`, its key, `0x00`, its store fingerprint (u64 little-endian).
    pub fn add(&mut self, run: &str, key: &str, fingerprint: u64) {
        self.0.update(run.as_bytes());
        self.0.update([0]);
        self.0.update(key.as_bytes());
        self.0.update([0]);
        self.0.update(fingerprint.to_le_bytes());
    }

    /// Lower-case hex of the SHA-256.
    pub fn hex(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// The fingerprint of every series of `snap`: SHA-256 over each series in (run, key) order, as
/// [`Fingerprint::add`] takes it. Equal when no point was logged or removed in between (but see
/// `SeriesSummary::fingerprint` for a series deleted and logged again).
pub(crate) fn fingerprint(snap: &StoreSnapshot) -> Result<String, SyncError> {
    let mut f = Fingerprint::default();
    for s in snap.metric_series()? {
        let s = s?;
        f.add(&s.run, &s.key, s.fingerprint);
    }
    Ok(f.hex())
}

/// Whether `store` holds any metric series.
pub(crate) fn has_metrics(store: &Store) -> Result<bool, SyncError> {
    Ok(store.snapshot().metric_series()?.next().transpose()?.is_some())
}

/// Logs imported points into a store: series in order, each series' points in history order, a run's
/// points together (one [`Metrics::log`] commit per run, or per [`MAX_LOG_POINTS`] of it). Logging a
/// series' points in history order gives back the same history: points of equal steps keep their order.
pub(crate) struct PointWriter {
    metrics: Metrics,
    /// Remove a run's metrics before writing its first point (an import replaces whole runs).
    replace: bool,
    run: String,
    key: String,
    batch: Vec<MetricPoint>,
    /// Series written.
    pub series: u64,
    /// Points written.
    pub points: u64,
}

impl PointWriter {
    pub fn new(store: &Store, replace: bool) -> Self {
        Self {
            metrics: Metrics::new(store.clone()),
            replace,
            run: String::new(),
            key: String::new(),
            batch: Vec::new(),
            series: 0,
            points: 0,
        }
    }

    /// Adds the next point: of the current series, or the first of the next one.
    pub fn push(&mut self, run: &str, key: &str, p: Point) -> Result<(), SyncError> {
        if run != self.run {
            self.flush()?;
            run.clone_into(&mut self.run);
            self.key.clear();
            if self.replace {
                self.metrics.delete_run(run)?;
            }
        }
        if key != self.key {
            key.clone_into(&mut self.key);
            self.series += 1;
        }
        self.batch.push(MetricPoint {
            key: self.key.clone(),
            step: p.step,
            timestamp_ms: p.timestamp_ms,
            value: p.value,
        });
        if self.batch.len() >= MAX_LOG_POINTS {
            self.flush()?;
        }
        Ok(())
    }

    /// Logs the points not logged yet.
    pub fn flush(&mut self) -> Result<(), SyncError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.metrics.log(&self.run, &self.batch)?;
        self.points += self.batch.len() as u64;
        self.batch.clear();
        Ok(())
    }
}
