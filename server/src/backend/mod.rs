//! The storage boundary of the server: every route reads and writes through [`Backend`], which has two
//! implementations, [`EmbeddedBackend`] (the record store of a data directory, the default) and the
//! PostgreSQL backend (`postgres`, several servers on one database). Nothing above this module knows which
//! one runs: both answer with the same records, versions, sequences, cursors' semantics and problem
//! documents.
//!
//! What is decided here once for both: the write preconditions ([`Precondition`]), project scopes
//! ([`Scope`]), the operations of a transaction ([`Operation`]) and the claim's field updates
//! ([`set_path`]).
//!
//! The job queue has an interface of its own, [`QueueApi`] (held as a [`QueueStore`], which
//! [`Backend::queue`] gives): the embedded store's [`JobQueue`](cairn_store::queue::JobQueue), or the
//! PostgreSQL backend's [`PostgresQueue`].
//!
//! Run metrics likewise, [`RunMetricsApi`] (held as a [`RunMetricsStore`], which [`Backend::run_metrics`]
//! gives): the embedded store's [`Metrics`](cairn_store::metrics::Metrics), or the PostgreSQL backend's
//! [`PostgresRunMetrics`].
//!
//! The artifact store has an interface of its own, [`ArtifactApi`] (held as an [`ArtifactStore`]): the
//! embedded store's [`Artifacts`](cairn_store::artifacts::Artifacts), or [`PostgresArtifacts`] (metadata in
//! the PostgreSQL database, bytes in an object store).

mod artifacts;
mod embedded;
mod grouped_writes;
mod postgres;
mod queue;
mod run_metrics;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cairn_store::{Change, CollectionSpec, FeedStats, IndexSpec, Page, Query, Stored};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::problem::ApiError;

pub use artifacts::{ArtifactApi, ArtifactStore, ObjectRead};
pub use embedded::EmbeddedBackend;
pub use postgres::{
    PostgresArtifactOptions, PostgresArtifacts, PostgresBackend, PostgresOptions, PostgresQueue, PostgresRunMetrics,
    LISTENER_NAME,
};
pub use queue::{QueueApi, QueueStore};
pub use run_metrics::{RunMetricsApi, RunMetricsStore};

/// A boxed future of a backend call.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>>;

/// What a request may see and write: everything, or the records of one project (a document's top-level
/// `project` field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The token's name, for error messages.
    pub name: String,
    /// The project the token is limited to.
    pub project: Option<String>,
}

impl Scope {
    /// Sees and writes everything.
    pub fn unscoped(name: &str) -> Self {
        Self { name: name.to_owned(), project: None }
    }

    /// Whether a document is visible in this scope.
    pub fn sees(&self, doc: &Value) -> bool {
        self.project.as_deref().is_none_or(|p| doc.get("project").and_then(Value::as_str) == Some(p))
    }

    /// A record of another project is invisible to a scoped token: 404, as if absent.
    pub fn hidden(collection: &str, id: &str) -> ApiError {
        ApiError::not_found(format!("{collection}/{id} not found")).with("collection", collection).with("id", id)
    }

    /// A create this scope cannot make because another project's record has the id: 403, saying no more
    /// than that the id is taken (not the record's version, project or document). Ids are shared by all
    /// projects, so this is the one answer in which another project's record differs from an absent one.
    pub fn id_taken(&self, collection: &str, id: &str) -> ApiError {
        ApiError::forbidden(format!("{collection}/{id} cannot be created with token {}: the id is taken", self.name))
            .with("collection", collection)
            .with("id", id)
    }
}

/// The record a write replaces, as the precondition checks take it: its version, and whether the writing
/// scope sees it. A backend that can tell visibility without parsing the document (an unscoped token sees
/// everything) builds it directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replaced {
    /// The record's version.
    pub version: u64,
    /// Whether the writer's scope sees the record: another project's record counts as absent.
    pub visible: bool,
}

