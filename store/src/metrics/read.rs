//! Reading series: histories by step or time range with cursors, latest values, downsampling.

use cairn_engine::Snapshot;

use super::block;
use super::error::MetricsError;
use super::layout::{self, Series};
use super::model::{
    Bucket, DownsampleRequest, HistoryPage, HistoryRequest, LatestValue, Point, RunSeries, MAX_BUCKETS, MAX_PAGE_POINTS,
};
use super::write::read_series;
use super::Metrics;

/// A point with where it sorts: step, block id, position in the block (step then log order).
type Placed = (i64, u64, u32, Point);

/// A stored block: its key, first step, id and value.
type StoredBlock = (Vec<u8>, i64, u64, Vec<u8>);

/// The blocks of a series that may hold steps in `[lo, hi]`, in key order (first step, then id), as
/// (key, first step, id, value).
fn blocks(
    snap: &Snapshot,
    run: &str,
    key: &str,
    series: &Series,
    lo: i64,
    hi: i64,
) -> Result<impl Iterator<Item = Result<StoredBlock, MetricsError>>, MetricsError> {
    let prefix = layout::blocks_prefix(run, key);
    let from =
        i64::try_from((i128::from(lo) - i128::from(series.max_span)).max(i128::from(i64::MIN))).unwrap_or(i64::MIN);
    let start = layout::block_key(&prefix, from, 0);
    let end = layout::block_key(&prefix, hi, u64::MAX);
    let plen = prefix.len();
    Ok(snap.range(start..=end)?.map(move |pair| {
        let (k, v) = pair?;
        let (first, id) = layout::parse_block_suffix(k.get(plen..).unwrap_or_default())
            .ok_or_else(|| MetricsError::corruption(&k, 0, "malformed block key"))?;
        Ok((k, first, id, v))
    }))
}

/// The points a history read gathers from its blocks. While each block starts after the steps of those
/// before it, its points come in history order and are kept as they are; once blocks overlap, every point
/// is kept with its block id and position, and sorted at the end.
#[derive(Default)]
struct Gathered {
    /// Points in history order, while blocks come in order.
    ordered: Vec<Point>,
    /// The id of each block gathered into `ordered`, and the index of its first point there.
    runs: Vec<(u64, usize)>,
    /// Highest step of the blocks gathered.
    max_step: Option<i64>,
    /// Every point with its place, once blocks overlap.
    placed: Option<Vec<Placed>>,
}

impl Gathered {
    fn len(&self) -> usize {
        self.placed.as_ref().map_or(self.ordered.len(), Vec::len)
    }

    /// Starts gathering the points of a block of steps `min` to `max`.
    fn begin_block(&mut self, id: u64, min: i64, max: i64) {
        if self.placed.is_none() && self.max_step.is_some_and(|m| min <= m) {
            let mut placed = Vec::with_capacity(self.ordered.len() + block::BLOCK_POINTS);
            for (i, (run_id, start)) in self.runs.iter().enumerate() {
                let len = self.ordered.len();
                let end = self.runs.get(i + 1).map_or(len, |r| r.1.min(len));
                for (pos, p) in self.ordered.get((*start).min(end)..end).unwrap_or_default().iter().enumerate() {
                    placed.push((p.step, *run_id, u32::try_from(pos).unwrap_or(u32::MAX), *p));
                }
            }
            self.ordered = Vec::new();
            self.placed = Some(placed);
        }
        if self.placed.is_none() {
            self.runs.push((id, self.ordered.len()));
        }
        self.max_step = Some(self.max_step.map_or(max, |m| m.max(max)));
    }

    /// Adds a point of the block begun last, at `pos` in it.
    fn push(&mut self, id: u64, pos: u32, p: Point) {
        match &mut self.placed {
            Some(placed) => placed.push((p.step, id, pos, p)),
            None => self.ordered.push(p),
        }
    }

    /// If at least `n` points are gathered: keeps the first `n` in history order and returns the last one's
    /// step.
    fn keep_first(&mut self, n: usize) -> Option<i64> {
        if self.len() < n || n == 0 {
            return None;
        }
        match &mut self.placed {
            Some(placed) => {
                placed.sort_by_key(|p| (p.0, p.1, p.2));
                placed.truncate(n);
                placed.last().map(|p| p.0)
            }
            None => {
                self.ordered.truncate(n);
                self.ordered.last().map(|p| p.step)
            }
        }
    }

