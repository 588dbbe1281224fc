//! The PostgreSQL backend: the records of every collection in tables of one schema of one database, which
//! several `cairn serve` processes may share. Same records, versions, sequences, orders and answers as the
//! embedded backend; the layout is `cairn export postgres`'s, so a store exported there is served as it is.
//!
//! Where each part lives: the layout and its DDL in [`schema`], declarations and their indexes in
//! [`catalog`], reads in [`read`] with their SQL, order and cursors in [`query`], the write path and the
//! commit counter in [`write`], claims in [`claim`], the change feed and its trimming in [`feed`], the
//! notifications from other servers in [`listen`], stats and checks in [`admin`], the connections in
//! [`pool`]. The artifact store on this backend, [`PostgresArtifacts`], is in `artifacts`: its tables in
//! the same schema, its bytes in an object store. The job queue, [`PostgresQueue`], is in `queue`: its
//! tables in the same schema, opened by the first call of [`Backend::queue`]. Run metrics,
//! [`PostgresRunMetrics`], are in `run_metrics`: one row per point in tables of the same schema, opened by
//! the first call of [`Backend::run_metrics`].

mod admin;
mod artifacts;
mod catalog;
mod claim;
mod feed;
mod listen;
pub use artifacts::{PostgresArtifactOptions, PostgresArtifacts};
pub use listen::LISTENER_NAME;
mod pool;
mod query;
mod queue;
pub use queue::PostgresQueue;
mod read;
mod run_metrics;
pub use run_metrics::PostgresRunMetrics;
mod schema;
mod txn;
mod write;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use cairn_store::queue::QueueOptions;
use cairn_store::{Change, CollectionError, CollectionSpec, Page, Query, Stored};
use serde_json::{Map, Value};
use tokio::sync::watch;

use self::pool::Pool;
use self::schema::{Names, META};
use self::write::{Fail, Step};
use super::{
    Backend, BackendFuture, CollectionInfo, Committed, Figures, Operation, Permits, Precondition, QueueStore,
    RunMetricsStore, Scope,
};
use crate::http::ChangeRetention;
use crate::problem::ApiError;

/// Candidates a claim locks per query and attempt.
const CLAIM_CANDIDATES: usize = 16;

/// How to reach the database and how much of it to use.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/database`.
    pub url: String,
    /// The schema of the tables (created if missing). Default: `public`.
    pub schema: String,
    /// Connections kept. Default: 16.
    pub pool_size: usize,
    /// Calls running at once; more are shed with 503. Default: 256.
    pub max_concurrency: usize,
    /// Change-feed retention (`[changes]`; consumers do not exist on this backend).
    pub retention: ChangeRetention,
}

impl PostgresOptions {
    /// The defaults for `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            schema: "public".to_owned(),
            pool_size: 16,
            max_concurrency: 256,
            retention: ChangeRetention::default(),
        }
    }
}

/// The records in a PostgreSQL database behind the [`Backend`] interface.
#[derive(Clone)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
    /// The job queue, opened by the first call that needs it (on the runtime serving the calls).
    queue: Arc<Mutex<Option<QueueStore>>>,
    queue_options: QueueOptions,
    /// The run metrics, opened by the first call that needs them (on the runtime serving the calls).
    run_metrics: Arc<Mutex<Option<RunMetricsStore>>>,
}

/// What the backend's tasks share.
pub(crate) struct Inner {
    pool: Pool,
    names: Names,
    url: String,
    pool_size: usize,
    retention: ChangeRetention,
    permits: Permits,
    specs: Mutex<HashMap<String, CollectionSpec>>,
    written: watch::Sender<u64>,
    trims: AtomicU64,
    trimmed_events: AtomicU64,
    trim_errors: AtomicU64,
    /// Wakes the job queue's waiting claims; the listening connection hears other servers' new jobs.
    queue_wake: Arc<queue::Wake>,
}

/// A database error as a 500 naming PostgreSQL's message.
pub(crate) fn db_error(e: tokio_postgres::Error) -> ApiError {
    let detail = e.as_db_error().map_or_else(|| e.to_string(), |d| d.to_string());
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("postgres: {detail}"))
}