impl Replaced {
    /// The record `doc` at `version`, as `scope` sees it.
    pub fn of(scope: &Scope, doc: &Value, version: u64) -> Self {
        Self { version, visible: scope.sees(doc) }
    }

    /// The version a write checks its precondition against: `None` for an absent or unseen record.
    fn visible_version(current: Option<Self>) -> Option<u64> {
        current.filter(|c| c.visible).map(|c| c.version)
    }
}

/// The precondition of a write, from `If-Match` / `If-None-Match` or a transaction's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Neither header: create or replace.
    None,
    /// `If-None-Match: *`: create only.
    Absent,
    /// `If-Match: *`: replace only, any version.
    Exists,
    /// `If-Match: "<version>"`: replace only that version.
    Version(u64),
}

impl Precondition {
    /// Checks the precondition against the current record's version (`None` if absent): 412 if it fails.
    pub fn check(self, collection: &str, id: &str, current: Option<u64>) -> Result<(), ApiError> {
        let fail = |detail: String| Err(ApiError::precondition(collection, id, current, detail));
        match (self, current) {
            (Self::Absent, Some(v)) => fail(format!("{collection}/{id} already exists at version {v}")),
            (Self::Exists | Self::Version(_), None) => fail(format!("{collection}/{id} does not exist")),
            (Self::Version(want), Some(v)) if want != v => {
                fail(format!("{collection}/{id} is at version {v}, not {want}"))
            }
            _ => Ok(()),
        }
    }

    /// The checks of a put by `scope` over the current record, if any: the precondition against what the
    /// scope sees, then 403 if the id belongs to another project's record.
    pub fn check_put(
        self,
        scope: &Scope,
        collection: &str,
        id: &str,
        current: Option<Replaced>,
    ) -> Result<(), ApiError> {
        let visible = Replaced::visible_version(current);
        self.check(collection, id, visible)?;
        if current.is_some() && visible.is_none() {
            return Err(scope.id_taken(collection, id));
        }
        Ok(())
    }

    /// The checks of a delete over the current record: 404 unless it exists and the writer's scope sees
    /// it, then the precondition.
    pub fn check_delete(self, collection: &str, id: &str, current: Option<Replaced>) -> Result<(), ApiError> {
        match current {
            Some(c) if c.visible => self.check(collection, id, Some(c.version)),
            _ => Err(Scope::hidden(collection, id)),
        }
    }
}

/// What one operation of a transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Create or replace the record with `document`.
    Put,
    /// Delete the record (it must exist).
    Delete,
    /// Write nothing; only check the precondition.
    Check,
}

/// One operation of a transaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// What to do.
    pub op: OpKind,
    /// The collection.
    pub collection: String,
    /// The record's id.
    pub id: String,
    /// The document, for `put`.
    #[serde(default)]
    pub document: Option<Value>,
    /// The record must be at this version.
    #[serde(default)]
    pub if_match: Option<u64>,
    /// The record must not exist.
    #[serde(default)]
    pub if_none_match: bool,
}

impl Operation {
    /// The operation's precondition: 400 for a combination that makes no sense.
    pub fn precondition(&self) -> Result<Precondition, ApiError> {
        match (self.if_match, self.if_none_match, self.op) {
            (Some(_), true, _) => Err(self.invalid("give if_match or if_none_match, not both")),
            (Some(v), false, _) => Ok(Precondition::Version(v)),
            (None, true, OpKind::Delete) => Err(self.invalid("if_none_match makes no sense on delete")),
            (None, true, _) => Ok(Precondition::Absent),
            (None, false, OpKind::Check) => Err(self.invalid("check needs if_match or if_none_match")),
            (None, false, OpKind::Delete) => Ok(Precondition::Exists),
            (None, false, OpKind::Put) => Ok(Precondition::None),
        }
    }

    /// 400 naming the operation's record.
    pub fn invalid(&self, detail: &str) -> ApiError {
        ApiError::bad_request(format!("{}/{}: {detail}", self.collection, self.id))
            .with("collection", self.collection.as_str())
            .with("id", self.id.as_str())
    }

