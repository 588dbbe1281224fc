//! The job queue on the PostgreSQL backend: the semantics of the embedded
//! [`JobQueue`](cairn_store::queue::JobQueue) (`docs/queue.md`) over rows of the backend's schema, which
//! several servers on one database share. Jobs are rows of `cairn_queue_jobs` (`schema.rs`); each
//! operation applies the store's own steps ([`Job::complete`], [`Job::fail`]...) to the rows it locks, so
//! that jobs, refusals and errors are the embedded queue's.
//!
//! * A claim is one statement: `UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)`, the most urgent
//!   available jobs of each queue served in one seek of a partial index, concurrent claimers passing over
//!   the rows another holds (the technique of Oban, River, graphile-worker and pgmq); it counts the
//!   attempt and the token and changes the counts in the same statement (`claim.rs`). Due scheduled and
//!   retryable jobs are made available by every claim first, and by the maintenance task.
//! * The completion of a running job under its current token is one statement too; the other changes
//!   (and the refusals) lock their jobs (`SELECT ... FOR UPDATE`), apply the step in Rust and write the
//!   rows back (`finish.rs`, `rows.rs`).
//! * Unique keys are checked under a transaction advisory lock on the queue and key, so that concurrent
//!   enqueues of one key on any servers are serialized (`enqueue.rs`).
//! * Counts per queue and state are rows changed by the transaction of every write, spread over shards
//!   (`counts.rs`).
//! * A claim that finds nothing waits for a wake-up: this server's commits wake it directly, other
//!   servers' through `NOTIFY` on the schema's queue channel, which the backend's listening connection
//!   hears; it also looks again at the next due time and at least every second (`wake.rs`, `claim.rs`).
//! * Maintenance (promotion, rescue of expired leases, pruning) runs in a background task on one server
//!   at a time, under an advisory lock (`maintain.rs`).
//!
//! Every method of [`QueueApi`] blocks: it drives the asynchronous PostgreSQL client on the runtime the
//! queue was opened on ([`tokio::runtime::Handle::block_on`]), and must be called from a thread outside
//! it (tokio's blocking pool), as the server does.

mod claim;
mod counts;
mod enqueue;
mod finish;
mod maintain;
mod rows;
mod schema;
mod wake;

pub(crate) use schema::TABLES;
pub(crate) use wake::Wake;

use std::future::Future;
use std::sync::Arc;

use cairn_store::queue::{
    ClaimRequest, Enqueued, Job, JobPage, JobState, MaintenanceReport, NewJob, QueueCounts, QueueError, QueueOptions,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::pool::{Pool, Pooled, Statements};
use super::schema::{fnv, Names};
use crate::backend::QueueApi;

/// Attempts of a transaction that PostgreSQL aborted as a deadlock victim or a serialization failure.
const ATTEMPTS: usize = 16;

/// A failure inside a queue call: a refusal, returned as it is, or a database error (retried when
/// PostgreSQL says the transaction may succeed if run again).
#[derive(Debug)]
pub(crate) enum Fail {
    /// The queue's answer (a refusal, or a failure already mapped).
    Queue(QueueError),
    /// The database's.
    Db(tokio_postgres::Error),
}

impl Fail {
    /// Data the queue cannot read (a row it did not write).
    pub(crate) fn corrupt(detail: String) -> Fail {
        Fail::Queue(QueueError::Backend(format!("postgres: {detail}")))
    }

    /// Whether running the transaction again may succeed.
    fn retryable(&self) -> bool {
        let retry = [SqlState::T_R_DEADLOCK_DETECTED, SqlState::T_R_SERIALIZATION_FAILURE];
        matches!(self, Fail::Db(e) if e.code().is_some_and(|c| retry.contains(c)))
    }
}

impl From<QueueError> for Fail {
    fn from(e: QueueError) -> Self {
        Fail::Queue(e)
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<Fail> for QueueError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Queue(e) => e,
            Fail::Db(e) => pg(e),
        }
    }
}