pub(crate) use super::internal;

impl PostgresBackend {
    /// Connects, creates what is missing (the schema, `cairn_meta`, `cairn_changes`, the catalog, the key
    /// function, the indexes of declared collections), and starts listening and trimming ([`start`](Self::start)).
    /// The commit counter starts above the highest `seq` of the tables and the cursor of `cairn export
    /// postgres` (a migrated store), and the feed counts as trimmed up to there.
    pub async fn open(opts: PostgresOptions) -> Result<Self, String> {
        let backend = Self::setup(opts).await?;
        backend.start();
        Ok(backend)
    }

    /// [`open`](Self::open) without starting the background tasks: for a caller that sets up on another
    /// runtime than the one serving (connections opened here are replaced when that runtime ends).
    pub async fn setup(opts: PostgresOptions) -> Result<Self, String> {
        let names = Names::new(&opts.schema);
        let pool = Pool::new(&opts.url, opts.pool_size);
        let inner = Arc::new(Inner {
            pool,
            names,
            url: opts.url.clone(),
            pool_size: opts.pool_size,
            retention: opts.retention.clone(),
            permits: Permits::new(opts.max_concurrency.max(1)),
            specs: Mutex::new(HashMap::new()),
            written: watch::Sender::new(0),
            trims: AtomicU64::new(0),
            trimmed_events: AtomicU64::new(0),
            trim_errors: AtomicU64::new(0),
            queue_wake: Arc::default(),
        });
        let seq = inner.setup().await.map_err(|e| e.detail)?;
        inner.note_sequence(seq);
        Ok(Self { inner, queue: Arc::default(), queue_options: QueueOptions::default(), run_metrics: Arc::default() })
    }

    /// This backend with its job queue opened with `options` (retention, backoff, maintenance interval)
    /// instead of the defaults.
    pub fn with_queue_options(mut self, options: QueueOptions) -> Self {
        self.queue_options = options;
        self
    }

    /// Starts, on the current tokio runtime, the listening connection (other servers' commits and
    /// declarations) and the feed's trimming; both end when the backend is dropped.
    pub fn start(&self) {
        listen::spawn_listener(&self.inner, self.inner.url.clone());
        feed::spawn_trimmer(&self.inner, self.inner.retention.clone());
    }

    /// Runs `make`'s future on a task of its own holding a permit until it ends (dropping the returned
    /// future, at a timeout, does not stop it, and the permit stays taken until it has).
    fn spawn<R, F>(&self, make: impl FnOnce(Arc<Inner>) -> F) -> BackendFuture<'_, R>
    where
        R: Send + 'static,
        F: Future<Output = Result<R, ApiError>> + Send + 'static,
    {
        let started = self.inner.permits.take().map(|p| (p, make(self.inner.clone())));
        Box::pin(async move {
            let (permit, work) = started?;
            tokio::spawn(async move {
                let _permit = permit;
                work.await
            })
            .await
            .map_err(|e| internal(format!("backend task failed: {e}")))?
        })
    }

    /// Trims the change feed now, as the background task does every `trim_interval_ms`; the events removed.
    pub async fn trim_changes(&self, retention: &ChangeRetention) -> Result<u64, ApiError> {
        self.inner.trim_once(retention).await
    }

