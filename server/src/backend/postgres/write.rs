//! The write path: every write is one PostgreSQL transaction that locks the records it reads (an advisory
//! lock on the id, so that concurrent creates of one id queue, then `SELECT ... FOR UPDATE`), checks the
//! preconditions with the shared helpers, and ends with one statement that takes the next commit sequence
//! from the counter row of `cairn_meta`, writes the records and the change events stamped with it, and
//! notifies the other servers. The counter's row lock is held from that statement to `COMMIT`, so commits
//! become visible in sequence order and the feed has no gaps.

use std::collections::HashMap;

use cairn_store::{ChangeOp, CollectionError, Stored};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, Transaction};

use super::pool::Statements;
use super::query::{refs, stored, Param, RECORD_COLUMNS};
use super::schema::{fnv, Names, CHANGES, META};
use super::{db_error, Inner};
use crate::backend::{OpKind, OpResult, Operation, Precondition, Replaced, Scope};
use crate::problem::ApiError;

/// Attempts of a write whose transaction PostgreSQL aborted for a deadlock, a serialization failure or a
/// concurrent create of the same id. The preconditions are checked again on every attempt.
pub(crate) const ATTEMPTS: usize = 16;

/// Why a write attempt failed.
pub(crate) enum Fail {
    /// The answer.
    Api(ApiError),
    /// A race with another transaction: try again.
    Retry,
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        Fail::Api(e)
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        let retry = [SqlState::T_R_SERIALIZATION_FAILURE, SqlState::T_R_DEADLOCK_DETECTED, SqlState::UNIQUE_VIOLATION];
        match e.code() {
            Some(code) if retry.contains(code) => Fail::Retry,
            _ => Fail::Api(db_error(e)),
        }
    }
}

/// A record as a transaction found it in the table.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    /// The record.
    pub stored: Stored<Value>,
}

/// One record's write staged by a transaction, as the embedded store stages it: one per record, in the
/// order first written, holding the record's state before the transaction and after.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    collection: String,
    id: String,
    before: Option<Current>,
    after: Option<Value>,
    version: u64,
    op: ChangeOp,
}

impl Staged {
    /// A write of `after` (`None`: a delete) over `before`, as one operation of the embedded store stages
    /// it: version `before`'s + 1, or 1.
    pub(crate) fn update(collection: &str, id: &str, before: Option<Stored<Value>>, after: Option<Value>) -> Self {
        let version = before.as_ref().map_or(1, |b| b.version + 1);
        let op = match (&before, &after) {
            (None, _) => ChangeOp::Insert,
            (Some(_), Some(_)) => ChangeOp::Update,
            (Some(_), None) => ChangeOp::Delete,
        };
        Self {
            collection: collection.to_owned(),
            id: id.to_owned(),
            before: before.map(|stored| Current { stored }),
            after,
            version,
            op,
        }
    }
}

/// A write the HTTP routes make: a put or delete with its precondition, or a transaction's operation.
pub(crate) enum Step {
    /// `PUT` of a record.
    Put { collection: String, id: String, doc: Value, pre: Precondition },
    /// `DELETE` of a record.
    Delete { collection: String, id: String, pre: Precondition },
    /// An operation of a transaction.
    Op(Operation),
}

impl Step {
    fn collection(&self) -> &str {
        match self {
            Step::Put { collection, .. } | Step::Delete { collection, .. } => collection,
            Step::Op(op) => &op.collection,
        }
    }

    fn id(&self) -> &str {
        match self {
            Step::Put { id, .. } | Step::Delete { id, .. } => id,
            Step::Op(op) => &op.id,
        }
    }

    fn kind(&self) -> OpKind {
        match self {
            Step::Put { .. } => OpKind::Put,
            Step::Delete { .. } => OpKind::Delete,
            Step::Op(op) => op.op,
        }
    }

    fn doc(&self) -> Option<Value> {
        match self {
            Step::Put { doc, .. } => Some(doc.clone()),
            Step::Delete { .. } => None,
            Step::Op(op) => Some(op.document.clone().unwrap_or_default()),
        }
    }

