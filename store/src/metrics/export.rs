//! Reading every series at one commit sequence, for exports: the series of a [`StoreSnapshot`] in (run,
//! key) order ([`StoreSnapshot::metric_series`]) and all points of one series in history order
//! ([`StoreSnapshot::metric_points`]), streamed a block at a time. The collections' records are read at the
//! same sequence ([`StoreSnapshot::records`]), so an export of both is one point in time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use cairn_engine::Iter;

use super::error::MetricsError;
use super::layout::{self, Series};
use super::model::Point;
use super::write::read_block;
use crate::export::StoreSnapshot;

/// One series as a snapshot lists it, from its series entry (no block is read).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSummary {
    /// The run.
    pub run: String,
    /// The metric key.
    pub key: String,
    /// Points the series holds.
    pub points: u64,
    /// The latest point (highest step; of those, the last logged).
    pub latest: Point,
    /// A 64-bit hash of the series entry, which every write to the series rewrites. Logging points to the
    /// series or removing some (retention) always gives it another fingerprint, whatever came between (so
    /// an exporter that kept the fingerprint it shipped knows whether to look at the series again without
    /// reading it). Two states share a fingerprint only by a hash collision, or when the series was deleted
    /// and logged again to the same shape: the same point count, lowest step, blocks, and latest point
    /// (step, timestamp and value).
    pub fingerprint: u64,
}

impl StoreSnapshot {
    /// Every metric series as of the snapshot, in (run, key) order (byte order of the UTF-8 names).
    pub fn metric_series(&self) -> Result<MetricSeries, MetricsError> {
        Ok(MetricSeries { iter: self.engine().prefix(layout::SERIES)? })
    }

    /// Every point of series `key` of `run` as of the snapshot, in history order (by step, then log
    /// order), as [`Metrics::history`](super::Metrics::history) returns them. Blocks are read one at a
    /// time as the iteration reaches them, so memory holds a block's points (more only where blocks overlap
    /// in steps, after points logged out of order). An unknown series yields nothing.
    ///
    /// Fails with [`MetricsError::Invalid`] for a bad name; the iteration yields
    /// [`MetricsError::Corruption`] (and ends) at a block that fails its checksum or does not decode.
    pub fn metric_points(&self, run: &str, key: &str) -> Result<SeriesPoints, MetricsError> {
        layout::check_name("run", run)?;
        layout::check_name("metric key", key)?;
        let prefix = layout::blocks_prefix(run, key);
        let mut points = SeriesPoints {
            blocks: self.engine().prefix(&prefix)?,
            prefix_len: prefix.len(),
            next: None,
            pending: BinaryHeap::new(),
            failed: false,
        };
        points.fetch()?;
        Ok(points)
    }
}

/// Iterator over the series of a [`StoreSnapshot`], in (run, key) order.
pub struct MetricSeries {
    iter: Iter,
}

impl std::fmt::Debug for MetricSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricSeries").finish_non_exhaustive()
    }
}

impl Iterator for MetricSeries {
    type Item = Result<SeriesSummary, MetricsError>;

    fn next(&mut self) -> Option<Self::Item> {
        let pair = self.iter.next()?;
        Some(pair.map_err(MetricsError::from).and_then(|(k, v)| {
            let series = Series::decode(&k, &v)?;
            let rest = k.get(layout::SERIES.len()..).unwrap_or_default();
            let (run, key) = rest
                .iter()
                .position(|b| *b == 0)
                .map(|at| (rest.get(..at).unwrap_or_default(), rest.get(at + 1..).unwrap_or_default()))
                .ok_or_else(|| MetricsError::corruption(&k, 0, "series key without run and metric key"))?;
            let text = |b: &[u8]| {
                String::from_utf8(b.to_vec()).map_err(|_| MetricsError::corruption(&k, 0, "series key is not UTF-8"))
            };
            Ok(SeriesSummary {
                run: text(run)?,
                key: text(key)?,
                points: series.points,
                latest: series.latest,
                fingerprint: xxhash_rust::xxh3::xxh3_64(&v),
            })
        }))
    }
}