    /// Applies `ops` as [`Backend::transaction`] does, holding the commit-counter statement's row lock for
    /// `hold` before `COMMIT`: lets a test make commits finish out of the order they started.
    #[doc(hidden)]
    pub async fn transaction_holding(
        &self,
        ops: Vec<Operation>,
        hold: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<u64, ApiError> {
        let inner = &self.inner;
        let mut pooled = inner.pool.get().await?;
        let (client, statements) = pooled.split();
        let tx = client.transaction().await.map_err(db_error)?;
        let mut staged = Vec::new();
        for op in &ops {
            let cur = write::lock_current(&tx, statements, &inner.names, &op.collection, &op.id).await.map_err(fail)?;
            let doc = op.document.clone().unwrap_or_default();
            staged.push(write::Staged::update(&op.collection, &op.id, cur.map(|c| c.stored), Some(doc)));
        }
        let seq = write::stamp(&tx, statements, &inner.names, &staged, write::now_ms()).await.map_err(db_error)?;
        let _ = hold.await;
        tx.commit().await.map_err(db_error)?;
        inner.note_sequence(seq);
        Ok(seq)
    }
}

fn fail(f: Fail) -> ApiError {
    match f {
        Fail::Api(e) => e,
        Fail::Retry => ApiError::from(CollectionError::TxnConflict { collection: String::new(), id: String::new() }),
    }
}

impl Inner {
    /// Makes the schema's objects exist (once at a time across servers) and returns the counter.
    async fn setup(&self) -> Result<u64, ApiError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&self.names.setup_lock()]).await.map_err(db_error)?;
        tx.batch_execute(&self.names.setup_sql()).await.map_err(db_error)?;
        let specs = catalog::catalog(&tx, &self.names).await?;
        let mut highest = vec!["0::int8".to_owned()];
        // The sequence `cairn export postgres` holds everything up to (deletes included).
        let state = self.names.table("cairn_sync_state");
        let exported = tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&state]).await.map_err(db_error)?;
        if exported.try_get::<_, bool>(0).map_err(db_error)? {
            highest.push(format!("(SELECT max(cursor) FROM {state})"));
        }
        for spec in &specs {
            self.names.ensure_table(&tx, &spec.name).await.map_err(db_error)?;
            highest.push(format!("(SELECT max(seq) FROM {})", self.names.table(&spec.name)));
        }
        let meta = self.names.table(META);
        let has_counter =
            tx.query_opt(&format!("SELECT value FROM {meta} WHERE name = 'seq'"), &[]).await.map_err(db_error)?;
        let seq: i64 = match has_counter {
            Some(row) => row.try_get(0).map_err(db_error)?,
            None => {
                // Tables written by `cairn export postgres`: the feed starts after them, and older history
                // is gone (410), not silently empty.
                let row = tx
                    .query_one(&format!("SELECT greatest({})::int8", highest.join(", ")), &[])
                    .await
                    .map_err(db_error)?;
                let top: i64 = row.try_get(0).map_err(db_error)?;
                tx.execute(
                    &format!("INSERT INTO {meta} (name, value) VALUES ('seq', $1), ('trimmed_through', $1)"),
                    &[&top],
                )
                .await
                .map_err(db_error)?;
                top
            }
        };
        tx.commit().await.map_err(db_error)?;
        for spec in &specs {
            self.with_declare_lock(&client, |c| Box::pin(self.ensure_indexes(c, spec))).await?;
        }
        Ok(seq.max(0) as u64)
    }

    /// Records that commit `seq` exists and wakes change-feed waiters.
    pub(crate) fn note_sequence(&self, seq: u64) {
        self.written.send_if_modified(|w| {
            let newer = seq > *w;
            if newer {
                *w = seq;
            }
            newer
        });
    }

    /// Forgets the cached declarations (another server declared).
    pub(crate) fn clear_specs(&self) {
        if let Ok(mut specs) = self.specs.lock() {
            specs.clear();
        }
    }
}

