//! The default backend: the record store of one data directory, its synchronous calls made on tokio's
//! blocking pool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use cairn_engine::{Check, Error as EngineError, OpenError};
use cairn_store::artifacts::Artifacts;
use cairn_store::metrics::Metrics;
use cairn_store::queue::{JobQueue, QueueOptions};
use cairn_store::{check_store, Change, CollectionSpec, Page, Query, RecordWrite, Store, Stored};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use super::grouped_writes::{Decide, GroupedWrites};
use super::{
    apply_claim, internal, Backend, BackendFuture, CollectionInfo, Committed, Figures, OpKind, OpResult, Operation,
    Permits, Precondition, QueueStore, Replaced, RunMetricsStore, Scope,
};
use crate::problem::ApiError;
use crate::report;

/// Commit attempts of a transaction when a concurrent commit touched one of its records. The
/// preconditions are checked again on every attempt.
const TXN_ATTEMPTS: usize = 16;

/// The record store of a data directory behind the [`Backend`] interface.
#[derive(Clone)]
pub struct EmbeddedBackend {
    store: Store,
    /// The artifact store beside the records, whose blob files backups and checks carry.
    artifacts: Option<Artifacts>,
    permits: Arc<Permits>,
    /// Record puts and deletes, made in commits shared between concurrent requests.
    writes: Arc<GroupedWrites>,
    written: watch::Sender<u64>,
    /// The job queue, opened by the first call that needs it (declaring its collections is a write).
    queue: Arc<std::sync::Mutex<Option<QueueStore>>>,
    queue_options: QueueOptions,
    metrics: RunMetricsStore,
}

impl EmbeddedBackend {
    /// The backend over `store`, running at most `max_concurrency` store calls at once.
    pub fn new(store: Store, max_concurrency: usize) -> Self {
        let written = watch::Sender::new(store.db().last_sequence());
        Self {
            artifacts: None,
            permits: Arc::new(Permits::new(max_concurrency)),
            writes: Arc::new(GroupedWrites::new(store.clone())),
            written,
            queue: Arc::default(),
            queue_options: QueueOptions::default(),
            metrics: Arc::new(Metrics::new(store.clone())),
            store,
        }
    }

    /// This backend with its job queue opened with `options` (retention, backoff, maintenance interval)
    /// instead of the defaults.
    pub fn with_queue_options(mut self, options: QueueOptions) -> Self {
        self.queue_options = options;
        self
    }

    /// This backend with the artifact store kept beside its records: backups copy its blob files and
    /// checks verify them.
    pub fn with_artifacts(mut self, artifacts: Artifacts) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs `f` on the blocking pool, holding a permit until `f` returns (dropping the returned future, at a
    /// timeout, does not stop `f`, and the permit stays taken until it has).
    fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<R, ApiError> + Send + 'static,
    ) -> BackendFuture<'_, R> {
        let permit = self.permits.take();
        let store = self.store.clone();
        Box::pin(async move {
            let permit = permit?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                f(&store)
            })
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("engine task failed: {e}"))
            })?
        })
    }

    /// As [`blocking`](Self::blocking), then wakes change-feed waiters if something committed.
    fn writing<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<R, ApiError> + Send + 'static,
    ) -> BackendFuture<'_, R> {
        let run = self.blocking(f);
        Box::pin(async move {
            let out = run.await;
            self.wake_followers();
            out
        })
    }

    /// The write of record `id` of `collection` that `decide` chooses, made in a commit shared with other
    /// requests' ([`GroupedWrites`]), then wakes change-feed waiters: the record as written (`None` after a
    /// delete) and whether it was absent before.
    fn write_grouped(
        &self,
        collection: String,
        id: String,
        decide: Decide,
    ) -> BackendFuture<'_, (Option<Stored<Value>>, bool)> {
        let permit = self.permits.take();
        Box::pin(async move {
            let out = self.writes.write(collection, id, decide, permit?).await;
            self.wake_followers();
            out
        })
    }

    /// Wakes change-feed waiters if something committed since they were last woken.
    fn wake_followers(&self) {
        let seq = self.store.db().last_sequence();
        self.written.send_if_modified(|written| {
            let newer = seq > *written;
            if newer {
                *written = seq;
            }
            newer
        });
    }
}

