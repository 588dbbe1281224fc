//! Logging batches, deleting a run's metrics, and retention by age.
//!
//! A batch is one transaction: the transaction advisory locks of its series in key order (one statement,
//! which also takes the batch's number from `cairn_run_metric_batches`), its points written with `COPY ...
//! FROM STDIN (FORMAT binary)`, then one statement upserting its series rows: counts added, the lowest step
//! and timestamp bounds widened, the latest point replaced when the batch's is later in `(step, seq)`. The
//! locks make the batches of one series take their numbers in the order they commit, so that log order is
//! commit order and a reader never finds a point placed before one it has already seen at the same step.
//! (`COPY` and a multi-row `INSERT ... SELECT FROM unnest(...)` of the columns as arrays took the same time
//! for batches of 1,000 points; for 10,000, `COPY` took 15 to 25% less.)
//!
//! Deletion and retention lock series rows instead (a batch waits for them at its upsert, and then counts
//! its points onto what they left); their points go in the same transaction as the rows.

use std::collections::BTreeMap;

use cairn_store::metrics::{check_name, LogReceipt, MetricPoint, MetricsError, RemovedReport, MAX_LOG_POINTS};
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::schema::SEQ_SHIFT;
use super::{value_bits, Fail, Inner, Tx};

/// What a batch adds to one series.
#[derive(Debug, Clone, Copy)]
struct Added {
    points: i64,
    min_step: i64,
    /// The index in the batch of the series' latest point in it (highest step, last logged).
    latest: usize,
    min_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

/// The types of the points' columns as [`COPY`](super::schema::Sql::copy_points) writes them.
const COPY_TYPES: [Type; 7] = [Type::INT8, Type::INT8, Type::INT8, Type::FLOAT8, Type::INT8, Type::TEXT, Type::TEXT];

impl Inner {
    /// Logs `points` of `run` in one transaction, as [`Metrics::log`](cairn_store::metrics::Metrics::log)
    /// does (the same refusals, checked in the same order); the receipt's `sequence` is the batch's number.
    pub(crate) fn log(&self, run: &str, points: &[MetricPoint]) -> Result<LogReceipt, MetricsError> {
        check_name("run", run)?;
        if points.is_empty() || points.len() > MAX_LOG_POINTS {
            return Err(MetricsError::Invalid(format!(
                "a batch holds 1 to {MAX_LOG_POINTS} points, not {}",
                points.len()
            )));
        }
        let mut series: BTreeMap<&str, Added> = BTreeMap::new();
        for (i, p) in points.iter().enumerate() {
            let a = series.entry(p.key.as_str()).or_insert(Added {
                points: 0,
                min_step: p.step,
                latest: i,
                min_timestamp_ms: p.timestamp_ms,
                max_timestamp_ms: p.timestamp_ms,
            });
            a.points += 1;
            a.min_step = a.min_step.min(p.step);
            if points.get(a.latest).is_none_or(|l| p.step >= l.step) {
                a.latest = i;
            }
            a.min_timestamp_ms = a.min_timestamp_ms.min(p.timestamp_ms);
            a.max_timestamp_ms = a.max_timestamp_ms.max(p.timestamp_ms);
        }
        for key in series.keys() {
            check_name("metric key", key)?;
        }
        let batch = self.block_on(self.retrying(|| self.try_log(run, points, &series)))?;
        Ok(LogReceipt { points: points.len() as u64, series: series.len() as u64, sequence: batch.max(0) as u64 })
    }