/// A PostgreSQL error as a queue error: text `jsonb` cannot hold (`\u0000` in a payload) is an invalid
/// request, anything else a failure of the backend.
pub(crate) fn pg(e: tokio_postgres::Error) -> QueueError {
    let detail = e.as_db_error().map_or_else(|| e.to_string(), |d| d.to_string());
    if e.code() == Some(&SqlState::UNTRANSLATABLE_CHARACTER) {
        return QueueError::Invalid(format!("PostgreSQL cannot store this text: {detail}"));
    }
    QueueError::Backend(format!("postgres: {detail}"))
}

/// A transaction on a pooled connection, its statements prepared once per connection. Dropped without
/// [`Tx::commit`], it rolls back.
pub(crate) struct Tx<'a> {
    tx: tokio_postgres::Transaction<'a>,
    statements: &'a mut Statements,
}

impl<'a> Tx<'a> {
    /// Begins a transaction on `conn`.
    pub(crate) async fn begin(conn: &'a mut Pooled<'_>) -> Result<Tx<'a>, Fail> {
        let (client, statements) = conn.split();
        let tx = client.transaction().await?;
        Ok(Tx { tx, statements })
    }

    /// Runs `sql` and returns its rows.
    pub(crate) async fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Fail> {
        let st = self.statements.get(&self.tx, sql).await?;
        Ok(self.tx.query(&st, params).await?)
    }

    /// Runs `sql` and returns how many rows it changed.
    pub(crate) async fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Fail> {
        let st = self.statements.get(&self.tx, sql).await?;
        Ok(self.tx.execute(&st, params).await?)
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<(), Fail> {
        Ok(self.tx.commit().await?)
    }
}

/// What the queue's calls and tasks share.
pub(crate) struct Inner {
    pool: Pool,
    names: Names,
    opts: QueueOptions,
    /// Wakes waiting claims; shared with the backend's listening connection.
    wake: Arc<Wake>,
    runtime: tokio::runtime::Handle,
}

/// The job queue of the PostgreSQL backend ([`PostgresBackend::queue`](super::PostgresBackend) opens it).
/// Cheap to clone; its background tasks end when the last clone is dropped.
#[derive(Clone)]
pub struct PostgresQueue {
    inner: Arc<Inner>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for PostgresQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresQueue").field("schema", &self.inner.names.schema).finish_non_exhaustive()
    }
}

/// Aborts the queue's background tasks when the last handle drops.
struct Tasks(Vec<tokio::task::AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl PostgresQueue {
    /// Connects to `url` (at most `pool_size` connections), creates the queue's tables in `schema` if
    /// missing (once at a time across servers), and starts the maintenance task (every
    /// `opts.maintenance_period()`, none if zero) and the task notifying other servers of new jobs, all on
    /// `runtime`, which then runs the queue's calls. Blocks: call it from a thread outside `runtime`.
    pub(crate) fn open(
        url: &str,
        schema: &str,
        pool_size: usize,
        opts: QueueOptions,
        wake: Arc<Wake>,
        runtime: tokio::runtime::Handle,
    ) -> Result<PostgresQueue, QueueError> {
        let names = Names::new(schema);
        // A maintenance pass holds one connection; claims and completions need others meanwhile.
        let pool = Pool::new(url, pool_size.max(2));
        runtime.block_on(schema::setup(&pool, &names))?;
        let period = opts.maintenance_period();
        let inner = Arc::new(Inner { pool, names, opts, wake, runtime: runtime.clone() });
        let mut tasks = vec![runtime.spawn(wake::notifier(Arc::downgrade(&inner))).abort_handle()];
        if !period.is_zero() {
            tasks.push(runtime.spawn(maintain::task(Arc::downgrade(&inner), period)).abort_handle());
        }
        Ok(PostgresQueue { inner, _tasks: Arc::new(Tasks(tasks)) })
    }
}

impl Inner {
    /// Runs `f` to completion on the queue's runtime, from a thread outside it.
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// A pooled connection.
    pub(crate) async fn conn(&self) -> Result<Pooled<'_>, Fail> {
        self.pool.get().await.map_err(|e| Fail::Queue(QueueError::Backend(e.detail)))
    }

    /// `"schema"."name"`.
    pub(crate) fn table(&self, name: &str) -> String {
        self.names.table(name)
    }

    /// The transaction advisory lock serializing enqueues of unique key `key` in `queue`.
    pub(crate) fn unique_lock(&self, queue: &str, key: &str) -> i64 {
        fnv(&[self.names.schema.as_bytes(), b"queue-unique", queue.as_bytes(), key.as_bytes()]) as i64
    }

    /// Runs `attempt` until it succeeds, fails otherwise than a deadlock or serialization failure, or
    /// [`ATTEMPTS`] have failed so ([`QueueError::Contended`]).
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, QueueError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Fail>>,
    {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(f) if f.retryable() => last = Some(f),
                Err(f) => return Err(f.into()),
            }
        }
        let detail = last.map(|f| QueueError::from(f).to_string()).unwrap_or_default();
        Err(QueueError::Contended(format!("{ATTEMPTS} attempts failed: {detail}")))
    }
}