/// Whether a document given as JSON text is visible in `scope` (parsed only for a scoped token).
fn sees_raw(scope: &Scope, doc: &RawValue) -> Result<bool, ApiError> {
    if scope.project.is_none() {
        return Ok(true);
    }
    let doc: Value = serde_json::from_str(doc.get()).map_err(internal)?;
    Ok(scope.sees(&doc))
}

/// The record a put or delete replaces, as the precondition checks take it.
fn replaced(scope: &Scope, s: Option<&Stored<Box<RawValue>>>) -> Result<Option<Replaced>, ApiError> {
    s.map(|s| Ok(Replaced { version: s.version, visible: sees_raw(scope, &s.doc)? })).transpose()
}

/// A record as read inside a transaction, with the sequence and time its commit gave it.
fn as_committed(mut s: Stored<Value>, c: &cairn_store::Committed) -> Stored<Value> {
    s.seq = c.seq;
    s.updated_at_ms = c.at_ms;
    if s.created_at_ms == 0 {
        s.created_at_ms = c.at_ms;
    }
    s
}

/// A checkpoint of `store` in `to`, with the blob files of its artifact store when it has one.
fn checkpoint(store: &Store, artifacts: Option<&Artifacts>, to: &Path) -> Result<Value, ApiError> {
    match artifacts {
        Some(a) => {
            let (info, files, bytes) = a.checkpoint(to).map_err(checkpoint_error)?;
            let mut out = report::checkpoint_json(&info);
            out["blob_files"] = json!(files);
            out["blob_bytes"] = json!(bytes);
            Ok(out)
        }
        None => Ok(report::checkpoint_json(&store.db().checkpoint(to).map_err(checkpoint_error)?)),
    }
}

fn checkpoint_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Open(OpenError::AlreadyExists { path }) => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("{} exists and is not empty; a backup goes to a new directory", path.display()),
        ),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("backup failed: {other}")),
    }
}

impl Backend for EmbeddedBackend {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn last_sequence(&self) -> u64 {
        self.store.db().last_sequence()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    fn collections(&self, scope: Scope) -> BackendFuture<'_, Vec<CollectionInfo>> {
        self.blocking(move |store| {
            let mut out = Vec::new();
            // The job queue's records are its own working state, reached through `/v1/queue` (the
            // PostgreSQL backend keeps them in tables of their own): not listed.
            let listed = store.collections().into_iter().filter(|c| !cairn_store::queue::is_queue_collection(&c.name));
            for spec in listed {
                let count = match &scope.project {
                    None => store.record_count(&spec.name)?,
                    Some(p) => store.collection_dyn(&spec.name)?.count(&Query::new().eq("project", p.as_str()))?,
                };
                out.push(CollectionInfo { name: spec.name, indexes: spec.indexes, count });
            }
            Ok(out)
        })
    }