    /// The checks of this operation by `scope` over the current record, if any: the precondition against
    /// what the scope sees, and 403 for a put over another project's record.
    pub fn check(&self, scope: &Scope, current: Option<Replaced>) -> Result<(), ApiError> {
        let pre = self.precondition()?;
        match self.op {
            OpKind::Put => pre.check_put(scope, &self.collection, &self.id, current),
            OpKind::Delete | OpKind::Check => pre.check(&self.collection, &self.id, Replaced::visible_version(current)),
        }
    }
}

/// What one operation of a committed transaction left.
#[derive(Debug, Clone, PartialEq)]
pub enum OpResult {
    /// The record was deleted.
    Deleted,
    /// The record as the transaction left it (`None`: absent, or not visible in the scope).
    Record(Option<Stored<Value>>),
}

/// A committed transaction: its commit sequence and one result per operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The commit sequence of the transaction's writes.
    pub seq: u64,
    /// One result per operation, in order.
    pub results: Vec<OpResult>,
}

/// A collection as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    /// The name.
    pub name: String,
    /// The declared indexes.
    pub indexes: Vec<IndexSpec>,
    /// Its records (a scoped listing counts those of the scope's project).
    pub count: u64,
}

/// A backend's figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Calls shed with 503 because `max_concurrency` were running.
    pub shed: u64,
    /// The newest commit sequence.
    pub last_sequence: u64,
    /// The embedded engine's counters (the PostgreSQL backend has none).
    pub engine: Option<cairn_store::engine::Stats>,
    /// The change feed's.
    pub feed: Option<FeedStats>,
    /// The blob store's, when the server has an artifact store (filled by the server, not the backend).
    pub blobs: Option<cairn_store::artifacts::BlobHealth>,
    /// Every job queue's counts by state (filled by the server, not the backend; `None` when it could not
    /// read them).
    pub queues: Option<Vec<(String, cairn_store::queue::QueueCounts)>>,
}