    /// One attempt at [`Inner::log`]: the batch's number.
    async fn try_log(&self, run: &str, points: &[MetricPoint], series: &BTreeMap<&str, Added>) -> Result<i64, Fail> {
        let mut conn = self.conn().await?;
        let mut tx = Tx::begin(&mut conn).await?;
        let locks: Vec<i64> = series.keys().map(|k| self.series_lock(run, k)).collect();
        let rows = tx.query(&self.sql.lock_and_number, &[&locks]).await?;
        let batch: i64 = rows.first().ok_or_else(|| Fail::corrupt("no batch number".into()))?.try_get(0)?;
        let base = batch
            .checked_mul(1 << SEQ_SHIFT)
            .ok_or_else(|| Fail::corrupt(format!("batch number {batch} is past the last one")))?;
        let seq = |i: usize| base + i as i64;
        let writer = BinaryCopyInWriter::new(tx.copy_in(&self.sql.copy_points).await?, &COPY_TYPES);
        pin_mut!(writer);
        for (i, p) in points.iter().enumerate() {
            let bits = value_bits(p.value);
            writer.as_mut().write(&[&p.step, &seq(i), &p.timestamp_ms, &p.value, &bits, &run, &p.key]).await?;
        }
        writer.finish().await?;
        let n = series.len();
        let (mut keys, mut counts, mut min_steps) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut steps, mut seqs, mut times) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut values, mut bits) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut oldest, mut newest) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (key, a) in series {
            let Some(latest) = points.get(a.latest) else { continue };
            keys.push(*key);
            counts.push(a.points);
            min_steps.push(a.min_step);
            steps.push(latest.step);
            seqs.push(seq(a.latest));
            times.push(latest.timestamp_ms);
            values.push(latest.value);
            bits.push(value_bits(latest.value));
            oldest.push(a.min_timestamp_ms);
            newest.push(a.max_timestamp_ms);
        }
        tx.execute(
            &self.sql.upsert_series,
            &[&run, &keys, &counts, &min_steps, &steps, &seqs, &times, &values, &bits, &oldest, &newest],
        )
        .await?;
        tx.commit().await?;
        Ok(batch)
    }

    /// Deletes every metric of `run` in one transaction: its series rows, then the points of the series
    /// removed (a batch that commits meanwhile to a series not removed keeps its points).
    pub(crate) fn delete_run(&self, run: &str) -> Result<RemovedReport, MetricsError> {
        check_name("run", run)?;
        self.block_on(self.retrying(|| async {
            let mut conn = self.conn().await?;
            let mut tx = Tx::begin(&mut conn).await?;
            let rows = tx.query(&self.sql.delete_series_of_run, &[&run]).await?;
            let keys = rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                return Ok(RemovedReport::default());
            }
            let points = tx.execute(&self.sql.delete_points_of_keys, &[&run, &keys]).await?;
            tx.commit().await?;
            Ok(RemovedReport { blocks: points, points, series: keys.len() as u64 })
        }))
    }

    /// Retention: removes the points older than `cutoff_ms` of the runs `selected` accepts, a series at a
    /// time (one transaction each), and the series left empty. Each row is a point, so `blocks` counts
    /// the points removed.
    pub(crate) fn expire_runs_before(
        &self,
        cutoff_ms: i64,
        selected: &dyn Fn(&str) -> bool,
    ) -> Result<RemovedReport, MetricsError> {
        let candidates = self.block_on(async {
            let mut conn = self.conn().await?;
            let rows = conn.query_cached(&self.sql.expirable, &[&cutoff_ms]).await?;
            rows.iter()
                .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?)))
                .collect::<Result<Vec<_>, Fail>>()
        })?;
        let mut report = RemovedReport::default();
        for (run, key) in candidates.iter().filter(|(run, _)| selected(run)) {
            let r = self.block_on(self.retrying(|| self.expire_series(run, key, cutoff_ms)))?;
            report.blocks += r.blocks;
            report.points += r.points;
            report.series += r.series;
        }
        Ok(report)
    }

    /// Removes the points of one series older than `cutoff_ms` under its row's lock: all of them and the row
    /// if its newest point is older, else the old ones, and the row's count, lowest step and latest point
    /// read again from the points left.
    async fn expire_series(&self, run: &str, key: &str, cutoff_ms: i64) -> Result<RemovedReport, Fail> {
        let mut conn = self.conn().await?;
        let mut tx = Tx::begin(&mut conn).await?;
        let rows = tx.query(&self.sql.lock_series, &[&run, &key]).await?;
        let Some(row) = rows.first() else { return Ok(RemovedReport::default()) };
        let (oldest, newest): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
        if oldest >= cutoff_ms {
            return Ok(RemovedReport::default());
        }
        let report = if newest < cutoff_ms {
            let points = tx.execute(&self.sql.delete_series_points, &[&run, &key]).await?;
            tx.execute(&self.sql.delete_series, &[&run, &key]).await?;
            RemovedReport { blocks: points, points, series: 1 }
        } else {
            let points = tx.execute(&self.sql.delete_old_points, &[&run, &key, &cutoff_ms]).await?;
            let gone = i64::try_from(points).unwrap_or(i64::MAX);
            let params: [(&(dyn ToSql + Sync), Type); 4] =
                [(&run, Type::TEXT), (&key, Type::TEXT), (&gone, Type::INT8), (&cutoff_ms, Type::INT8)];
            if tx.execute_typed(&self.sql.refresh_series, &params).await? == 0 {
                // No point is left (the row's newest timestamp was wrong): the row goes too.
                tx.execute(&self.sql.delete_series, &[&run, &key]).await?;
                RemovedReport { blocks: points, points, series: 1 }
            } else {
                RemovedReport { blocks: points, points, series: 0 }
            }
        };
        tx.commit().await?;
        Ok(report)
    }
}