    fn declare(&self, spec: CollectionSpec) -> BackendFuture<'_, bool> {
        self.blocking(move |store| {
            let existed = store.collections().iter().any(|c| c.name == spec.name);
            store.declare(spec)?;
            Ok(!existed)
        })
    }

    fn get(&self, scope: Scope, collection: String, id: String) -> BackendFuture<'_, Stored<Value>> {
        self.blocking(move |store| match store.collection_dyn(&collection)?.get(&id)? {
            Some(s) if scope.sees(&s.doc) => Ok(s),
            _ => Err(Scope::hidden(&collection, &id)),
        })
    }

    /// Runs on the calling task, not the blocking pool: a point read comes from the memtable, the block
    /// cache or mapped tables (the page cache) in microseconds, less than the hand-off to a blocking thread
    /// and back costs. It still takes one of the permits, so it is shed like the other calls when they
    /// run out. Unscoped, the document is not parsed at all; scoped, it is parsed to check its project.
    fn get_raw(&self, scope: Scope, collection: String, id: String) -> BackendFuture<'_, Stored<Box<RawValue>>> {
        let read = || {
            let _permit = self.permits.take()?;
            match self.store.collection_dyn(&collection)?.get_raw(&id)? {
                Some(s) if sees_raw(&scope, &s.doc)? => Ok(s),
                _ => Err(Scope::hidden(&collection, &id)),
            }
        };
        Box::pin(std::future::ready(read()))
    }

    fn put(
        &self,
        scope: Scope,
        collection: String,
        id: String,
        doc: Value,
        pre: Precondition,
    ) -> BackendFuture<'_, (Stored<Value>, bool)> {
        let (name, key) = (collection.clone(), id.clone());
        let decide = Box::new(move |cur: Option<&Stored<Box<RawValue>>>| {
            pre.check_put(&scope, &name, &key, replaced(&scope, cur)?)?;
            Ok(RecordWrite::Put(doc.clone()))
        });
        let write = self.write_grouped(collection.clone(), id.clone(), decide);
        Box::pin(async move {
            let (stored, absent) = write.await?;
            Ok((stored.ok_or_else(|| Scope::hidden(&collection, &id))?, absent))
        })
    }

    fn delete(&self, scope: Scope, collection: String, id: String, pre: Precondition) -> BackendFuture<'_, ()> {
        let (name, key) = (collection.clone(), id.clone());
        let decide = Box::new(move |cur: Option<&Stored<Box<RawValue>>>| {
            pre.check_delete(&name, &key, replaced(&scope, cur)?)?;
            Ok(RecordWrite::Delete)
        });
        let write = self.write_grouped(collection, id, decide);
        Box::pin(async move { write.await.map(|_| ()) })
    }

    fn query(&self, collection: String, query: Query) -> BackendFuture<'_, Page<Value>> {
        self.blocking(move |store| Ok(store.collection_dyn(&collection)?.query(&query)?))
    }

    fn count(&self, collection: String, query: Query) -> BackendFuture<'_, u64> {
        self.blocking(move |store| Ok(store.collection_dyn(&collection)?.count(&query)?))
    }

    fn claim(
        &self,
        scope: Scope,
        collection: String,
        queries: Vec<Query>,
        set: Map<String, Value>,
    ) -> BackendFuture<'_, Option<Stored<Value>>> {
        self.writing(move |store| {
            let coll = store.collection_dyn(&collection)?;
            let mut refused = None;
            let claimed = coll.claim(&queries, |doc| match apply_claim(&scope, doc, &set) {
                Ok(taken) => taken,
                Err(e) => {
                    refused = Some(e);
                    false
                }
            })?;
            match (claimed, refused) {
                (None, Some(e)) => Err(e),
                (claimed, _) => Ok(claimed),
            }
        })
    }

    fn transaction(&self, scope: Scope, ops: Vec<Operation>) -> BackendFuture<'_, Committed> {
        self.writing(move |store| {
            let (read, c) = store.commit_with_retry(TXN_ATTEMPTS, |tx| {
                for op in &ops {
                    let cur = tx.get_doc(&op.collection, &op.id)?;
                    op.check(&scope, cur.as_ref().map(|s| Replaced::of(&scope, &s.doc, s.version)))?;
                    match op.op {
                        OpKind::Put => {
                            tx.upsert_doc(&op.collection, &op.id, op.document.clone().unwrap_or_default())?;
                        }
                        OpKind::Delete => tx.delete_doc(&op.collection, &op.id, None)?,
                        OpKind::Check => {}
                    }
                }
                // Each record as the transaction left it (a later operation may have changed it again).
                ops.iter()
                    .map(|op| match op.op {
                        OpKind::Delete => Ok(None),
                        _ => Ok(tx.get_doc(&op.collection, &op.id)?.filter(|s| scope.sees(&s.doc))),
                    })
                    .collect::<Result<Vec<_>, ApiError>>()
            })?;
            let results = ops
                .iter()
                .zip(read)
                .map(|(op, stored)| match (op.op, stored) {
                    (OpKind::Delete, _) => OpResult::Deleted,
                    (OpKind::Put, Some(s)) => OpResult::Record(Some(as_committed(s, &c))),
                    (_, s) => OpResult::Record(s),
                })
                .collect();
            Ok(Committed { seq: c.seq, results })
        })
    }

    fn changes_since(&self, since: u64, limit: usize) -> BackendFuture<'_, Vec<Change>> {
        self.blocking(move |store| Ok(store.changes_since(since, limit)?))
    }

    fn stats(&self) -> BackendFuture<'_, Value> {
        self.blocking(|store| {
            let db = store.db();
            Ok(report::stats_json(db.path(), &db.stats()))
        })
    }

    fn figures(&self) -> BackendFuture<'_, Figures> {
        let shed = self.permits.shed();
        self.blocking(move |store| {
            let engine = store.db().stats();
            Ok(Figures {
                shed,
                last_sequence: engine.last_sequence,
                engine: Some(engine),
                feed: Some(store.feed_stats()?),
                blobs: None,
                queues: None,
            })
        })
    }

    fn backup(&self, to: PathBuf, check: bool) -> BackendFuture<'_, Value> {
        let artifacts = self.artifacts.clone();
        self.blocking(move |store| {
            let mut out = checkpoint(store, artifacts.as_ref(), &to)?;
            if check {
                let checked = check_store(&Check::new(), &to).map_err(internal)?;
                out["check"] = report::check_json(&checked);
            }
            Ok(out)
        })
    }

    fn check(&self) -> BackendFuture<'_, Value> {
        static COPIES: AtomicU64 = AtomicU64::new(0);
        let artifacts = self.artifacts.clone();
        self.blocking(move |store| {
            let data = store.db().path().to_path_buf();
            let name = data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let copy = data.with_file_name(format!(
                ".{name}.check-{}-{}",
                std::process::id(),
                COPIES.fetch_add(1, Ordering::Relaxed)
            ));
            let checked = checkpoint(store, artifacts.as_ref(), &copy)
                .and_then(|_| check_store(&Check::new(), &copy).map_err(internal));
            let _ = std::fs::remove_dir_all(&copy);
            let mut out = report::check_json(&checked?);
            out["dir"] = json!(data);
            Ok(out)
        })
    }

    fn queue(&self) -> Result<QueueStore, ApiError> {
        let mut slot = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(queue) = &*slot {
            return Ok(queue.clone());
        }
        let queue: QueueStore = Arc::new(
            JobQueue::open(self.store.clone(), self.queue_options.clone())
                .map_err(|e| internal(format!("cannot open the job queue: {e}")))?,
        );
        *slot = Some(queue.clone());
        Ok(queue)
    }

    fn run_metrics(&self) -> Result<RunMetricsStore, ApiError> {
        Ok(self.metrics.clone())
    }

    fn close(&self) -> Result<(), String> {
        // The queue's maintenance thread stops with its last handle.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let db = self.store.db().clone();
        db.flush().map_err(|e| e.to_string())?;
        db.close().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A timed-out request's store call keeps its permit until it ends: meanwhile calls are shed with 503
    /// and `Retry-After`, and afterwards they run again.
    #[tokio::test]
    async fn store_calls_left_by_timeouts_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let backend = EmbeddedBackend::new(Store::open(dir.path().join("data")).unwrap(), 2);
        let slow = || {
            backend.blocking(|_| {
                std::thread::sleep(Duration::from_millis(600));
                Ok(())
            })
        };
        for _ in 0..2 {
            assert!(tokio::time::timeout(Duration::from_millis(20), slow()).await.is_err(), "timed out");
        }
        let shed = backend.stats().await.unwrap_err();
        assert_eq!((shed.status.as_u16(), shed.retry_after), (503, Some(1)));
        assert_eq!(backend.permits.shed(), 1);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(backend.stats().await.is_ok(), "the permits came back when the slow tasks ended");
    }
}