/// A decoded point waiting in [`SeriesPoints`]: where it sorts (step, block id, position in the block),
/// then its timestamp and value bits.
type Pending = (i64, u64, u32, i64, u64);

/// A stored block not read yet: its first step, id, key and value.
type NextBlock = (i64, u64, Vec<u8>, Vec<u8>);

/// Iterator over the points of one series in a [`StoreSnapshot`], in history order. Blocks come in key
/// order (first step, then id) and a block's points never start before its first step, so a point is
/// yielded once every block that starts at or before its step is decoded; points of overlapping blocks
/// merge by (step, block id, position), as histories do.
pub struct SeriesPoints {
    blocks: Iter,
    prefix_len: usize,
    next: Option<NextBlock>,
    /// Decoded points not yielded yet, smallest first.
    pending: BinaryHeap<Reverse<Pending>>,
    /// An error was yielded: the iteration is over.
    failed: bool,
}

impl std::fmt::Debug for SeriesPoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesPoints").field("pending", &self.pending.len()).finish_non_exhaustive()
    }
}

impl SeriesPoints {
    /// Reads the next stored block's key and value into `next` (none when the series has no more).
    fn fetch(&mut self) -> Result<(), MetricsError> {
        self.next = match self.blocks.next() {
            None => None,
            Some(pair) => {
                let (k, v) = pair?;
                let (first, id) = layout::parse_block_suffix(k.get(self.prefix_len..).unwrap_or_default())
                    .ok_or_else(|| MetricsError::corruption(&k, 0, "malformed block key"))?;
                Some((first, id, k, v))
            }
        };
        Ok(())
    }

    /// Decodes the block in `next` into `pending`, then fetches the one after it.
    fn load(&mut self) -> Result<(), MetricsError> {
        if let Some((_, id, k, v)) = self.next.take() {
            let (_, points) = read_block(&k, &v)?;
            for (pos, p) in points.into_iter().enumerate() {
                let pos = u32::try_from(pos).unwrap_or(u32::MAX);
                self.pending.push(Reverse((p.step, id, pos, p.timestamp_ms, p.value.to_bits())));
            }
        }
        self.fetch()
    }
}