/// Where records live. Each method is one request's work; errors are the problem documents the request
/// answers with. Implementations bound their own concurrency (`max_concurrency`) and answer 503 with
/// `Retry-After` past it.
pub trait Backend: Send + Sync + 'static {
    /// `embedded` or `postgres`.
    fn kind(&self) -> &'static str;

    /// The newest commit sequence this server knows of (cheap; no I/O).
    fn last_sequence(&self) -> u64;

    /// Changes whenever a commit (this server's, or another server's on a shared database) may have
    /// appended to the change feed; its value is the newest sequence known.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Every collection with its indexes and record count (of `scope`'s project, if scoped).
    fn collections(&self, scope: Scope) -> BackendFuture<'_, Vec<CollectionInfo>>;

    /// Declares a collection, or replaces an existing one's indexes (built without blocking writers);
    /// `true` when it is new.
    fn declare(&self, spec: CollectionSpec) -> BackendFuture<'_, bool>;

    /// One record: 404 if absent or not visible in `scope`.
    fn get(&self, scope: Scope, collection: String, id: String) -> BackendFuture<'_, Stored<Value>>;

    /// As [`get`](Self::get), with the document as JSON text, for answers that pass it on as it is. By
    /// default the document [`get`](Self::get) reads, serialized.
    fn get_raw(&self, scope: Scope, collection: String, id: String) -> BackendFuture<'_, Stored<Box<RawValue>>> {
        let get = self.get(scope, collection, id);
        Box::pin(async move {
            let s = get.await?;
            let doc = serde_json::value::to_raw_value(&s.doc)
                .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
            Ok(Stored {
                id: s.id,
                version: s.version,
                seq: s.seq,
                created_at_ms: s.created_at_ms,
                updated_at_ms: s.updated_at_ms,
                doc,
            })
        })
    }

    /// Creates or replaces a record under `pre`; the record written and whether it was created.
    fn put(
        &self,
        scope: Scope,
        collection: String,
        id: String,
        doc: Value,
        pre: Precondition,
    ) -> BackendFuture<'_, (Stored<Value>, bool)>;

    /// Deletes a record under `pre` (404 if absent or not visible).
    fn delete(&self, scope: Scope, collection: String, id: String, pre: Precondition) -> BackendFuture<'_, ()>;

    /// One page of a query (its equalities include the scope's project when scoped).
    fn query(&self, collection: String, query: Query) -> BackendFuture<'_, Page<Value>>;

    /// How many records match the equalities of `query` (its order, limit and cursor do not count; its
    /// equalities include the scope's project when scoped).
    fn count(&self, collection: String, query: Query) -> BackendFuture<'_, u64>;

    /// Takes the first record matching one of `queries` (tried in order) that `scope` sees and sets the
    /// fields of `set` on it ([`set_path`]), atomically: concurrent claims never take the same record.
    fn claim(
        &self,
        scope: Scope,
        collection: String,
        queries: Vec<Query>,
        set: Map<String, Value>,
    ) -> BackendFuture<'_, Option<Stored<Value>>>;

    /// Applies `ops` all or nothing, checking each operation's precondition ([`Operation::check`]).
    fn transaction(&self, scope: Scope, ops: Vec<Operation>) -> BackendFuture<'_, Committed>;

    /// Up to `limit` changes after sequence `since`, in commit order (410 if trimmed past `since`).
    fn changes_since(&self, since: u64, limit: usize) -> BackendFuture<'_, Vec<Change>>;

    /// The figures of `GET /v1/stats`.
    fn stats(&self) -> BackendFuture<'_, Value>;

    /// The figures `/metrics` adds to the server's own.
    fn figures(&self) -> BackendFuture<'_, Figures>;

    /// `POST /v1/admin/backup`: a consistent copy in `to`, optionally checked.
    fn backup(&self, to: std::path::PathBuf, check: bool) -> BackendFuture<'_, Value>;

    /// `POST /v1/admin/check`: the checks of `cairn check` on the live data.
    fn check(&self) -> BackendFuture<'_, Value>;

    /// The job queue of this backend, opened on first use (blocking: called on the blocking pool). 501 on a
    /// backend without one.
    fn queue(&self) -> Result<QueueStore, ApiError> {
        Err(ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "not-supported",
            format!("the {} backend has no job queue", self.kind()),
        ))
    }

    /// The run metrics of this backend. 501 on a backend without them.
    fn run_metrics(&self) -> Result<RunMetricsStore, ApiError> {
        Err(ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "not-supported",
            format!("the {} backend has no run metrics", self.kind()),
        ))
    }

    /// Flushes and closes, at shutdown (blocking; called off the async threads).
    fn close(&self) -> Result<(), String>;
}

/// Any other failure of a backend as a 500.
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// The `max_concurrency` permits of a backend's calls. A call holds its permit until its work ends, also
/// when the request that made it timed out and was answered, so the work left behind by timed-out
/// requests is bounded and new calls are shed while it runs.
#[derive(Debug)]
pub struct Permits {
    semaphore: Arc<Semaphore>,
    shed: AtomicU64,
}

impl Permits {
    /// `n` permits.
    pub fn new(n: usize) -> Self {
        Self { semaphore: Arc::new(Semaphore::new(n)), shed: AtomicU64::new(0) }
    }

    /// A permit, or 503 with `Retry-After: 1` at once if every permit is taken.
    pub fn take(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.semaphore.clone().try_acquire_owned().map_err(|_| {
            self.shed.fetch_add(1, Ordering::Relaxed);
            ApiError::unavailable(
                "the backend is running max_concurrency tasks (timed-out requests' included); retry shortly",
                1,
            )
        })
    }

