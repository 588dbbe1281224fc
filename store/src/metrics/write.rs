//! Logging points, deleting a run's metrics, and retention by age.

use std::collections::BTreeMap;

use cairn_engine::{Condition, Durability, Snapshot, WriteBatch, WriteError, WriteOptions};

use super::block::{self, BLOCK_POINTS};
use super::error::MetricsError;
use super::layout::{self, Series};
use super::model::{LogReceipt, MetricPoint, Point, RemovedReport, MAX_LOG_POINTS};
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
        let mut by_key: BTreeMap<&str, Vec<Point>> = BTreeMap::new();
        for p in points {
            by_key.entry(p.key.as_str()).or_default().push(Point {
                step: p.step,
                timestamp_ms: p.timestamp_ms,
                value: p.value,
            });
        }
        for key in by_key.keys() {
            layout::check_name("metric key", key)?;
        }
        for pts in by_key.values_mut() {
            pts.sort_by_key(|p| p.step); // stable: log order within a step
        }
        for _ in 0..WRITE_ATTEMPTS {
            let snap = self.store.db().snapshot();
            let mut batch = WriteBatch::new();
            let mut conditions = Vec::with_capacity(by_key.len());
            for (key, pts) in &by_key {
                append(&snap, &mut batch, run, key, pts.clone())?;
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

/// Adds to `batch` the writes that append `pts` (sorted by step) to series `key` of `run` as of `snap`.
fn append(snap: &Snapshot, batch: &mut WriteBatch, run: &str, key: &str, pts: Vec<Point>) -> Result<(), MetricsError> {
    let skey = layout::series_key(run, key);
    let prefix = layout::blocks_prefix(run, key);
    let old = read_series(snap, &skey)?;
    let Some(last_new) = pts.last().copied() else { return Ok(()) };
    let first_new = pts.first().map_or(last_new.step, |p| p.step);
    let mut series = old.unwrap_or(Series {
        next_id: 0,
        open_id: 0,
        open_first_step: first_new,
        open_count: 0,
        max_span: 0,
        min_step: first_new,
        points: 0,
        latest: last_new,
    });
    let added = pts.len() as u64;
    // The open block's points, then the new ones; the first chunk keeps the open block's id.
    let (mut merged, mut id, old_key) = if series.open_count > 0 && (series.open_count as usize) < BLOCK_POINTS {
        let okey = block_key_of(&prefix, series.open_first_step, series.open_id);
        let value = snap.get(&okey)?.ok_or_else(|| MetricsError::corruption(&okey, 0, "open block missing"))?;
        let (_, open) = read_block(&okey, &value)?;
        (merge(open, pts), series.open_id, Some(okey))
    } else {
        let id = series.next_id;
        series.next_id += 1;
        (pts, id, None)
    };
    let mut chunks = Vec::new();
    while merged.len() > BLOCK_POINTS {
        let rest = merged.split_off(BLOCK_POINTS);
        chunks.push(std::mem::replace(&mut merged, rest));
    }
    chunks.push(merged);
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.iter().enumerate() {
        let (Some(first), Some(end)) = (chunk.first(), chunk.last()) else { continue };
        if i > 0 {
            id = series.next_id;
            series.next_id += 1;
        }
        let k = block_key_of(&prefix, first.step, id);
        if i == 0 {
            if let Some(okey) = &old_key {
                if *okey != k {
                    batch.delete(okey);
                }
            }
        }
        batch.put(&k, block::encode(chunk));
        series.max_span = series.max_span.max(end.step.wrapping_sub(first.step) as u64);
        if i == last {
            series.open_id = id;
            series.open_first_step = first.step;
            series.open_count = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        }
    }
    series.min_step = series.min_step.min(first_new);
    if series.points == 0 || last_new.step >= series.latest.step {
        series.latest = last_new;
    }
    series.points += added;
    batch.put(&skey, series.encode());
    Ok(())
}

fn block_key_of(prefix: &[u8], first_step: i64, id: u64) -> Vec<u8> {
    layout::block_key(prefix, first_step, id)
}
