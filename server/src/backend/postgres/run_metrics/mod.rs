//! Run metrics on the PostgreSQL backend: the semantics of the embedded
//! [`Metrics`](cairn_store::metrics::Metrics) (`docs/metrics.md`, "Semantics") in the long form, one row
//! per point, in tables of the backend's schema that several servers on one database share (`schema.rs`).
//!
//! * A logged batch is one transaction (`write.rs`): transaction advisory locks on its series, taken in
//!   order, then the batch's number from a sequence, its points copied into `cairn_run_metrics`, and each
//!   series' row of `cairn_run_metric_series` (point count, lowest step, latest point, timestamp bounds)
//!   upserted. A point's `seq`, its place in log order, is the batch's number times 2^17 plus its index in
//!   the batch; taken under the series' locks, it grows in the order in which batches to a series commit.
//! * A history page is one statement, a range scan of the points' primary key `(run, key, step, seq)` from
//!   the cursor on (`read.rs`); the latest values are the series rows, read without touching a point.
//! * Downsampling groups the points of the range by bucket in one statement (`downsample.rs`); a
//!   comparison downsamples every run in one repeatable-read transaction.
//! * Deletion and retention remove rows: retention removes exactly the points older than the cutoff
//!   (the embedded store removes whole blocks of up to 1,024 points), and the series rows are changed in
//!   the same transaction (`write.rs`).
//!
//! Every method of [`RunMetricsApi`] blocks: it drives the asynchronous PostgreSQL client on the runtime the
//! metrics were opened on ([`tokio::runtime::Handle::block_on`]), and must be called from a thread outside
//! it (tokio's blocking pool), as the server does.

mod downsample;
mod read;
mod schema;
mod write;

pub(crate) use schema::TABLES;

use std::future::Future;
use std::sync::Arc;

use cairn_store::metrics::{
    Bucket, DownsampleRequest, HistoryPage, HistoryRequest, LatestValue, LogReceipt, MetricPoint, MetricsError,
    RemovedReport, RunSeries,
};

use super::pool::{Pool, Pooled};
use super::schema::{fnv, Names};
use super::txn;
use crate::backend::{RunMetricsApi, RunMetricsStore};

/// A failure inside a metrics call ([`txn::Fail`]).
pub(crate) type Fail = txn::Fail<MetricsError>;
/// A transaction of the metrics ([`txn::Tx`]).
pub(crate) type Tx<'a> = txn::Tx<'a, MetricsError>;

/// A PostgreSQL error as this module's error ([`txn::pg`]).
pub(crate) fn pg(e: tokio_postgres::Error) -> MetricsError {
    txn::pg(e)
}

/// What the metrics' calls share.
pub(crate) struct Inner {
    pool: Pool,
    names: Names,
    sql: schema::Sql,
    runtime: tokio::runtime::Handle,
}

/// The run metrics of the PostgreSQL backend ([`PostgresBackend::run_metrics`](super::PostgresBackend)
/// opens them). Cheap to clone.
#[derive(Clone)]
pub struct PostgresRunMetrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresRunMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresRunMetrics").field("schema", &self.inner.names.schema).finish_non_exhaustive()
    }
}

impl PostgresRunMetrics {
    /// Connects to `url` (at most `pool_size` connections) and creates the metrics' tables in `schema` if
    /// missing (once at a time across servers), on `runtime`, which then runs the calls. Blocks: call it
    /// from a thread outside `runtime`.
    pub(crate) fn open(
        url: &str,
        schema: &str,
        pool_size: usize,
        runtime: tokio::runtime::Handle,
    ) -> Result<PostgresRunMetrics, MetricsError> {
        let names = Names::new(schema);
        let pool = Pool::new(url, pool_size);
        runtime.block_on(schema::setup(&pool, &names))?;
        let sql = schema::Sql::new(&names);
        Ok(PostgresRunMetrics { inner: Arc::new(Inner { pool, names, sql, runtime }) })
    }
}

impl Inner {
    /// Runs `f` to completion on the metrics' runtime, from a thread outside it.
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// A pooled connection.
    pub(crate) async fn conn(&self) -> Result<Pooled<'_>, Fail> {
        self.pool.get().await.map_err(|e| Fail::Refused(MetricsError::Backend(e.detail)))
    }

    /// The transaction advisory lock serializing the batches logged to series `key` of `run`.
    pub(crate) fn series_lock(&self, run: &str, key: &str) -> i64 {
        fnv(&[self.names.schema.as_bytes(), b"run-metrics", run.as_bytes(), key.as_bytes()]) as i64
    }

    /// Runs `attempt`, again after a deadlock or serialization failure ([`txn::retrying`]).
    async fn retrying<T, F, Fut>(&self, attempt: F) -> Result<T, MetricsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Fail>>,
    {
        txn::retrying(attempt).await
    }
}

/// A stored value: the `value` column, unless `value_bits` holds the bits of a NaN (`schema.rs`).
pub(crate) fn stored_value(value: f64, bits: Option<i64>) -> f64 {
    bits.map_or(value, |b| f64::from_bits(b as u64))
}

/// The `value_bits` column of a value: its bits if it is a NaN, else NULL.
pub(crate) fn value_bits(value: f64) -> Option<i64> {
    value.is_nan().then_some(value.to_bits() as i64)
}

impl From<PostgresRunMetrics> for RunMetricsStore {
    fn from(metrics: PostgresRunMetrics) -> Self {
        Arc::new(metrics)
    }
}

impl RunMetricsApi for PostgresRunMetrics {
    fn log(&self, run: &str, points: &[MetricPoint]) -> Result<LogReceipt, MetricsError> {
        self.inner.log(run, points)
    }

    fn history(&self, req: &HistoryRequest) -> Result<HistoryPage, MetricsError> {
        self.inner.history(req)
    }

    fn latest(&self, run: &str) -> Result<Vec<LatestValue>, MetricsError> {
        self.inner.latest(run)
    }

    fn latest_of(&self, runs: &[String], key: &str) -> Result<Vec<(String, Option<LatestValue>)>, MetricsError> {
        self.inner.latest_of(runs, key)
    }

    fn downsample(&self, req: &DownsampleRequest) -> Result<Vec<Bucket>, MetricsError> {
        let mut out = self.inner.compare(std::slice::from_ref(&req.run), req)?;
        Ok(out.pop().map(|s| s.buckets).unwrap_or_default())
    }

    fn compare(&self, runs: &[String], req: &DownsampleRequest) -> Result<Vec<RunSeries>, MetricsError> {
        self.inner.compare(runs, req)
    }

    fn delete_run(&self, run: &str) -> Result<RemovedReport, MetricsError> {
        self.inner.delete_run(run)
    }

    fn expire_runs_before(
        &self,
        cutoff_ms: i64,
        selected: &dyn Fn(&str) -> bool,
    ) -> Result<RemovedReport, MetricsError> {
        self.inner.expire_runs_before(cutoff_ms, selected)
    }
}