    /// Calls shed so far.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

/// Sets `path` (dot-separated) in `doc` to `value`, creating objects on the way; `false` if a non-object
/// is in the way.
pub fn set_path(doc: &mut Value, path: &str, value: Value) -> bool {
    let mut parts = path.split('.').peekable();
    let mut cur = doc;
    while let Some(part) = parts.next() {
        let Some(obj) = cur.as_object_mut() else { return false };
        if parts.peek().is_none() {
            obj.insert(part.to_owned(), value);
            return true;
        }
        cur = obj.entry(part.to_owned()).or_insert_with(|| Value::Object(Map::new()));
    }
    false
}

/// A claim's edit of a candidate `doc`: `Ok(true)` if `scope` sees it and every field of `set` was set,
/// `Ok(false)` if the scope does not see it, 400 if a non-object is in the way of a path.
pub fn apply_claim(scope: &Scope, doc: &mut Value, set: &Map<String, Value>) -> Result<bool, ApiError> {
    if !scope.sees(doc) {
        return Ok(false);
    }
    for (path, value) in set {
        if !set_path(doc, path, value.clone()) {
            return Err(ApiError::bad_request(format!("cannot set {path}: a non-object is in the way")));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_path_creates_objects_and_refuses_non_objects() {
        let mut doc = json!({"a": 1, "r": {"gpus": 1}});
        assert!(set_path(&mut doc, "status", json!("RUNNING")));
        assert!(set_path(&mut doc, "r.gpus", json!(4)));
        assert!(set_path(&mut doc, "x.y.z", json!(true)));
        assert_eq!(doc, json!({"a": 1, "r": {"gpus": 4}, "status": "RUNNING", "x": {"y": {"z": true}}}));
        assert!(!set_path(&mut doc, "a.b", json!(1)));
    }

    #[test]
    fn preconditions_check_versions_and_scopes() {
        let check = |p: Precondition, cur| p.check("c", "i", cur).map_err(|e| e.status.as_u16());
        assert_eq!(check(Precondition::Absent, None), Ok(()));
        assert_eq!(check(Precondition::Absent, Some(1)), Err(412));
        assert_eq!(check(Precondition::Version(2), Some(2)), Ok(()));
        assert_eq!(check(Precondition::Version(2), Some(3)), Err(412));
        assert_eq!(check(Precondition::Exists, None), Err(412));
        assert_eq!(check(Precondition::None, None), Ok(()));
        let p1 = Scope { name: "t".into(), project: Some("p1".into()) };
        let other = json!({"project": "p2"});
        let theirs = Some(Replaced::of(&p1, &other, 3));
        let put = |pre: Precondition| pre.check_put(&p1, "c", "i", theirs).map_err(|e| e.status.as_u16());
        assert_eq!(put(Precondition::None), Err(403), "a create over another project's id");
        assert_eq!(put(Precondition::Version(3)), Err(412), "another project's record counts as absent");
        let del = Precondition::Exists.check_delete("c", "i", theirs);
        assert_eq!(del.unwrap_err().status.as_u16(), 404);
        let mine = Some(Replaced::of(&p1, &json!({"project": "p1"}), 3));
        assert!(Precondition::Version(3).check_delete("c", "i", mine).is_ok());
    }

    #[test]
    fn claims_set_fields_in_scope_only() {
        let p1 = Scope { name: "t".into(), project: Some("p1".into()) };
        let set: Map<String, Value> = serde_json::from_value(json!({"status": "RUNNING"})).unwrap();
        let mut other = json!({"project": "p2"});
        assert!(!apply_claim(&p1, &mut other, &set).unwrap());
        let mut mine = json!({"project": "p1", "x": 1});
        assert!(apply_claim(&p1, &mut mine, &set).unwrap());
        assert_eq!(mine["status"], "RUNNING");
        let bad: Map<String, Value> = serde_json::from_value(json!({"x.y": 1})).unwrap();
        assert_eq!(apply_claim(&p1, &mut mine, &bad).unwrap_err().status.as_u16(), 400);
    }
}
