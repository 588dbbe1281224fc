//! Reading series: history pages with cursors, and the latest values from the series rows.
//!
//! A history page is one statement over the points' primary key: the rows of the series after the
//! cursor's `(step, seq)` (or from the range's lowest step), up to the range's highest step, filtered by
//! time, in key order, one more than the limit (to know whether more follow). A cursor is `p<step>.<seq>`,
//! the last point returned; points logged later at steps after it come in later pages, as on the embedded
//! store.
//!
//! The page's statement is planned for its parameters each time (an unnamed statement): a generic plan,
//! which knows neither the limit nor the range, may read and sort the whole series for every page instead
//! of reading the key in order.

use std::collections::HashMap;

use cairn_store::metrics::{check_name, HistoryPage, HistoryRequest, LatestValue, MetricsError, Point};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::{stored_value, Fail, Inner};

/// A history cursor: go on after the point at `(step, seq)`.
fn parse_cursor(c: &str) -> Result<(i64, i64), MetricsError> {
    let bad = || MetricsError::Invalid(format!("malformed cursor {c:?}"));
    let (s, q) = c.strip_prefix('p').and_then(|r| r.split_once('.')).ok_or_else(bad)?;
    Ok((s.parse().map_err(|_| bad())?, q.parse().map_err(|_| bad())?))
}

/// A row of a name (a key, or a run when `key` is given) then the columns of
/// [`LATEST`](super::schema::LATEST), as (the name, the latest value of `key` or of the key named).
fn latest_row(row: &Row, key: Option<&str>) -> Result<(String, LatestValue), Fail> {
    let name: String = row.try_get(0)?;
    let point = Point {
        step: row.try_get(1)?,
        timestamp_ms: row.try_get(2)?,
        value: stored_value(row.try_get(3)?, row.try_get(4)?),
    };
    let points = row.try_get::<_, i64>(5)?.max(0) as u64;
    let key = key.map_or_else(|| name.clone(), str::to_owned);
    Ok((name, LatestValue { key, point, points }))
}

impl Inner {
    /// A page of one series' history, as [`Metrics::history`](cairn_store::metrics::Metrics::history)
    /// answers it (the same refusals), from one statement.
    pub(crate) fn history(&self, req: &HistoryRequest) -> Result<HistoryPage, MetricsError> {
        req.check()?;
        let (lo, hi) = (req.min_step.unwrap_or(i64::MIN), req.max_step.unwrap_or(i64::MAX));
        let (tlo, thi) = (req.min_timestamp_ms.unwrap_or(i64::MIN), req.max_timestamp_ms.unwrap_or(i64::MAX));
        let (at, after) = match &req.cursor {
            Some(c) => parse_cursor(c)?,
            None => (lo, i64::MIN),
        };
        if at < lo {
            return Err(MetricsError::Invalid(format!("cursor step {at} is below the range")));
        }
        if at > hi {
            return Ok(HistoryPage { points: Vec::new(), next_cursor: None });
        }
        let fetch = i64::try_from(req.limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = self.block_on(async {
            let conn = self.conn().await?;
            let params: [(&(dyn ToSql + Sync), Type); 8] = [
                (&req.run, Type::TEXT),
                (&req.key, Type::TEXT),
                (&at, Type::INT8),
                (&after, Type::INT8),
                (&hi, Type::INT8),
                (&tlo, Type::INT8),
                (&thi, Type::INT8),
                (&fetch, Type::INT8),
            ];
            Ok::<_, Fail>(conn.query_typed(&self.sql.history, &params).await?)
        })?;
        let mut points = Vec::with_capacity(rows.len().min(req.limit));
        let mut last_seq = i64::MIN;
        for row in rows.iter().take(req.limit) {
            points.push(Point {
                step: row.try_get(0).map_err(Fail::from)?,
                timestamp_ms: row.try_get(2).map_err(Fail::from)?,
                value: stored_value(row.try_get(3).map_err(Fail::from)?, row.try_get(4).map_err(Fail::from)?),
            });
            last_seq = row.try_get(1).map_err(Fail::from)?;
        }
        let next_cursor = match points.last() {
            Some(last) if rows.len() > req.limit => Some(format!("p{}.{last_seq}", last.step)),
            _ => None,
        };
        Ok(HistoryPage { points, next_cursor })
    }

    /// The latest point of every metric of `run`, by key (byte order), from its series rows.
    pub(crate) fn latest(&self, run: &str) -> Result<Vec<LatestValue>, MetricsError> {
        check_name("run", run)?;
        self.block_on(async {
            let mut conn = self.conn().await?;
            let rows = conn.query_cached(&self.sql.latest, &[&run]).await?;
            rows.iter().map(|r| latest_row(r, None).map(|(_, l)| l)).collect::<Result<Vec<_>, Fail>>()
        })
        .map_err(MetricsError::from)
    }

    /// The latest point of metric `key` in each of `runs` (`None` where a run has no such metric), in the
    /// order of `runs`, from one statement.
    pub(crate) fn latest_of(
        &self,
        runs: &[String],
        key: &str,
    ) -> Result<Vec<(String, Option<LatestValue>)>, MetricsError> {
        check_name("metric key", key)?;
        for run in runs {
            check_name("run", run)?;
        }
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let found: HashMap<String, LatestValue> = self
            .block_on(async {
                let mut conn = self.conn().await?;
                let rows = conn.query_cached(&self.sql.latest_of, &[&key, &runs]).await?;
                rows.iter().map(|r| latest_row(r, Some(key))).collect::<Result<HashMap<_, _>, Fail>>()
            })
            .map_err(MetricsError::from)?;
        Ok(runs.iter().map(|r| (r.clone(), found.get(r).cloned())).collect())
    }
}