    fn check(&self, scope: &Scope, current: Option<Replaced>) -> Result<(), ApiError> {
        match self {
            Step::Put { collection, id, pre, .. } => pre.check_put(scope, collection, id, current),
            Step::Delete { collection, id, pre } => pre.check_delete(collection, id, current),
            Step::Op(op) => op.check(scope, current),
        }
    }
}

/// What a committed write left.
pub(crate) struct Written {
    /// The commit sequence (0 when nothing was written).
    pub seq: u64,
    /// One result per step.
    pub results: Vec<OpResult>,
    /// Whether the first step created its record.
    pub created: bool,
}

/// The advisory lock of one record id: concurrent transactions touching the id (creates included, which
/// no row lock can order) queue on it.
fn record_lock(names: &Names, collection: &str, id: &str) -> i64 {
    fnv(&[names.schema.as_bytes(), collection.as_bytes(), id.as_bytes()]) as i64
}

/// Locks a record (present or not) for the transaction and reads it.
pub(crate) async fn lock_current(
    tx: &Transaction<'_>,
    statements: &mut Statements,
    names: &Names,
    collection: &str,
    id: &str,
) -> Result<Option<Current>, Fail> {
    let key = record_lock(names, collection, id);
    // One statement: the lock is a one-time filter, taken before the row is read, whether it exists or not.
    let sql = format!(
        "WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock($2) AS locked)
         SELECT {RECORD_COLUMNS} FROM {} WHERE id = $1 AND EXISTS (SELECT 1 FROM l) FOR UPDATE",
        names.table(collection)
    );
    let read = statements.get(tx, &sql).await?;
    let row = tx.query_opt(&read, &[&id, &key]).await?;
    Ok(row.map(|r| stored(&r)).transpose()?.map(|stored| Current { stored }))
}

fn ms_sql(n: usize) -> String {
    format!("('epoch'::timestamptz + ${n}::int8 * interval '1 millisecond')")
}

/// Commits the staged writes' statement: the next sequence from the counter, the rows, the change events
/// and the notification, in one statement (the last before `COMMIT`). Returns the sequence.
pub(crate) async fn stamp(
    client: &impl GenericClient,
    statements: &mut Statements,
    names: &Names,
    staged: &[Staged],
    at_ms: i64,
) -> Result<u64, tokio_postgres::Error> {
    let mut params: Vec<Param> = vec![Box::new(at_ms)];
    let at = ms_sql(1);
    let mut ctes = vec![format!(
        "s AS (UPDATE {} SET value = value + 1 WHERE name = 'seq' RETURNING value AS seq)",
        names.table(META)
    )];
    let (mut idx, mut colls, mut ids, mut ops, mut versions, mut docs, mut prevs, mut bytes) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (i, s) in staged.iter().enumerate() {
        let t = names.table(&s.collection);
        let n = params.len();
        let version = s.version as i64;
        match (&s.before, &s.after) {
            (None, Some(doc)) => {
                params.push(Box::new(s.id.clone()));
                params.push(Box::new(version));
                params.push(Box::new(doc.clone()));
                ctes.push(format!(
                    "w{i} AS (INSERT INTO {t} (id, version, seq, doc, created_at, updated_at) \
                     SELECT ${}, ${}, s.seq, ${}::jsonb, {at}, {at} FROM s)",
                    n + 1,
                    n + 2,
                    n + 3
                ));
            }
            (Some(before), Some(doc)) => {
                params.push(Box::new(s.id.clone()));
                params.push(Box::new(version));
                params.push(Box::new(doc.clone()));
                params.push(Box::new(before.stored.created_at_ms));
                ctes.push(format!(
                    "w{i} AS (UPDATE {t} AS t SET version = ${}, seq = s.seq, doc = ${}::jsonb, created_at = {}, \
                     updated_at = {at} FROM s WHERE t.id = ${})",
                    n + 2,
                    n + 3,
                    ms_sql(n + 4),
                    n + 1
                ));
            }
            _ => {
                params.push(Box::new(s.id.clone()));
                ctes.push(format!("w{i} AS (DELETE FROM {t} WHERE id = ${})", n + 1));
            }
        }
        let doc_len = s.after.as_ref().map_or(0, |d| serde_json::to_vec(d).map_or(0, |v| v.len()));
        idx.push(i as i32);
        colls.push(s.collection.clone());
        ids.push(s.id.clone());
        ops.push(op_name(s.op).to_owned());
        versions.push(version);
        docs.push(s.after.clone());
        prevs.push(s.before.as_ref().and_then(|b| b.stored.doc.get("project").cloned()));
        bytes.push((64 + s.collection.len() + s.id.len() + doc_len) as i64);
    }
    let n = params.len();
    params.push(Box::new(idx));
    params.push(Box::new(colls));
    params.push(Box::new(ids));
    params.push(Box::new(ops));
    params.push(Box::new(versions));
    params.push(Box::new(docs));
    params.push(Box::new(prevs));
    params.push(Box::new(bytes));
    params.push(Box::new(names.feed_channel()));
    ctes.push(format!(
        "ev AS (INSERT INTO {} (seq, idx, collection, id, op, version, at_ms, doc, prev_project, bytes) \
         SELECT s.seq, e.idx, e.collection, e.id, e.op, e.version, $1, e.doc, e.prev, e.bytes FROM s, \
         unnest(${}::int4[], ${}::text[], ${}::text[], ${}::text[], ${}::int8[], ${}::jsonb[], ${}::jsonb[], ${}::int8[]) \
         AS e(idx, collection, id, op, version, doc, prev, bytes))",
        names.table(CHANGES),
        n + 1,
        n + 2,
        n + 3,
        n + 4,
        n + 5,
        n + 6,
        n + 7,
        n + 8
    ));
    let sql = format!("WITH {} SELECT s.seq, pg_notify(${}, s.seq::text) FROM s", ctes.join(", "), n + 9);
    let st = statements.get(client, &sql).await?;
    let row = client.query_one(&st, &refs(&params)).await?;
    let seq: i64 = row.try_get(0)?;
    Ok(seq.max(0) as u64)
}