impl Backend for PostgresBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn last_sequence(&self) -> u64 {
        *self.inner.written.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.written.subscribe()
    }

    fn collections(&self, scope: Scope) -> BackendFuture<'_, Vec<CollectionInfo>> {
        self.spawn(|inner| async move { inner.collections(&scope).await })
    }

    fn declare(&self, spec: CollectionSpec) -> BackendFuture<'_, bool> {
        self.spawn(|inner| async move { inner.declare(spec).await })
    }

    fn get(&self, scope: Scope, collection: String, id: String) -> BackendFuture<'_, Stored<Value>> {
        self.spawn(|inner| async move { inner.get(&scope, &collection, &id).await })
    }

    fn put(
        &self,
        scope: Scope,
        collection: String,
        id: String,
        doc: Value,
        pre: Precondition,
    ) -> BackendFuture<'_, (Stored<Value>, bool)> {
        self.spawn(|inner| async move {
            let w =
                inner.write(&scope, &[Step::Put { collection: collection.clone(), id: id.clone(), doc, pre }]).await?;
            match w.results.into_iter().next() {
                Some(super::OpResult::Record(Some(s))) => Ok((s, w.created)),
                _ => Err(Scope::hidden(&collection, &id)),
            }
        })
    }

    fn delete(&self, scope: Scope, collection: String, id: String, pre: Precondition) -> BackendFuture<'_, ()> {
        self.spawn(|inner| async move {
            inner.write(&scope, &[Step::Delete { collection, id, pre }]).await?;
            Ok(())
        })
    }

    fn query(&self, collection: String, query: Query) -> BackendFuture<'_, Page<Value>> {
        self.spawn(|inner| async move { inner.query(&collection, &query).await })
    }

    fn count(&self, collection: String, query: Query) -> BackendFuture<'_, u64> {
        self.spawn(|inner| async move { inner.count(&collection, &query).await })
    }

    fn claim(
        &self,
        scope: Scope,
        collection: String,
        queries: Vec<Query>,
        set: Map<String, Value>,
    ) -> BackendFuture<'_, Option<Stored<Value>>> {
        self.spawn(|inner| async move { inner.claim(&scope, &collection, &queries, &set).await })
    }

    fn transaction(&self, scope: Scope, ops: Vec<Operation>) -> BackendFuture<'_, Committed> {
        self.spawn(|inner| async move {
            let steps: Vec<Step> = ops.into_iter().map(Step::Op).collect();
            let w = inner.write(&scope, &steps).await?;
            Ok(Committed { seq: w.seq, results: w.results })
        })
    }

    fn changes_since(&self, since: u64, limit: usize) -> BackendFuture<'_, Vec<Change>> {
        self.spawn(move |inner| async move { inner.changes_since(since, limit).await })
    }

    fn stats(&self) -> BackendFuture<'_, Value> {
        self.spawn(|inner| async move { inner.stats().await })
    }

    fn figures(&self) -> BackendFuture<'_, Figures> {
        let shed = self.inner.permits.shed();
        self.spawn(move |inner| async move {
            let feed = inner.feed_stats().await?;
            Ok(Figures {
                shed,
                last_sequence: (*inner.written.borrow()).max(feed.last_change),
                engine: None,
                feed: Some(feed),
                blobs: None,
                queues: None,
            })
        })
    }

    fn backup(&self, _to: std::path::PathBuf, _check: bool) -> BackendFuture<'_, Value> {
        Box::pin(async {
            Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "not-supported",
                "the postgres backend has no backup of its own: back the database up with pg_dump or pg_basebackup",
            ))
        })
    }

    fn check(&self) -> BackendFuture<'_, Value> {
        self.spawn(|inner| async move { inner.check().await })
    }

    fn queue(&self) -> Result<QueueStore, ApiError> {
        let mut slot = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(queue) = &*slot {
            return Ok(queue.clone());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| internal("the job queue opens from a thread of the runtime serving the calls"))?;
        let queue = PostgresQueue::open(
            &self.inner.url,
            &self.inner.names.schema,
            self.inner.pool_size,
            self.queue_options.clone(),
            self.inner.queue_wake.clone(),
            runtime,
        )
        .map_err(|e| internal(format!("cannot open the job queue: {e}")))?;
        let queue = QueueStore::from(queue);
        *slot = Some(queue.clone());
        Ok(queue)
    }

    fn run_metrics(&self) -> Result<RunMetricsStore, ApiError> {
        let mut slot = self.run_metrics.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(metrics) = &*slot {
            return Ok(metrics.clone());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| internal("the run metrics open from a thread of the runtime serving the calls"))?;
        let metrics =
            PostgresRunMetrics::open(&self.inner.url, &self.inner.names.schema, self.inner.pool_size, runtime)
                .map_err(|e| internal(format!("cannot open the run metrics: {e}")))?;
        let metrics = RunMetricsStore::from(metrics);
        *slot = Some(metrics.clone());
        Ok(metrics)
    }

    fn close(&self) -> Result<(), String> {
        // The queue's background tasks stop with its last handle.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        self.run_metrics.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        Ok(())
    }
}
