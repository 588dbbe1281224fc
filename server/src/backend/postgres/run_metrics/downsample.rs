//! Downsampling, of one series or of one metric across runs, in a read-only repeatable-read transaction
//! (one snapshot for every run).
//!
//! The range and the bucket width are the embedded store's (`docs/metrics.md`, "Semantics"), from the series
//! rows' lowest and latest steps; then one statement per series groups the points of the range, read from
//! the primary key, by bucket: count, NaN count, min and max of the other values, their sum, and the
//! bucket's last point (the largest `(step, seq)`, fetched by key). Only the points of the range are read,
//! and only the buckets cross the connection.
//!
//! A sum of doubles in PostgreSQL fails rather than overflow, so each bucket also sums its values scaled
//! by 2^-64 (those not too small to scale) and counts the values of magnitude 2^960 and over: with none, the
//! plain sum (which then cannot overflow) gives the mean; with some, the scaled sum does (a finite mean
//! where the embedded store's sum overflows to an infinity). Values below 2^-900 are left out of the scaled
//! sum, where they are below its precision anyway.

use std::collections::HashMap;

use cairn_store::metrics::{Bucket, DownsampleRequest, MetricsError, RunSeries};
use tokio_postgres::types::ToSql;

use super::{stored_value, Fail, Inner, Tx};

/// Values of this magnitude and over are summed scaled: below it, a sum of fewer than 2^63 of them stays
/// finite.
const BIG: f64 = pow2(960);
/// The scale of the scaled sum.
const SCALE: f64 = pow2(-64);
/// Values below this magnitude are left out of the scaled sum (scaling them could underflow, which
/// PostgreSQL refuses).
const TINY: f64 = pow2(-900);

/// 2^`e`, for a normal exponent (-1022 to 1023).
const fn pow2(e: i64) -> f64 {
    f64::from_bits(((1023 + e) as u64) << 52)
}

/// The buckets of one series' read: steps `[lo, hi]`, `width` steps each.
#[derive(Debug, Clone, Copy)]
struct Plan {
    lo: i64,
    hi: i64,
    width: i128,
}

impl Plan {
    /// The plan of `req` over a series whose steps run from `min_step` to `latest_step`; `None` if the range
    /// is empty.
    fn new(req: &DownsampleRequest, min_step: i64, latest_step: i64) -> Option<Plan> {
        let lo = req.min_step.unwrap_or(min_step);
        let hi = req.max_step.unwrap_or(latest_step);
        if lo > hi {
            return None;
        }
        let n = req.max_points as i128;
        let span = i128::from(hi) - i128::from(lo) + 1;
        Some(Plan { lo, hi, width: (span + n - 1) / n })
    }

    /// Whether the bucket index can be computed in `bigint`: every step's distance from `lo` and the width
    /// fit.
    fn fits_bigint(&self) -> bool {
        self.hi.checked_sub(self.lo).and_then(|d| d.checked_add(1)).is_some()
    }
}

/// The statement summarizing the buckets of a series: `$1` run, `$2` key, steps in `[$3, $4]`, `$5`
/// [`BIG`], `$6` [`SCALE`], `$7` [`TINY`]; the bucket of a step is `(step - $8) / $9`, in `bigint`
/// (`numeric` = false) or in `numeric` with `$8` and `$9` as text. Each bucket's last point is fetched by
/// a `LATERAL` subquery with `LIMIT 1`, which the planner does not flatten into a join: a generic plan
/// that expects one bucket would otherwise read the whole series once per bucket.
pub(crate) fn buckets_sql(points: &str, numeric: bool) -> String {
    let bucket = if numeric {
        "div(step::numeric - $8::text::numeric, $9::text::numeric)::int8"
    } else {
        "(step - $8::int8) / $9::int8"
    };
    format!(
        "WITH b AS (
             SELECT {bucket} AS i,
                 count(*) AS n,
                 count(*) FILTER (WHERE value = 'NaN') AS nans,
                 min(value) FILTER (WHERE value <> 'NaN') AS lo,
                 max(value) FILTER (WHERE value <> 'NaN') AS hi,
                 count(*) FILTER (WHERE value <> 'NaN' AND abs(value) >= $5) AS big,
                 sum(value) FILTER (WHERE abs(value) < $5) AS total,
                 sum(value * $6) FILTER (WHERE value <> 'NaN' AND abs(value) >= $7) AS scaled,
                 max(ARRAY[step, seq]) AS last
             FROM {points}
             WHERE run = $1 AND key = $2 AND step >= $3 AND step <= $4
             GROUP BY 1
         )
         SELECT b.i, b.n, b.nans, b.lo, b.hi, b.big, b.total, b.scaled, p.step, p.value, p.value_bits
         FROM b CROSS JOIN LATERAL (
             SELECT step, value, value_bits FROM {points}
             WHERE run = $1 AND key = $2 AND step = b.last[1] AND seq = b.last[2] LIMIT 1
         ) AS p
         ORDER BY b.i"
    )
}

