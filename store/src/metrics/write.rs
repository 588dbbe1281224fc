//! Logging points, deleting a run's metrics, and retention by age.

use std::collections::HashMap;

use cairn_engine::{Condition, Durability, Snapshot, WriteBatch, WriteError, WriteOptions};

use super::block::{self, BLOCK_POINTS};
use super::error::MetricsError;
use super::layout::{self, Series};
use super::model::{LogReceipt, MetricPoint, Point, RemovedReport, MAX_LOG_POINTS};
use super::open::OpenBlocks;
use super::{Metrics, WRITE_ATTEMPTS};

/// Merges two runs sorted by step into one, `a`'s points before `b`'s at equal steps.
fn merge(a: Vec<Point>, b: Vec<Point>) -> Vec<Point> {
    if a.last().zip(b.first()).is_none_or(|(x, y)| x.step <= y.step) {
        let mut a = a;
        a.extend(b);
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut ia, mut ib) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let take_a = match (ia.peek(), ib.peek()) {
            (Some(x), Some(y)) => x.step <= y.step,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_a { ia.next() } else { ib.next() });
    }
    out
}

/// Reads a block's points, reporting corruption with its key.
pub(crate) fn read_block(key: &[u8], value: &[u8]) -> Result<(block::Header, Vec<Point>), MetricsError> {
    block::decode(value).map_err(|e| MetricsError::corruption(key, e.offset, e.reason))
}

/// The series entry of `key`, if any, as of `snap`.
pub(crate) fn read_series(snap: &Snapshot, key: &[u8]) -> Result<Option<Series>, MetricsError> {
    snap.get(key)?.map(|v| Series::decode(key, &v)).transpose()
}