impl Iterator for SeriesPoints {
    type Item = Result<Point, MetricsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let load = match (&self.next, self.pending.peek()) {
                (None, None) => return None,
                (Some(_), None) => true,
                (Some(block), Some(Reverse(top))) => block.0 <= top.0,
                (None, Some(_)) => false,
            };
            if !load {
                let Reverse((step, _, _, timestamp_ms, bits)) = self.pending.pop()?;
                return Some(Ok(Point { step, timestamp_ms, value: f64::from_bits(bits) }));
            }
            if let Err(e) = self.load() {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

    use super::*;
    use crate::metrics::{HistoryRequest, MetricPoint, Metrics};
    use crate::Store;

    fn metrics() -> (tempfile::TempDir, Metrics) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, Metrics::new(store))
    }

    fn history(m: &Metrics, run: &str, key: &str) -> Vec<Point> {
        m.history(&HistoryRequest::new(run, key)).unwrap().points
    }

    fn points(snap: &StoreSnapshot, run: &str, key: &str) -> Vec<Point> {
        snap.metric_points(run, key).unwrap().map(Result::unwrap).collect()
    }

    fn bits(points: &[Point]) -> Vec<(i64, i64, u64)> {
        points.iter().map(|p| (p.step, p.timestamp_ms, p.value.to_bits())).collect()
    }

    #[test]
    fn series_are_listed_in_order_at_the_snapshot() {
        let (_dir, m) = metrics();
        m.log("run-b", &[MetricPoint::new("loss", 1, 10, 0.5)]).unwrap();
        m.log(
            "run-a",
            &[
                MetricPoint::new("val/acc", 3, 30, 0.25),
                MetricPoint::new("loss", 2, 20, 1.0),
                MetricPoint::new("loss", 1, 11, 2.0),
            ],
        )
        .unwrap();
        let snap = m.store().snapshot();
        m.log("run-a", &[MetricPoint::new("lr", 0, 0, 0.1)]).unwrap();
        let listed: Vec<SeriesSummary> = snap.metric_series().unwrap().map(Result::unwrap).collect();
        let names: Vec<(&str, &str, u64)> = listed.iter().map(|s| (s.run.as_str(), s.key.as_str(), s.points)).collect();
        assert_eq!(names, [("run-a", "loss", 2), ("run-a", "val/acc", 1), ("run-b", "loss", 1)]);
        assert_eq!(listed[0].latest, Point { step: 2, timestamp_ms: 20, value: 1.0 });
        assert_eq!(bits(&points(&snap, "run-a", "loss")), [(1, 11, 2.0f64.to_bits()), (2, 20, 1.0f64.to_bits())]);
        assert!(points(&snap, "run-a", "lr").is_empty(), "logged after the snapshot");
        assert_eq!(m.store().snapshot().metric_series().unwrap().count(), 4);
        assert!(points(&snap, "nobody", "loss").is_empty());
        assert!(matches!(snap.metric_points("", "loss"), Err(MetricsError::Invalid(_))));
    }

    #[test]
    fn points_come_in_history_order_bit_for_bit() {
        let (_dir, m) = metrics();
        let nan = f64::from_bits(0x7ff8_0000_dead_beef);
        let specials = [nan, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, f64::MIN_POSITIVE];
        let mut state = 7u64;
        let mut rand = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        // Batches out of order with repeated steps: overlapping blocks, merged by (step, block, position).
        for batch in 0..8 {
            let pts: Vec<MetricPoint> = (0..700)
                .map(|i| {
                    let step = rand(2500) as i64 - 100;
                    let value = if i % 50 == 0 { specials[(i / 50) % specials.len()] } else { rand(1000) as f64 / 3.0 };
                    MetricPoint::new("loss", step, 1_700_000_000_000 + batch * 1000 + i as i64, value)
                })
                .collect();
            m.log("r", &pts).unwrap();
        }
        m.log("r", &(0..3000).map(|s| MetricPoint::new("acc", s, s, s as f64)).collect::<Vec<_>>()).unwrap();
        let snap = m.store().snapshot();
        for key in ["loss", "acc"] {
            let got = points(&snap, "r", key);
            assert_eq!(bits(&got), bits(&history(&m, "r", key)), "{key}");
        }
        assert_eq!(points(&snap, "r", "loss").len(), 5600);
        assert!(points(&snap, "r", "loss").iter().any(|p| p.value.to_bits() == nan.to_bits()));
    }

    #[test]
    fn any_change_gives_another_fingerprint() {
        let (_dir, m) = metrics();
        let fingerprint = |m: &Metrics| m.store().snapshot().metric_series().unwrap().next().unwrap().unwrap();
        let at = |s: i64| 1_700_000_000_000 + s * 1000;
        m.log("r", &(0..2000).map(|s| MetricPoint::new("loss", s, at(s), 1.0)).collect::<Vec<_>>()).unwrap();
        let first = fingerprint(&m);
        assert_eq!(fingerprint(&m), first, "reads do not change it");
        // A block's worth logged below the latest step, then the first block removed by retention: the same
        // count and latest point.
        m.log("r", &(0..1024).map(|s| MetricPoint::new("loss", s, at(3000), 2.0)).collect::<Vec<_>>()).unwrap();
        assert_eq!(m.expire_before(at(1023) + 1).unwrap().points, 1024);
        let after = fingerprint(&m);
        assert_eq!((after.points, after.latest), (first.points, first.latest));
        assert_ne!(after.fingerprint, first.fingerprint);
    }
}