impl Inner {
    /// The metric `req.key` of each of `runs`, downsampled as
    /// [`Metrics::compare`](cairn_store::metrics::Metrics::compare) does (the same refusals), from one
    /// snapshot, in the order of `runs`.
    pub(crate) fn compare(&self, runs: &[String], req: &DownsampleRequest) -> Result<Vec<RunSeries>, MetricsError> {
        let reqs: Vec<DownsampleRequest> =
            runs.iter().map(|run| DownsampleRequest { run: run.clone(), ..req.clone() }).collect();
        for r in &reqs {
            r.check()?;
        }
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        self.block_on(self.retrying(|| self.try_compare(&reqs)))
    }

    async fn try_compare(&self, reqs: &[DownsampleRequest]) -> Result<Vec<RunSeries>, Fail> {
        let mut conn = self.conn().await?;
        let mut tx = Tx::snapshot(&mut conn).await?;
        let key = reqs.first().map(|r| r.key.as_str()).unwrap_or_default();
        let runs: Vec<&str> = reqs.iter().map(|r| r.run.as_str()).collect();
        let mut bounds: HashMap<String, (i64, i64)> = HashMap::new();
        for row in tx.query(&self.sql.bounds_of, &[&key, &runs]).await? {
            bounds.insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
        }
        let mut out = Vec::with_capacity(reqs.len());
        for req in reqs {
            let plan = bounds.get(&req.run).and_then(|(min, latest)| Plan::new(req, *min, *latest));
            let buckets = match plan {
                Some(plan) => self.buckets(&mut tx, req, plan).await?,
                None => Vec::new(),
            };
            out.push(RunSeries { run: req.run.clone(), buckets });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The non-empty buckets of one series.
    async fn buckets(&self, tx: &mut Tx<'_>, req: &DownsampleRequest, plan: Plan) -> Result<Vec<Bucket>, Fail> {
        let numeric = !plan.fits_bigint();
        let sql = if numeric { &self.sql.buckets_numeric } else { &self.sql.buckets };
        let (lo_text, width_text) = (plan.lo.to_string(), plan.width.to_string());
        let width = i64::try_from(plan.width).unwrap_or(i64::MAX);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&req.run, &req.key, &plan.lo, &plan.hi, &BIG, &SCALE, &TINY];
        if numeric {
            params.extend([&lo_text as &(dyn ToSql + Sync), &width_text]);
        } else {
            params.extend([&plan.lo as &(dyn ToSql + Sync), &width]);
        }
        let rows = tx.query(sql, &params).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let i: i64 = row.try_get(0)?;
            let count = row.try_get::<_, i64>(1)?.max(0) as u64;
            let nan_count = row.try_get::<_, i64>(2)?.max(0) as u64;
            let big: i64 = row.try_get(5)?;
            let numeric_count = count.saturating_sub(nan_count);
            let mean = if numeric_count == 0 {
                f64::NAN
            } else if big == 0 {
                row.try_get::<_, Option<f64>>(6)?.unwrap_or(0.0) / numeric_count as f64
            } else {
                row.try_get::<_, Option<f64>>(7)?.unwrap_or(0.0) / numeric_count as f64 / SCALE
            };
            let start = i128::from(plan.lo) + i128::from(i) * plan.width;
            let end = (start + plan.width - 1).min(i128::from(plan.hi));
            out.push(Bucket {
                start_step: i64::try_from(start).unwrap_or(i64::MAX),
                end_step: i64::try_from(end).unwrap_or(i64::MAX),
                count,
                nan_count,
                min: row.try_get::<_, Option<f64>>(3)?.unwrap_or(f64::NAN),
                max: row.try_get::<_, Option<f64>>(4)?.unwrap_or(f64::NAN),
                mean,
                last_step: row.try_get(8)?,
                last: stored_value(row.try_get(9)?, row.try_get(10)?),
            });
        }
        Ok(out)
    }
}
