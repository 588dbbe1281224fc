//! The PostgreSQL backend: the records of every collection in tables of one schema of one database, which
//! several `cairn serve` processes may share. Same records, versions, sequences, orders and answers as the
//! embedded backend; the layout is `cairn export postgres`'s, so a store exported there is served as it is.
//!
//! Where each part lives: the layout and its DDL in [`schema`], queries, their order and cursors in
//! [`query`], the write path and the commit counter in [`write`], the change feed and its trimming in
//! [`feed`], the notifications from other servers in [`listen`], the connections in [`pool`].

mod feed;
mod listen;
mod pool;
mod query;
mod schema;
mod write;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use cairn_store::{Change, CollectionError, CollectionSpec, Page, Query, Stored};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio_postgres::Client;

use self::pool::Pool;
use self::query::{refs, stored, Order, RECORD_COLUMNS};
use self::schema::{index_name, validate_spec, Names, CATALOG, CHANGES, INDEX_PREFIX, META};
use self::write::{Fail, Step, ATTEMPTS};
use super::{
    apply_claim, Backend, BackendFuture, CollectionInfo, Committed, Figures, Operation, Permits, Precondition, Scope,
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
}

/// What the backend's tasks share.
pub(crate) struct Inner {
    pool: Pool,
    names: Names,
    url: String,
    retention: ChangeRetention,
    permits: Permits,
    specs: Mutex<HashMap<String, CollectionSpec>>,
    last_seq: AtomicU64,
    written: watch::Sender<u64>,
    trims: AtomicU64,
    trimmed_events: AtomicU64,
    trim_errors: AtomicU64,
}

/// A database error as a 500 naming PostgreSQL's message.
pub(crate) fn db_error(e: tokio_postgres::Error) -> ApiError {
    let detail = e.as_db_error().map_or_else(|| e.to_string(), |d| d.to_string());
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("postgres: {detail}"))
}