    /// The points in history order.
    fn finish(self) -> Vec<Point> {
        match self.placed {
            Some(mut placed) => {
                placed.sort_by_key(|p| (p.0, p.1, p.2));
                placed.into_iter().map(|p| p.3).collect()
            }
            None => self.ordered,
        }
    }
}

/// A history cursor: go on at `step`, skipping the first `skip` points at that step.
fn parse_cursor(c: &str) -> Result<(i64, u64), MetricsError> {
    let bad = || MetricsError::Invalid(format!("malformed cursor {c:?}"));
    let (s, k) = c.strip_prefix('s').and_then(|r| r.split_once('.')).ok_or_else(bad)?;
    Ok((s.parse().map_err(|_| bad())?, k.parse().map_err(|_| bad())?))
}

fn check_range(lo: i64, hi: i64, what: &str) -> Result<(), MetricsError> {
    if lo > hi {
        return Err(MetricsError::Invalid(format!("{what} range [{lo}, {hi}] is empty")));
    }
    Ok(())
}

impl HistoryRequest {
    /// The checks [`Metrics::history`] makes before it reads (all but the cursor's, whose form is the
    /// store's own): the names, the limit (1 to [`MAX_PAGE_POINTS`]) and the step and time ranges (not
    /// empty), failing with [`MetricsError::Invalid`].
    pub fn check(&self) -> Result<(), MetricsError> {
        layout::check_name("run", &self.run)?;
        layout::check_name("metric key", &self.key)?;
        if self.limit == 0 || self.limit > MAX_PAGE_POINTS {
            return Err(MetricsError::Invalid(format!("limit must be 1 to {MAX_PAGE_POINTS}, not {}", self.limit)));
        }
        check_range(self.min_step.unwrap_or(i64::MIN), self.max_step.unwrap_or(i64::MAX), "step")?;
        check_range(self.min_timestamp_ms.unwrap_or(i64::MIN), self.max_timestamp_ms.unwrap_or(i64::MAX), "time")
    }
}

impl DownsampleRequest {
    /// The checks [`Metrics::downsample`] makes before it reads: the names, `max_points` (1 to
    /// [`MAX_BUCKETS`]) and the step range when both ends are given (not empty), failing with
    /// [`MetricsError::Invalid`].
    pub fn check(&self) -> Result<(), MetricsError> {
        layout::check_name("run", &self.run)?;
        layout::check_name("metric key", &self.key)?;
        if self.max_points == 0 || self.max_points > MAX_BUCKETS {
            return Err(MetricsError::Invalid(format!(
                "max_points must be 1 to {MAX_BUCKETS}, not {}",
                self.max_points
            )));
        }
        if let (Some(lo), Some(hi)) = (self.min_step, self.max_step) {
            check_range(lo, hi, "step")?;
        }
        Ok(())
    }
}

/// Running summary of one bucket.
#[derive(Clone, Copy)]
struct Acc {
    count: u64,
    nan: u64,
    min: f64,
    max: f64,
    sum: f64,
    last: Option<(i64, u64, u32, f64)>,
}

impl Acc {
    const EMPTY: Acc = Acc { count: 0, nan: 0, min: f64::NAN, max: f64::NAN, sum: 0.0, last: None };

    fn extremes(&mut self, min: f64, max: f64) {
        if !min.is_nan() && (self.min.is_nan() || min < self.min) {
            self.min = min;
        }
        if !max.is_nan() && (self.max.is_nan() || max > self.max) {
            self.max = max;
        }
    }

    fn last(&mut self, at: (i64, u64, u32, f64)) {
        if self.last.is_none_or(|l| (l.0, l.1, l.2) < (at.0, at.1, at.2)) {
            self.last = Some(at);
        }
    }

    /// Adds a point that comes after every point added so far (in history order).
    fn point(&mut self, p: &Point, id: u64, pos: u32) {
        self.count += 1;
        if p.value.is_nan() {
            self.nan += 1;
        } else {
            self.extremes(p.value, p.value);
            self.sum += p.value;
        }
        self.last = Some((p.step, id, pos, p.value));
    }

    /// Adds the points summed in `other`.
    fn merge(&mut self, other: &Acc) {
        let Some(last) = other.last else { return };
        self.count += other.count;
        self.nan += other.nan;
        self.extremes(other.min, other.max);
        self.sum += other.sum;
        self.last(last);
    }

    fn header(&mut self, h: &block::Header, id: u64) {
        self.count += u64::from(h.count);
        self.nan += u64::from(h.nan_count);
        self.extremes(h.min, h.max);
        if h.nan_count < h.count {
            self.sum += h.sum;
        }
        self.last((h.max_step, id, h.count - 1, h.last));
    }
}