/// The feed's name of an operation.
pub(crate) fn op_name(op: ChangeOp) -> &'static str {
    match op {
        ChangeOp::Insert => "insert",
        ChangeOp::Update => "update",
        ChangeOp::Delete => "delete",
    }
}

/// The time now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A transaction's view of the records it touched: as read (locked) and as staged.
#[derive(Default)]
struct Overlay {
    read: HashMap<(String, String), Option<Current>>,
    staged: Vec<Staged>,
}

impl Overlay {
    fn staged(&self, collection: &str, id: &str) -> Option<&Staged> {
        self.staged.iter().find(|s| s.collection == collection && s.id == id)
    }

    /// The record as the transaction sees it now: document, version and creation time (0 if new).
    fn current(&self, collection: &str, id: &str) -> Option<(Value, u64, i64)> {
        match self.staged(collection, id) {
            Some(s) => s.after.clone().map(|d| (d, s.version, s.before.as_ref().map_or(0, |b| b.stored.created_at_ms))),
            None => self
                .read
                .get(&(collection.to_owned(), id.to_owned()))
                .cloned()
                .flatten()
                .map(|c| (c.stored.doc, c.stored.version, c.stored.created_at_ms)),
        }
    }

    /// Stages `after` at `version`, as the embedded store's `stage` does.
    fn stage(&mut self, collection: &str, id: &str, after: Option<Value>, version: u64) {
        let pos = match self.staged.iter().position(|s| s.collection == collection && s.id == id) {
            Some(p) => p,
            None => {
                let before = self.read.get(&(collection.to_owned(), id.to_owned())).cloned().flatten();
                self.staged.push(Staged {
                    collection: collection.to_owned(),
                    id: id.to_owned(),
                    before,
                    after: None,
                    version: 0,
                    op: ChangeOp::Delete,
                });
                self.staged.len() - 1
            }
        };
        let Some(s) = self.staged.get_mut(pos) else { return };
        s.version = match &s.before {
            Some(b) if after.is_some() => version.max(b.stored.version + 1),
            _ => version,
        };
        s.after = after;
        s.op = match (&s.before, &s.after) {
            (None, Some(_)) => ChangeOp::Insert,
            (Some(_), Some(_)) => ChangeOp::Update,
            (Some(_), None) => ChangeOp::Delete,
            (None, None) => {
                self.staged.remove(pos);
                return;
            }
        };
    }
}