/// Any other failure as a 500.
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

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
            retention: opts.retention.clone(),
            permits: Permits::new(opts.max_concurrency.max(1)),
            specs: Mutex::new(HashMap::new()),
            last_seq: AtomicU64::new(0),
            written: watch::Sender::new(0),
            trims: AtomicU64::new(0),
            trimmed_events: AtomicU64::new(0),
            trim_errors: AtomicU64::new(0),
        });
        let seq = inner.setup().await.map_err(|e| e.detail)?;
        inner.note_sequence(seq);
        Ok(Self { inner })
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
        let mut client = inner.pool.get().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let mut staged = Vec::new();
        for op in &ops {
            let cur = write::lock_current(&tx, &inner.names, &op.collection, &op.id).await.map_err(fail)?;
            let doc = op.document.clone().unwrap_or_default();
            staged.push(write::Staged::update(&op.collection, &op.id, cur.map(|c| c.stored), Some(doc)));
        }
        let seq = write::stamp(&tx, &inner.names, &staged, write::now_ms()).await.map_err(db_error)?;
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
        let specs = catalog(&tx, &self.names).await?;
        let mut highest = vec!["0::int8".to_owned()];
        // The sequence `cairn export postgres` holds everything up to (deletes included).
        let state = self.names.table("cairn_sync_state");
        let exported = tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&state]).await.map_err(db_error)?;
        if exported.try_get::<_, bool>(0).map_err(db_error)? {
            highest.push(format!("(SELECT max(cursor) FROM {state})"));
        }
        for spec in &specs {
            tx.batch_execute(&self.names.table_sql(&spec.name)).await.map_err(db_error)?;
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
        if self.last_seq.fetch_max(seq, Ordering::AcqRel) < seq {
            self.written.send_if_modified(|w| {
                let newer = seq > *w;
                if newer {
                    *w = seq;
                }
                newer
            });
        }
    }

    /// Forgets the cached declarations (another server declared).
    pub(crate) fn clear_specs(&self) {
        if let Ok(mut specs) = self.specs.lock() {
            specs.clear();
        }
    }

    /// The declaration of `collection`: 404 if there is none.
    pub(crate) async fn spec(&self, collection: &str) -> Result<CollectionSpec, ApiError> {
        if let Some(spec) = self.specs.lock().map_err(internal)?.get(collection) {
            return Ok(spec.clone());
        }
        let client = self.pool.get().await?;
        let row = client
            .query_opt(&format!("SELECT spec FROM {} WHERE name = $1", self.names.table(CATALOG)), &[&collection])
            .await
            .map_err(db_error)?
            .ok_or_else(|| ApiError::from(CollectionError::UnknownCollection(collection.to_owned())))?;
        let spec: CollectionSpec = serde_json::from_value(row.try_get(0).map_err(db_error)?).map_err(internal)?;
        self.specs.lock().map_err(internal)?.insert(collection.to_owned(), spec.clone());
        Ok(spec)
    }

    /// Runs `f` holding the schema's declaration lock (a session advisory lock, taken by polling so that no
    /// waiting transaction holds up the concurrent index builds of the holder).
    async fn with_declare_lock<'a, R>(
        &'a self,
        client: &'a Client,
        f: impl FnOnce(&'a Client) -> std::pin::Pin<Box<dyn Future<Output = Result<R, ApiError>> + Send + 'a>>,
    ) -> Result<R, ApiError> {
        let key = self.names.declare_lock();
        loop {
            let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).await.map_err(db_error)?;
            if row.try_get::<_, bool>(0).map_err(db_error)? {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let out = f(client).await;
        let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.map_err(db_error);
        let out = out?;
        unlocked?;
        Ok(out)
    }

    /// Builds the indexes of `spec` that are missing (concurrently, so writes go on), rebuilds those a
    /// failed build left invalid, and drops the backend's indexes `spec` no longer declares.
    async fn ensure_indexes(&self, client: &Client, spec: &CollectionSpec) -> Result<(), ApiError> {
        let table = self.names.table(&spec.name);
        let rows = client
            .query(
                "SELECT c.relname::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 WHERE i.indrelid = to_regclass($1)::oid AND starts_with(c.relname::text, $2)",
                &[&table, &INDEX_PREFIX],
            )
            .await
            .map_err(db_error)?;
        let wanted: Vec<String> = spec.indexes.iter().map(|i| index_name(&spec.name, i)).collect();
        for row in &rows {
            let name: String = row.try_get(0).map_err(db_error)?;
            let valid: bool = row.try_get(1).map_err(db_error)?;
            if !valid || !wanted.contains(&name) {
                client.batch_execute(&self.names.drop_index_sql(&name)).await.map_err(db_error)?;
            }
        }
        for index in &spec.indexes {
            client.batch_execute(&self.names.create_index_sql(&spec.name, index)).await.map_err(db_error)?;
        }
        Ok(())
    }

    async fn declare(&self, spec: CollectionSpec) -> Result<bool, ApiError> {
        validate_spec(&spec)?;
        let client = self.pool.get().await?;
        let created = self
            .with_declare_lock(&client, |c| {
                Box::pin(async {
                    let catalog = self.names.table(CATALOG);
                    let existed = c
                        .query_opt(&format!("SELECT 1 FROM {catalog} WHERE name = $1"), &[&spec.name])
                        .await
                        .map_err(db_error)?
                        .is_some();
                    c.batch_execute(&self.names.table_sql(&spec.name)).await.map_err(db_error)?;
                    self.ensure_indexes(c, &spec).await?;
                    let json = serde_json::to_value(&spec).map_err(internal)?;
                    c.execute(
                        &format!(
                            "WITH w AS (INSERT INTO {catalog} (name, spec) VALUES ($1, $2)
                                        ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec)
                             SELECT pg_notify($3, $1)"
                        ),
                        &[&spec.name, &json, &self.names.catalog_channel()],
                    )
                    .await
                    .map_err(db_error)?;
                    Ok(!existed)
                })
            })
            .await?;
        self.specs.lock().map_err(internal)?.insert(spec.name.clone(), spec);
        Ok(created)
    }

    async fn collections(&self, scope: &Scope) -> Result<Vec<CollectionInfo>, ApiError> {
        let specs = {
            let client = self.pool.get().await?;
            catalog(&*client, &self.names).await?
        };
        let client = self.pool.get().await?;
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let table = self.names.table(&spec.name);
            let row = match &scope.project {
                None => client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await,
                Some(p) => {
                    client
                        .query_one(
                            &format!("SELECT count(*) FROM {table} WHERE doc -> 'project' = to_jsonb($1::text)"),
                            &[p],
                        )
                        .await
                }
            }
            .map_err(db_error)?;
            let count: i64 = row.try_get(0).map_err(db_error)?;
            out.push(CollectionInfo { name: spec.name, indexes: spec.indexes, count: count.max(0) as u64 });
        }
        Ok(out)
    }

    async fn get(&self, scope: &Scope, collection: &str, id: &str) -> Result<Stored<Value>, ApiError> {
        self.spec(collection).await?;
        let client = self.pool.get().await?;
        let sql = format!("SELECT {RECORD_COLUMNS} FROM {} WHERE id = $1", self.names.table(collection));
        let row = client.query_opt(&sql, &[&id]).await.map_err(db_error)?;
        match row.map(|r| stored(&r)).transpose().map_err(db_error)? {
            Some(s) if scope.sees(&s.doc) => Ok(s),
            _ => Err(Scope::hidden(collection, id)),
        }
    }

    async fn query(&self, collection: &str, query: &Query) -> Result<Page<Value>, ApiError> {
        let spec = self.spec(collection).await?;
        let order = Order::of(&self.names, &spec, query)?;
        let size = query.page_size()?;
        let mut after = query.cursor().map(|c| order.decode(c)).transpose()?;
        // Conditions beyond equalities (not sent by the HTTP API) are checked on each row.
        let checked = query.has_other_conditions();
        let batch = if checked { size.saturating_mul(2).max(64) } else { size + 1 };
        let client = self.pool.get().await?;
        let mut records = Vec::with_capacity(size);
        let mut last = None;
        let mut more = false;
        'scan: loop {
            let (sql, params) = query::select(&self.names, collection, query, &order, after.as_ref(), batch, false);
            let rows = client.query(&sql, &refs(&params)).await.map_err(db_error)?;
            for row in &rows {
                let s = stored(row).map_err(db_error)?;
                let pos = order.position(row).map_err(db_error)?;
                if checked && !query.matches(&s.doc) {
                    after = Some(pos);
                    continue;
                }
                if records.len() == size {
                    more = true;
                    break 'scan;
                }
                records.push(s);
                last = Some(pos.clone());
                after = Some(pos);
            }
            if rows.len() < batch {
                break;
            }
        }
        let next_cursor = if more { last.map(|p| order.cursor(&p)) } else { None };
        Ok(Page { records, next_cursor })
    }

    async fn claim(
        &self,
        scope: &Scope,
        collection: &str,
        queries: &[Query],
        set: &Map<String, Value>,
    ) -> Result<Option<Stored<Value>>, ApiError> {
        let spec = self.spec(collection).await?;
        let orders = queries.iter().map(|q| Order::of(&self.names, &spec, q)).collect::<Result<Vec<_>, _>>()?;
        for _ in 0..ATTEMPTS {
            match self.claim_once(scope, collection, queries, &orders, set).await {
                Ok(claimed) => return Ok(claimed),
                Err(Fail::Api(e)) => return Err(e),
                Err(Fail::Retry) => continue,
            }
        }
        Err(ApiError::from(CollectionError::Contended { collection: collection.to_owned() }))
    }

    async fn claim_once(
        &self,
        scope: &Scope,
        collection: &str,
        queries: &[Query],
        orders: &[Order],
        set: &Map<String, Value>,
    ) -> Result<Option<Stored<Value>>, Fail> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut refused = None;
        for (q, order) in queries.iter().zip(orders) {
            let (sql, params) = query::select(&self.names, collection, q, order, None, CLAIM_CANDIDATES, true);
            let rows = tx.query(&sql, &refs(&params)).await?;
            for row in &rows {
                let current = stored(row)?;
                if !q.matches(&current.doc) {
                    continue;
                }
                let mut doc = current.doc.clone();
                match apply_claim(scope, &mut doc, set) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        refused = Some(e);
                        continue;
                    }
                }
                let at_ms = write::now_ms();
                let staged = write::Staged::update(collection, &current.id, Some(current.clone()), Some(doc.clone()));
                let seq = write::stamp(&tx, &self.names, &[staged], at_ms).await?;
                tx.commit().await?;
                self.note_sequence(seq);
                return Ok(Some(Stored {
                    id: current.id,
                    version: current.version + 1,
                    seq,
                    created_at_ms: current.created_at_ms,
                    updated_at_ms: at_ms,
                    doc,
                }));
            }
        }
        match refused {
            Some(e) => Err(Fail::Api(e)),
            None => Ok(None),
        }
    }

    async fn stats(&self) -> Result<Value, ApiError> {
        let specs = {
            let client = self.pool.get().await?;
            catalog(&*client, &self.names).await?
        };
        let client = self.pool.get().await?;
        let mut collections = Map::new();
        for spec in &specs {
            let row = client
                .query_one(&format!("SELECT count(*) FROM {}", self.names.table(&spec.name)), &[])
                .await
                .map_err(db_error)?;
            collections.insert(spec.name.clone(), json!(row.try_get::<_, i64>(0).map_err(db_error)?));
        }
        let row = client
            .query_one(
                &format!(
                    "SELECT pg_database_size(current_database()),
                            coalesce((SELECT value FROM {} WHERE name = 'seq'), 0)",
                    self.names.table(META)
                ),
                &[],
            )
            .await
            .map_err(db_error)?;
        let size: i64 = row.try_get(0).map_err(db_error)?;
        let counter: i64 = row.try_get(1).map_err(db_error)?;
        drop(client);
        let feed = self.feed_stats().await?;
        Ok(json!({
            "backend": "postgres",
            "schema": self.names.schema,
            "collections": collections,
            "last_sequence": counter,
            "database_bytes": size,
            "changes": {
                "bytes": feed.bytes,
                "trimmed_through": feed.trimmed_through,
                "last_change": feed.last_change,
            },
        }))
    }

    async fn check(&self) -> Result<Value, ApiError> {
        let client = self.pool.get().await?;
        let mut checks = Vec::new();
        let mut healthy = true;
        let mut note = |name: String, ok: bool, detail: String| {
            healthy &= ok;
            checks.push(json!({"check": name, "ok": ok, "detail": detail}));
        };
        let exists = |name: String| {
            let client = &client;
            async move {
                let row = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name]).await.map_err(db_error)?;
                row.try_get::<_, bool>(0).map_err(db_error)
            }
        };
        for t in [CATALOG, META, CHANGES] {
            let present = exists(self.names.table(t)).await?;
            note(format!("table {t}"), present, if present { "present" } else { "missing" }.to_owned());
        }
        let specs = catalog(&*client, &self.names).await.unwrap_or_default();
        let counter: i64 = client
            .query_opt(&format!("SELECT value FROM {} WHERE name = 'seq'", self.names.table(META)), &[])
            .await
            .ok()
            .flatten()
            .and_then(|r| r.try_get(0).ok())
            .unwrap_or(-1);
        note("commit counter".into(), counter >= 0, format!("{counter}"));
        for spec in &specs {
            let table = self.names.table(&spec.name);
            if !exists(table.clone()).await? {
                note(format!("collection {}", spec.name), false, "its table is missing".into());
                continue;
            }
            let row = client
                .query_one(&format!("SELECT coalesce(max(seq), 0), count(*) FROM {table}"), &[])
                .await
                .map_err(db_error)?;
            let (top, count): (i64, i64) = (row.try_get(0).map_err(db_error)?, row.try_get(1).map_err(db_error)?);
            note(
                format!("collection {}", spec.name),
                top <= counter,
                format!("{count} records, highest seq {top}, counter {counter}"),
            );
            let indexes = client
                .query(
                    "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                     WHERE i.indrelid = to_regclass($1)::oid AND i.indisvalid",
                    &[&table],
                )
                .await
                .map_err(db_error)?;
            let present: Vec<String> = indexes.iter().filter_map(|r| r.try_get(0).ok()).collect();
            for index in &spec.indexes {
                let name = index_name(&spec.name, index);
                let ok = present.contains(&name);
                note(
                    format!("index {}.{}", spec.name, index.name),
                    ok,
                    if ok { name } else { format!("{name} missing or invalid") },
                );
            }
        }
        let row = client
            .query_one(
                &format!(
                    "SELECT coalesce(max(seq), 0), coalesce((SELECT value FROM {} WHERE name = 'trimmed_through'), 0) FROM {}",
                    self.names.table(META),
                    self.names.table(CHANGES)
                ),
                &[],
            )
            .await
            .map_err(db_error)?;
        let (feed_top, trimmed): (i64, i64) = (row.try_get(0).map_err(db_error)?, row.try_get(1).map_err(db_error)?);
        note(
            "change feed".into(),
            feed_top <= counter && trimmed <= counter,
            format!("highest seq {feed_top}, trimmed through {trimmed}, counter {counter}"),
        );
        Ok(
            json!({"healthy": healthy, "backend": "postgres", "schema": self.names.schema, "last_sequence": counter, "checks": checks}),
        )
    }
}

/// Every declaration in the catalog, by name.
async fn catalog(client: &impl tokio_postgres::GenericClient, names: &Names) -> Result<Vec<CollectionSpec>, ApiError> {
    let rows = client
        .query(&format!("SELECT spec FROM {} ORDER BY name COLLATE \"C\"", names.table(CATALOG)), &[])
        .await
        .map_err(db_error)?;
    rows.iter().map(|r| serde_json::from_value(r.try_get(0).map_err(db_error)?).map_err(internal)).collect()
}

impl Backend for PostgresBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn last_sequence(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Acquire)
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
                last_sequence: inner.last_seq.load(Ordering::Acquire).max(feed.last_change),
                engine: None,
                feed: Some(feed),
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

    fn close(&self) -> Result<(), String> {
        Ok(())
    }
}