impl From<PostgresQueue> for crate::backend::QueueStore {
    fn from(queue: PostgresQueue) -> Self {
        Arc::new(queue)
    }
}

impl QueueApi for PostgresQueue {
    fn enqueue(&self, job: &NewJob) -> Result<Enqueued, QueueError> {
        let mut out = self.enqueue_batch(std::slice::from_ref(job))?;
        out.pop().ok_or_else(|| QueueError::Invalid("nothing enqueued".into()))
    }

    fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, QueueError> {
        self.inner.enqueue_batch(jobs)
    }

    fn claim_batch(&self, request: &ClaimRequest) -> Result<Vec<Job>, QueueError> {
        self.inner.claim_batch(request)
    }

    fn complete(&self, id: u64, token: u64) -> Result<Job, QueueError> {
        self.inner.complete(id, token)
    }

    fn complete_batch(&self, jobs: &[(u64, u64)]) -> Result<Vec<Result<Job, QueueError>>, QueueError> {
        self.inner.complete_batch(jobs)
    }

    fn fail(&self, id: u64, token: u64, error: &str) -> Result<Job, QueueError> {
        // jsonb holds no NUL character.
        let error = error.replace('\0', "\u{fffd}");
        let opts = &self.inner.opts;
        self.inner.change(id, |job, now| job.fail(token, &error, opts.backoff_of(&job.queue), now))
    }

    fn snooze(&self, id: u64, token: u64, delay_ms: u64) -> Result<Job, QueueError> {
        self.inner.change(id, |job, now| job.snooze(token, delay_ms, now))
    }

    fn heartbeat(&self, id: u64, token: u64, lease_ms: u64) -> Result<Job, QueueError> {
        if lease_ms == 0 {
            return Err(QueueError::Invalid("a lease must last at least 1 ms".into()));
        }
        self.inner.change(id, |job, now| job.heartbeat(token, lease_ms, now))
    }

    fn cancel(&self, id: u64) -> Result<Job, QueueError> {
        self.inner.change(id, |job, now| job.cancel(now))
    }

    fn retry(&self, id: u64) -> Result<Job, QueueError> {
        self.inner.change(id, |job, now| job.retry(now))
    }

    fn purge(&self, id: u64) -> Result<(), QueueError> {
        self.inner.purge(id)
    }

    fn purge_discarded(&self, queue: &str) -> Result<u64, QueueError> {
        self.inner.purge_discarded(queue)
    }

    fn get(&self, id: u64) -> Result<Option<Job>, QueueError> {
        self.inner.get(id)
    }

    fn list(&self, queue: &str, state: JobState, after: Option<&str>, limit: usize) -> Result<JobPage, QueueError> {
        self.inner.list(queue, state, after, limit)
    }

    fn counts(&self, queue: &str) -> Result<QueueCounts, QueueError> {
        cairn_store::queue::check_queue(queue)?;
        self.inner.block_on(self.inner.counts(queue)).map_err(QueueError::from)
    }

    fn queues(&self) -> Result<Vec<String>, QueueError> {
        self.inner.block_on(self.inner.queues()).map_err(QueueError::from)
    }

    fn maintain(&self) -> Result<MaintenanceReport, QueueError> {
        self.inner.maintain()
    }
}