impl Metrics {
    /// A page of one series' history: points in the request's step and time ranges, ordered by step then
    /// log order. Only blocks that may hold steps of the range are read, and a page stops reading once it
    /// is full. An unknown run or key has no points.
    ///
    /// Fails with [`MetricsError::Invalid`] for a bad name, an empty range, a limit of 0 or over
    /// [`MAX_PAGE_POINTS`], or a malformed cursor; with [`MetricsError::Corruption`] if a block it reads
    /// fails its checksum.
    pub fn history(&self, req: &HistoryRequest) -> Result<HistoryPage, MetricsError> {
        req.check()?;
        let (mut lo, hi) = (req.min_step.unwrap_or(i64::MIN), req.max_step.unwrap_or(i64::MAX));
        let (tlo, thi) = (req.min_timestamp_ms.unwrap_or(i64::MIN), req.max_timestamp_ms.unwrap_or(i64::MAX));
        let (at, skip) = match &req.cursor {
            Some(c) => parse_cursor(c)?,
            None => (lo, 0),
        };
        if at < lo {
            return Err(MetricsError::Invalid(format!("cursor step {at} is below the range")));
        }
        lo = at;
        let empty = HistoryPage { points: Vec::new(), next_cursor: None };
        if lo > hi {
            return Ok(empty);
        }
        let snap = self.store.db().snapshot();
        let Some(series) = read_series(&snap, &layout::series_key(&req.run, &req.key))? else { return Ok(empty) };
        let needed = usize::try_from(skip).unwrap_or(usize::MAX).saturating_add(req.limit).saturating_add(1);
        let mut got = Gathered::default();
        for b in blocks(&snap, &req.run, &req.key, &series, lo, hi)? {
            let (k, first, id, v) = b?;
            if got.keep_first(needed).is_some_and(|step| first > step) {
                break;
            }
            let h = block::decode_header(&v).map_err(|e| MetricsError::corruption(&k, e.offset, e.reason))?;
            if h.max_step < lo || h.max_ts < tlo || h.min_ts > thi {
                continue;
            }
            got.begin_block(id, h.min_step, h.max_step);
            let mut pos = 0u32;
            block::decode_each(&v, |p| {
                if p.step >= lo && p.step <= hi && p.timestamp_ms >= tlo && p.timestamp_ms <= thi {
                    got.push(id, pos, p);
                }
                pos += 1;
            })
            .map_err(|e| MetricsError::corruption(&k, e.offset, e.reason))?;
        }
        let got = got.finish();
        let skipped = got.iter().take_while(|p| p.step == at).count().min(usize::try_from(skip).unwrap_or(usize::MAX));
        let mut points = got;
        points.drain(..skipped);
        let more = points.len() > req.limit;
        points.truncate(req.limit);
        let next_cursor = match points.last() {
            Some(last) if more => {
                let same = points.iter().rev().take_while(|p| p.step == last.step).count() as u64;
                let carried = if last.step == at { skip } else { 0 };
                Some(format!("s{}.{}", last.step, same + carried))
            }
            _ => None,
        };
        Ok(HistoryPage { points, next_cursor })
    }

    /// The latest point of every metric of `run`, by key, from the series entries kept on write (no block
    /// is read). Empty for an unknown run.
    pub fn latest(&self, run: &str) -> Result<Vec<LatestValue>, MetricsError> {
        layout::check_name("run", run)?;
        let prefix = layout::run_series_prefix(run);
        let mut out = Vec::new();
        for pair in self.store.db().prefix(&prefix)? {
            let (k, v) = pair?;
            let s = Series::decode(&k, &v)?;
            let key = String::from_utf8_lossy(k.get(prefix.len()..).unwrap_or_default()).into_owned();
            out.push(LatestValue { key, point: s.latest, points: s.points });
        }
        Ok(out)
    }