impl Inner {
    /// Runs `steps` as one transaction by `scope`, retried on races: all applied or none.
    pub(crate) async fn write(&self, scope: &Scope, steps: &[Step]) -> Result<Written, ApiError> {
        for step in steps {
            self.spec(step.collection()).await?;
            super::schema::validate_id(step.id())?;
            if step.kind() == OpKind::Put && !step.doc().is_some_and(|d| d.is_object()) {
                return Err(ApiError::from(CollectionError::Invalid(format!(
                    "{}/{}: a document must be a JSON object",
                    step.collection(),
                    step.id()
                ))));
            }
        }
        for _ in 0..ATTEMPTS {
            match self.write_once(scope, steps).await {
                Ok(w) => return Ok(w),
                Err(Fail::Api(e)) => return Err(e),
                Err(Fail::Retry) => continue,
            }
        }
        let (collection, id) =
            steps.first().map_or((String::new(), String::new()), |s| (s.collection().to_owned(), s.id().to_owned()));
        Err(ApiError::from(CollectionError::TxnConflict { collection, id }))
    }

    async fn write_once(&self, scope: &Scope, steps: &[Step]) -> Result<Written, Fail> {
        let mut pooled = self.pool.get().await?;
        let (client, statements) = pooled.split();
        let tx = client.transaction().await?;
        let mut overlay = Overlay::default();
        let mut created = false;
        for (i, step) in steps.iter().enumerate() {
            let key = (step.collection().to_owned(), step.id().to_owned());
            if overlay.staged(&key.0, &key.1).is_none() && !overlay.read.contains_key(&key) {
                let cur = lock_current(&tx, statements, &self.names, &key.0, &key.1).await?;
                overlay.read.insert(key.clone(), cur);
            }
            let cur = overlay.current(&key.0, &key.1);
            if i == 0 {
                created = cur.is_none();
            }
            step.check(scope, cur.as_ref().map(|(d, v, _)| Replaced::of(scope, d, *v)))?;
            match step.kind() {
                OpKind::Put => {
                    let version = cur.as_ref().map_or(1, |c| c.1 + 1);
                    overlay.stage(&key.0, &key.1, step.doc(), version);
                }
                OpKind::Delete => {
                    let Some((_, v, _)) = cur else { return Err(Scope::hidden(&key.0, &key.1).into()) };
                    overlay.stage(&key.0, &key.1, None, v + 1);
                }
                OpKind::Check => {}
            }
        }
        let at_ms = now_ms();
        let seq = if overlay.staged.is_empty() {
            0
        } else {
            stamp(&tx, statements, &self.names, &overlay.staged, at_ms).await?
        };
        // Each record as the transaction left it.
        let results = steps
            .iter()
            .map(|step| {
                let (c, id) = (step.collection(), step.id());
                match step.kind() {
                    OpKind::Delete => OpResult::Deleted,
                    kind => {
                        let record = if overlay.staged(c, id).is_some() {
                            // Written by this transaction: a put's record carries the commit's sequence and
                            // time; a check's, as the embedded store's transaction reads a staged record,
                            // none.
                            overlay.current(c, id).filter(|(d, _, _)| scope.sees(d)).map(|(doc, version, created)| {
                                let put = kind == OpKind::Put;
                                Stored {
                                    id: id.to_owned(),
                                    version,
                                    seq: if put { seq } else { 0 },
                                    created_at_ms: if put && created == 0 { at_ms } else { created },
                                    updated_at_ms: if put { at_ms } else { 0 },
                                    doc,
                                }
                            })
                        } else {
                            let read = overlay.read.get(&(c.to_owned(), id.to_owned())).cloned().flatten();
                            read.map(|cur| cur.stored).filter(|s| scope.sees(&s.doc))
                        };
                        OpResult::Record(record)
                    }
                }
            })
            .collect();
        tx.commit().await?;
        if seq > 0 {
            self.note_sequence(seq);
        }
        Ok(Written { seq, results, created })
    }
}
