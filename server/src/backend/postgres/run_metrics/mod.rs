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
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row, Statement};

use super::pool::{Pool, Pooled, Statements};
use super::schema::{fnv, Names};
use crate::backend::{RunMetricsApi, RunMetricsStore};

/// Attempts of a transaction that PostgreSQL aborted as a deadlock victim or a serialization failure.
const ATTEMPTS: usize = 16;

/// A failure inside a metrics call: the store's answer, returned as it is, or a database error (retried
/// when PostgreSQL says the transaction may succeed if run again).
#[derive(Debug)]
pub(crate) enum Fail {
    /// The metrics' answer (a refusal, or a failure already mapped).
    Metrics(MetricsError),
    /// The database's.
    Db(tokio_postgres::Error),
}

impl Fail {
    /// Data the metrics cannot read (a row they did not write).
    pub(crate) fn corrupt(detail: String) -> Fail {
        Fail::Metrics(MetricsError::Backend(format!("postgres: {detail}")))
    }

    /// Whether running the transaction again may succeed.
    fn retryable(&self) -> bool {
        let retry = [SqlState::T_R_DEADLOCK_DETECTED, SqlState::T_R_SERIALIZATION_FAILURE];
        matches!(self, Fail::Db(e) if e.code().is_some_and(|c| retry.contains(c)))
    }
}

impl From<MetricsError> for Fail {
    fn from(e: MetricsError) -> Self {
        Fail::Metrics(e)
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<Fail> for MetricsError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Metrics(e) => e,
            Fail::Db(e) => pg(e),
        }
    }
}

/// A PostgreSQL error as a metrics error: text the database's encoding cannot hold is an invalid request,
/// anything else a failure of the backend.
pub(crate) fn pg(e: tokio_postgres::Error) -> MetricsError {
    let detail = e.as_db_error().map_or_else(|| e.to_string(), |d| d.to_string());
    if e.code() == Some(&SqlState::UNTRANSLATABLE_CHARACTER) {
        return MetricsError::Invalid(format!("PostgreSQL cannot store this text: {detail}"));
    }
    MetricsError::Backend(format!("postgres: {detail}"))
}

/// A transaction on a pooled connection, its statements prepared once per connection. Dropped without
/// [`Tx::commit`], it rolls back.
pub(crate) struct Tx<'a> {
    tx: tokio_postgres::Transaction<'a>,
    statements: &'a mut Statements,
}

impl<'a> Tx<'a> {
    /// Begins a read-write transaction on `conn`.
    pub(crate) async fn begin(conn: &'a mut Pooled<'_>) -> Result<Tx<'a>, Fail> {
        let (client, statements) = conn.split();
        let tx = client.transaction().await?;
        Ok(Tx { tx, statements })
    }

    /// Begins a read-only transaction on `conn` whose statements all read one snapshot.
    pub(crate) async fn snapshot(conn: &'a mut Pooled<'_>) -> Result<Tx<'a>, Fail> {
        let (client, statements) = conn.split();
        let tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        Ok(Tx { tx, statements })
    }

    /// The statement `sql`, prepared on this connection the first time.
    pub(crate) async fn prepared(&mut self, sql: &str) -> Result<Statement, Fail> {
        Ok(self.statements.get(&self.tx, sql).await?)
    }

    /// Runs `sql` and returns its rows.
    pub(crate) async fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Fail> {
        let st = self.prepared(sql).await?;
        Ok(self.tx.query(&st, params).await?)
    }

    /// Runs `sql` and returns how many rows it changed.
    pub(crate) async fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Fail> {
        let st = self.prepared(sql).await?;
        Ok(self.tx.execute(&st, params).await?)
    }

    /// Runs `sql`, planned for these parameters (an unnamed statement, not kept), and returns how many rows
    /// it changed.
    pub(crate) async fn execute_typed(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), tokio_postgres::types::Type)],
    ) -> Result<u64, Fail> {
        Ok(self.tx.execute_typed(sql, params).await?)
    }

    /// Starts `COPY ... FROM STDIN` statement `sql`: the sink its rows are written to.
    pub(crate) async fn copy_in(&mut self, sql: &str) -> Result<tokio_postgres::CopyInSink<bytes::Bytes>, Fail> {
        let st = self.prepared(sql).await?;
        Ok(self.tx.copy_in(&st).await?)
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<(), Fail> {
        Ok(self.tx.commit().await?)
    }
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
        self.pool.get().await.map_err(|e| Fail::Metrics(MetricsError::Backend(e.detail)))
    }

    /// The transaction advisory lock serializing the batches logged to series `key` of `run`.
    pub(crate) fn series_lock(&self, run: &str, key: &str) -> i64 {
        fnv(&[self.names.schema.as_bytes(), b"run-metrics", run.as_bytes(), key.as_bytes()]) as i64
    }

    /// Runs `attempt` until it succeeds, fails otherwise than a deadlock or serialization failure, or
    /// [`ATTEMPTS`] have failed so ([`MetricsError::Contention`]).
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, MetricsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Fail>>,
    {
        for _ in 0..ATTEMPTS {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(f) if f.retryable() => {}
                Err(f) => return Err(f.into()),
            }
        }
        Err(MetricsError::Contention { attempts: ATTEMPTS })
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