    /// The latest point of metric `key` in each of `runs` (`None` where a run has no such metric), in the
    /// order of `runs`.
    pub fn latest_of(&self, runs: &[String], key: &str) -> Result<Vec<(String, Option<LatestValue>)>, MetricsError> {
        layout::check_name("metric key", key)?;
        let snap = self.store.db().snapshot();
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            layout::check_name("run", run)?;
            let s = read_series(&snap, &layout::series_key(run, key))?;
            let v = s.map(|s| LatestValue { key: key.to_owned(), point: s.latest, points: s.points });
            out.push((run.clone(), v));
        }
        Ok(out)
    }

    /// One series downsampled: the request's steps cut into at most `max_points` buckets of equal width
    /// (the last may be narrower), each with the count, min, max, mean and last value of its points. A
    /// block that lies inside one bucket is summarized from its header without decoding its points.
    /// Empty for an unknown run or key.
    ///
    /// Fails with [`MetricsError::Invalid`] for a bad name, an empty range or `max_points` of 0 or over
    /// [`MAX_BUCKETS`]; with [`MetricsError::Corruption`] if a block it reads fails its checksum.
    pub fn downsample(&self, req: &DownsampleRequest) -> Result<Vec<Bucket>, MetricsError> {
        let snap = self.store.db().snapshot();
        self.downsample_at(&snap, req)
    }

    /// The same metric of many runs, each downsampled as [`Metrics::downsample`] does, all from one
    /// snapshot, in the order of `runs`; `req.run` is ignored.
    pub fn compare(&self, runs: &[String], req: &DownsampleRequest) -> Result<Vec<RunSeries>, MetricsError> {
        let snap = self.store.db().snapshot();
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            let one = DownsampleRequest { run: run.clone(), ..req.clone() };
            out.push(RunSeries { run: run.clone(), buckets: self.downsample_at(&snap, &one)? });
        }
        Ok(out)
    }

    fn downsample_at(&self, snap: &Snapshot, req: &DownsampleRequest) -> Result<Vec<Bucket>, MetricsError> {
        req.check()?;
        let Some(series) = read_series(snap, &layout::series_key(&req.run, &req.key))? else { return Ok(Vec::new()) };
        let lo = req.min_step.unwrap_or(series.min_step);
        let hi = req.max_step.unwrap_or(series.latest.step);
        if lo > hi {
            return Ok(Vec::new());
        }
        let n = req.max_points as i128;
        let span = i128::from(hi) - i128::from(lo) + 1;
        let width = (span + n - 1) / n;
        let buckets = usize::try_from((span + width - 1) / width).unwrap_or(req.max_points);
        let index = |step: i64| usize::try_from((i128::from(step) - i128::from(lo)) / width).unwrap_or(0);
        let mut acc = vec![Acc::EMPTY; buckets];
        for b in blocks(snap, &req.run, &req.key, &series, lo, hi)? {
            let (k, _, id, v) = b?;
            let h = block::decode_header(&v).map_err(|e| MetricsError::corruption(&k, e.offset, e.reason))?;
            if h.max_step < lo || h.min_step > hi {
                continue;
            }
            if h.min_step >= lo && h.max_step <= hi && index(h.min_step) == index(h.max_step) {
                if let Some(a) = acc.get_mut(index(h.min_step)) {
                    a.header(&h, id);
                }
                continue;
            }
            // Points come in step order: those of one bucket are summed apart and added to it once the
            // next point passes its end. Timestamps are not needed.
            let (mut pos, mut bucket, mut bucket_end, mut run) = (0u32, 0usize, None, Acc::EMPTY);
            block::decode_values_each(&v, |p| {
                if p.step >= lo && p.step <= hi {
                    if bucket_end.is_none_or(|end| p.step > end) {
                        if let Some(a) = acc.get_mut(bucket) {
                            a.merge(&run);
                        }
                        run = Acc::EMPTY;
                        bucket = index(p.step);
                        let end = i128::from(lo) + (bucket as i128 + 1) * width - 1;
                        bucket_end = Some(i64::try_from(end).unwrap_or(i64::MAX));
                    }
                    run.point(&p, id, pos);
                }
                pos += 1;
            })
            .map_err(|e| MetricsError::corruption(&k, e.offset, e.reason))?;
            if let Some(a) = acc.get_mut(bucket) {
                a.merge(&run);
            }
        }
        let mut out = Vec::new();
        for (i, a) in acc.iter().enumerate() {
            let Some(last) = a.last else { continue };
            let start = i128::from(lo) + i as i128 * width;
            let end = (start + width - 1).min(i128::from(hi));
            let numeric = a.count - a.nan;
            out.push(Bucket {
                start_step: i64::try_from(start).unwrap_or(i64::MAX),
                end_step: i64::try_from(end).unwrap_or(i64::MAX),
                count: a.count,
                nan_count: a.nan,
                min: a.min,
                max: a.max,
                mean: if numeric == 0 { f64::NAN } else { a.sum / numeric as f64 },
                last_step: last.0,
                last: last.3,
            });
        }
        Ok(out)
    }
}