/// Commits `batch` if no key of `conditions` changed since `seq`; `Ok(None)` if one did.
fn commit(metrics: &Metrics, batch: WriteBatch, conditions: Vec<Condition>) -> Result<Option<u64>, MetricsError> {
    match metrics.store.db().write_if(batch, conditions, WriteOptions::durability(Durability::Immediate)) {
        Ok(seq) => Ok(Some(seq)),
        Err(WriteError::ConditionFailed { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Metrics {
    /// Logs `points` of `run`, any number of metric keys, in one atomic, durable commit (synced before it
    /// returns; concurrent calls share the sync). Points may come in any order and repeat steps: a history
    /// is every point logged, ordered by step, then by log order (the order of `points`, then of calls).
    ///
    /// Fails with [`MetricsError::Invalid`] (writing nothing) for an empty batch, more than
    /// [`MAX_LOG_POINTS`] points, or a run id or key that is empty, longer than
    /// [`MAX_NAME_LEN`](super::MAX_NAME_LEN) bytes or holds NUL.
    pub fn log(&self, run: &str, points: &[MetricPoint]) -> Result<LogReceipt, MetricsError> {
        layout::check_name("run", run)?;
        if points.is_empty() || points.len() > MAX_LOG_POINTS {
            return Err(MetricsError::Invalid(format!(
                "a batch holds 1 to {MAX_LOG_POINTS} points, not {}",
                points.len()
            )));
        }
        // The points of each key, keys in order. Batches usually cycle through their keys, so the slot after
        // the last one used is tried before the map.
        let mut slots: HashMap<&str, usize> = HashMap::new();
        let mut by_key: Vec<(&str, Vec<Point>)> = Vec::new();
        let mut next = 0;
        for p in points {
            let key = p.key.as_str();
            let slot = match by_key.get(next) {
                Some((k, _)) if *k == key => next,
                _ => *slots.entry(key).or_insert_with(|| {
                    by_key.push((key, Vec::new()));
                    by_key.len() - 1
                }),
            };
            next = if slot + 1 == by_key.len() { 0 } else { slot + 1 };
            if let Some((_, pts)) = by_key.get_mut(slot) {
                pts.push(Point { step: p.step, timestamp_ms: p.timestamp_ms, value: p.value });
            }
        }
        by_key.sort_unstable_by_key(|(key, _)| *key);
        for (key, pts) in &mut by_key {
            layout::check_name("metric key", key)?;
            pts.sort_by_key(|p| p.step); // stable: log order within a step
        }
        for _ in 0..WRITE_ATTEMPTS {
            let snap = self.store.db().snapshot();
            let mut batch = WriteBatch::new();
            let mut conditions = Vec::with_capacity(by_key.len());
            for (key, pts) in &by_key {
                append(&self.open, &snap, &mut batch, run, key, pts)?;
                conditions.push(Condition::unchanged_since(layout::series_key(run, key), snap.sequence()));
            }
            if let Some(sequence) = commit(self, batch, conditions)? {
                return Ok(LogReceipt { points: points.len() as u64, series: by_key.len() as u64, sequence });
            }
        }
        Err(MetricsError::Contention { attempts: WRITE_ATTEMPTS })
    }

    /// Deletes every metric of `run`: its blocks and series entries, a series at a time in one commit each.
    /// Points logged meanwhile to a series not yet deleted are deleted with it; points logged after are
    /// kept.
    pub fn delete_run(&self, run: &str) -> Result<RemovedReport, MetricsError> {
        layout::check_name("run", run)?;
        let mut report = RemovedReport::default();
        let prefix = layout::run_series_prefix(run);
        let keys: Vec<String> = {
            let snap = self.store.db().snapshot();
            let mut keys = Vec::new();
            for pair in snap.prefix(&prefix)? {
                let (k, _) = pair?;
                keys.push(String::from_utf8_lossy(k.get(prefix.len()..).unwrap_or_default()).into_owned());
            }
            keys
        };
        for key in keys {
            let r = self.rewrite_series(run, &key, |_| true)?;
            report.blocks += r.blocks;
            report.points += r.points;
            report.series += r.series;
        }
        Ok(report)
    }

    /// Retention: removes every block whose newest timestamp is before `cutoff_ms`, in every series of every
    /// run (a commit per series), and the series left empty. A block is removed whole, so points older than
    /// the cutoff remain while their block holds a newer one. The latest value of a series that keeps any
    /// block is kept.
    pub fn expire_before(&self, cutoff_ms: i64) -> Result<RemovedReport, MetricsError> {
        self.expire_runs_before(cutoff_ms, |_| true)
    }

    /// [`Metrics::expire_before`] for the runs `selected` accepts only (retention per experiment: the runs
    /// of one experiment, or every run but those of experiments with a retention of their own).
    pub fn expire_runs_before(
        &self,
        cutoff_ms: i64,
        selected: impl Fn(&str) -> bool,
    ) -> Result<RemovedReport, MetricsError> {
        let mut report = RemovedReport::default();
        let series: Vec<(String, String)> = {
            let snap = self.store.db().snapshot();
            let mut out = Vec::new();
            for pair in snap.prefix(layout::SERIES)? {
                let (k, _) = pair?;
                let rest = k.get(layout::SERIES.len()..).unwrap_or_default();
                let mut parts = rest.splitn(2, |b| *b == 0);
                let (Some(run), Some(key)) = (parts.next(), parts.next()) else {
                    return Err(MetricsError::corruption(&k, 0, "series key without run and metric key"));
                };
                let run = String::from_utf8_lossy(run).into_owned();
                if selected(&run) {
                    out.push((run, String::from_utf8_lossy(key).into_owned()));
                }
            }
            out
        };
        for (run, key) in series {
            let r = self.rewrite_series(&run, &key, |h| h.max_ts < cutoff_ms)?;
            report.blocks += r.blocks;
            report.points += r.points;
            report.series += r.series;
        }
        Ok(report)
    }

    /// Removes the blocks of one series that `drop` selects, in one commit conditional on its series entry;
    /// removes the entry if no block is left, else fixes its open block and lowest step.
    fn rewrite_series(
        &self,
        run: &str,
        key: &str,
        drop: impl Fn(&block::Header) -> bool,
    ) -> Result<RemovedReport, MetricsError> {
        let skey = layout::series_key(run, key);
        let prefix = layout::blocks_prefix(run, key);
        for _ in 0..WRITE_ATTEMPTS {
            let snap = self.store.db().snapshot();
            let Some(mut series) = read_series(&snap, &skey)? else { return Ok(RemovedReport::default()) };
            let mut batch = WriteBatch::new();
            let mut report = RemovedReport::default();
            let mut kept_min: Option<i64> = None;
            let mut open_kept = false;
            for pair in snap.prefix(&prefix)? {
                let (k, v) = pair?;
                let (first, id) = layout::parse_block_suffix(k.get(prefix.len()..).unwrap_or_default())
                    .ok_or_else(|| MetricsError::corruption(&k, 0, "malformed block key"))?;
                let h = block::decode_header(&v).map_err(|e| MetricsError::corruption(&k, e.offset, e.reason))?;
                if drop(&h) {
                    batch.delete(&k);
                    report.blocks += 1;
                    report.points += u64::from(h.count);
                } else {
                    kept_min = Some(kept_min.map_or(first, |m: i64| m.min(first)));
                    open_kept |= id == series.open_id;
                }
            }
            if report.blocks == 0 {
                return Ok(report);
            }
            match kept_min {
                None => {
                    batch.delete(&skey);
                    report.series = 1;
                }
                Some(min) => {
                    series.min_step = min;
                    series.points = series.points.saturating_sub(report.points);
                    if !open_kept {
                        series.open_count = 0;
                    }
                    batch.put(&skey, series.encode());
                }
            }
            if commit(self, batch, vec![Condition::unchanged_since(skey.clone(), snap.sequence())])?.is_some() {
                return Ok(report);
            }
        }
        Err(MetricsError::Contention { attempts: WRITE_ATTEMPTS })
    }
}

/// How appends to an existing open block went on this thread: rewritten whole, resumed after decoding
/// it, resumed from the state remembered by the handle; for tests that must reach each path.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Appends {
    pub(crate) rewritten: u64,
    pub(crate) decoded: u64,
    pub(crate) remembered: u64,
}

#[cfg(test)]
thread_local! {
    static APPENDS: std::cell::Cell<Appends> = const {
        std::cell::Cell::new(Appends { rewritten: 0, decoded: 0, remembered: 0 })
    };
}

/// The appends to an existing open block on this thread so far.
#[cfg(test)]
pub(crate) fn appends() -> Appends {
    APPENDS.with(std::cell::Cell::get)
}

#[cfg(test)]
fn count_append(f: impl FnOnce(&mut Appends)) {
    APPENDS.with(|c| {
        let mut a = c.get();
        f(&mut a);
        c.set(a);
    });
}

/// An open block holding fewer points than this is rewritten whole by the next append, its codes chosen
/// again from more points; from this many on, appends in step order add to its stream.
const RESUME_MIN: usize = 64;

/// `points` (sorted by step) cut into blocks of [`BLOCK_POINTS`], the last one possibly shorter.
fn cut(mut points: Vec<Point>) -> Vec<Vec<Point>> {
    let mut chunks = Vec::with_capacity(points.len().div_ceil(BLOCK_POINTS));
    while points.len() > BLOCK_POINTS {
        let tail = points.split_off(BLOCK_POINTS);
        chunks.push(std::mem::replace(&mut points, tail));
    }
    if !points.is_empty() {
        chunks.push(points);
    }
    chunks
}

/// Adds to `batch` the writes that append `pts` (sorted by step) to series `key` of `run` as of `snap`.
///
/// Points at steps not below the open block's last go on its streams while its codes take them and it has
/// room, from the state `open` remembers for it or else from decoding it ([`block::Builder::resume`]);
/// otherwise the open block's points and the new ones are merged and encoded again. Points past a full
/// block go to new blocks of up to [`BLOCK_POINTS`]. The block left open is remembered in `open`.
fn append(
    open: &OpenBlocks,
    snap: &Snapshot,
    batch: &mut WriteBatch,
    run: &str,
    key: &str,
    pts: &[Point],
) -> Result<(), MetricsError> {
    let skey = layout::series_key(run, key);
    let prefix = layout::blocks_prefix(run, key);
    let old = read_series(snap, &skey)?;
    let (Some(first_new), Some(last_new)) = (pts.first().copied(), pts.last().copied()) else { return Ok(()) };
    let mut series = old.unwrap_or(Series {
        next_id: 0,
        open_id: 0,
        open_first_step: first_new.step,
        open_count: 0,
        max_span: 0,
        min_step: first_new.step,
        points: 0,
        latest: last_new,
    });
    let added = pts.len() as u64;
    // The points still to write, sorted by step; the first chunk written keeps `id`.
    let (mut merged, mut reused) = (None, None);
    let mut rest = pts;
    if series.open_count > 0 && (series.open_count as usize) < BLOCK_POINTS {
        let okey = layout::block_key(&prefix, series.open_first_step, series.open_id);
        let value = snap.get(&okey)?.ok_or_else(|| MetricsError::corruption(&okey, 0, "open block missing"))?;
        let resumed = match open.take(&okey, &value) {
            _ if (series.open_count as usize) < RESUME_MIN => None,
            Some(b) => {
                #[cfg(test)]
                count_append(|a| a.remembered += 1);
                Some(b)
            }
            None => {
                #[cfg(test)]
                count_append(|a| a.decoded += 1);
                block::Builder::resume(&value).map_err(|e| MetricsError::corruption(&okey, e.offset, e.reason))?
            }
        };
        let appended = resumed.and_then(|mut b| {
            let mut taken = 0;
            for p in pts {
                if b.len() >= BLOCK_POINTS {
                    break;
                }
                if !b.push(p) {
                    return None;
                }
                taken += 1;
            }
            Some((b, taken))
        });
        #[cfg(test)]
        if appended.is_none() {
            count_append(|a| a.rewritten += 1);
        }
        match appended {
            Some((b, taken)) => {
                rest = pts.get(taken..).unwrap_or_default();
                if taken > 0 {
                    let span = b.last_step().wrapping_sub(series.open_first_step) as u64;
                    series.max_span = series.max_span.max(span);
                    series.open_count = u32::try_from(b.len()).unwrap_or(u32::MAX);
                    let bytes = b.bytes();
                    batch.put(&okey, &bytes);
                    if rest.is_empty() && b.len() < BLOCK_POINTS {
                        open.put(okey, bytes, b);
                    }
                }
            }
            None => {
                let (_, open) = read_block(&okey, &value)?;
                merged = Some(merge(open, pts.to_vec()));
                reused = Some((series.open_id, okey));
            }
        }
    }
    let chunks = cut(merged.unwrap_or_else(|| rest.to_vec()));
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.iter().enumerate() {
        let (Some(first), Some(end)) = (chunk.first(), chunk.last()) else { continue };
        let k = |id| layout::block_key(&prefix, first.step, id);
        let id = match reused.take() {
            Some((id, old_key)) => {
                if old_key != k(id) {
                    batch.delete(&old_key);
                }
                id
            }
            None => {
                series.next_id += 1;
                series.next_id - 1
            }
        };
        let Some(b) = block::build(chunk) else { continue };
        let bytes = b.bytes();
        batch.put(k(id), &bytes);
        series.max_span = series.max_span.max(end.step.wrapping_sub(first.step) as u64);
        if i == last {
            series.open_id = id;
            series.open_first_step = first.step;
            series.open_count = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            if chunk.len() < BLOCK_POINTS {
                open.put(k(id), bytes, b);
            }
        }
    }
    series.min_step = series.min_step.min(first_new.step);
    if series.points == 0 || last_new.step >= series.latest.step {
        series.latest = last_new;
    }
    series.points += added;
    batch.put(&skey, series.encode());
    Ok(())
}
