//! Transactions: reads at a snapshot, buffered writes, and one conditional commit that checks every record
//! read or written is unchanged since the snapshot. Every collection write goes through here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use cairn_engine::Snapshot;
use cairn_engine::WriteError as CommitError;
use cairn_engine::WriteOptions;
use cairn_engine::{Condition, WriteBatch};

use crate::catalog::Declared;
use crate::changes::{encode_event, ChangeOp};
use crate::clock::now_ms;
use crate::envelope::stored;
use crate::envelope::{self, Envelope};
use crate::error::{StoreError, WriteError};
use crate::fields;
use crate::keys;
use crate::record::{from_doc, CollectionSpec, Record, Stored};
use crate::store::Store;
use crate::validate::validate_id;

/// A write staged in a transaction: the record's state at the snapshot and after the transaction.
struct Staged {
    spec: Arc<Declared>,
    id: String,
    before: Option<Before>,
    after: Option<After>,
    version: u64,
    op: ChangeOp,
}

/// What a staged write needs of the record as of the snapshot.
struct Before {
    version: u64,
    created_ms: i64,
    /// One key per index commits maintain, in the catalog's order.
    index_keys: Vec<Vec<u8>>,
    /// The document's top-level `project`, carried by the change event.
    project: Option<Value>,
}

/// A staged document: serialized, and indexed, before it is staged.
pub(crate) struct After {
    json: Vec<u8>,
    /// One key per index commits maintain, in the catalog's order.
    index_keys: Vec<Vec<u8>>,
}

impl After {
    /// A JSON document; `Invalid` unless it is an object.
    pub(crate) fn of_value(spec: &Declared, doc: &Value, id: &str) -> Result<Self, WriteError> {
        if !doc.is_object() {
            return Err(WriteError::Invalid("a document must be a JSON object".into()));
        }
        // Serializing a `Value` cannot fail.
        Ok(After { json: serde_json::to_vec(doc).unwrap_or_default(), index_keys: index_keys(spec, doc, id) })
    }

    /// A typed record, serialized straight to JSON text, its indexed fields captured on the side (or read
    /// from the text, for records that are not plain structs or maps), without building a JSON tree of it.
    pub(crate) fn of_record<T: Record>(spec: &Declared, record: &T, id: &str) -> Result<Self, WriteError> {
        let json = serde_json::to_vec(record).map_err(|e| WriteError::Invalid(format!("{}: {e}", spec.name())))?;
        let paths = index_paths(spec, None);
        let values = match fields::capture_paths(record, &paths) {
            Some(values) => values,
            None => fields::read_paths(&json, &paths)
                .map_err(|_| WriteError::Invalid(format!("{} records must serialize to JSON objects", spec.name())))?,
        };
        Ok(After { index_keys: index_keys_at(spec, &paths, &values, id), json })
    }
}

impl Before {
    /// The record `current` (its document as stored text, under `key`), read by a single-record write:
    /// its indexed fields and `project` are read from the text, without building a JSON tree of it.
    fn of_stored(spec: &Declared, key: &[u8], current: &Stored<Vec<u8>>) -> Result<Self, StoreError> {
        let paths = index_paths(spec, Some("project"));
        let values = fields::read_paths(&current.doc, &paths)
            .map_err(|e| StoreError::undecodable(key, format!("document: {e}")))?;
        let project = paths.iter().position(|p| *p == "project").and_then(|i| values.get(i)?.clone());
        Ok(Before {
            version: current.version,
            created_ms: current.created_at_ms,
            index_keys: index_keys_at(spec, &paths, &values, &current.id),
            project,
        })
    }
}

/// The document paths `spec`'s indexes read, and `extra`, each once, in the order of their first use.
fn index_paths<'s>(spec: &'s Declared, extra: Option<&'s str>) -> Vec<&'s str> {
    let mut paths: Vec<&str> = Vec::new();
    let index_paths = spec.indexes.iter().flat_map(|i| &i.spec.fields).map(|f| keys::index_field(f).0);
    for path in index_paths.chain(extra) {
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    paths
}

/// The index keys of a document whose value at each of `paths` is in `values`, for every index commits
/// maintain, in the catalog's order.
fn index_keys_at(spec: &Declared, paths: &[&str], values: &[Option<Value>], id: &str) -> Vec<Vec<u8>> {
    let value_at = |path: &str| paths.iter().position(|p| *p == path).and_then(|i| values.get(i)?.as_ref());
    spec.indexes.iter().map(|i| keys::index_key_with(spec.name(), &i.key, &i.spec.fields, value_at, id)).collect()
}

/// What a write requires of the record's current version.
enum Expect {
    /// No record (an insert).
    Absent,
    /// Any version, or none (an upsert).
    Any,
    /// Exactly this version (an update).
    Version(u64),
}

/// A record as a transaction sees it.
enum Current {
    Absent,
    /// Written by the transaction, at this version.
    Staged(u64),
    /// As of the snapshot.
    Stored(Arc<Envelope>),
}

impl Current {
    fn version(&self) -> Option<u64> {
        match self {
            Current::Absent => None,
            Current::Staged(v) => Some(*v),
            Current::Stored(e) => Some(e.version),
        }
    }
}

/// The index keys of `doc` for every index commits maintain, in the catalog's order.
fn index_keys(spec: &Declared, doc: &Value, id: &str) -> Vec<Vec<u8>> {
    spec.indexes.iter().map(|i| keys::index_key(spec.name(), &i.key, &i.spec.fields, doc, id)).collect()
}

/// An optimistic transaction over any number of collections. Reads see the snapshot taken at its start
/// plus the transaction's own writes; the commit applies every write atomically, or none if a record it
/// read or wrote was changed by another commit meanwhile ([`WriteError::TxnConflict`]).
pub struct Transaction<'s> {
    store: &'s Store,
    snap: Snapshot,
    reads: HashSet<Vec<u8>>,
    /// Records as of the snapshot, read once.
    seen: HashMap<Vec<u8>, Option<Arc<Envelope>>>,
    staged: HashMap<Vec<u8>, Staged>,
    order: Vec<Vec<u8>>,
    /// Entries keyed by the commit's sequence under a prefix (`WriteBatch::put_commit_keyed`) that the
    /// commit writes beside the records: the artifact store's bucket statistics.
    keyed: Vec<(Vec<u8>, Vec<u8>)>,
    /// Run once the commit succeeded, in the order added: the job queue wakes its waiting claims there.
    after_commit: Vec<Box<dyn FnOnce() + Send + Sync>>,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("snapshot", &self.snap.sequence())
            .field("writes", &self.order.len())
            .finish()
    }
}

impl Store {
    /// Starts a transaction at a snapshot of now; [`Transaction::commit`] applies it, dropping it discards
    /// it.
    pub fn begin(&self) -> Transaction<'_> {
        Transaction::new(self)
    }

    /// Runs `f` in a transaction and commits it if `f` returns `Ok`; on `Err` nothing is written.
    pub fn transaction<R>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, WriteError>,
    ) -> Result<R, WriteError> {
        let mut tx = Transaction::new(self);
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Like [`Store::transaction`], retrying up to `attempts` times while the commit hits a
    /// [`WriteError::TxnConflict`]. `f` must be safe to run again.
    pub fn transaction_with_retry<R>(
        &self,
        attempts: usize,
        f: impl FnMut(&mut Transaction<'_>) -> Result<R, WriteError>,
    ) -> Result<R, WriteError> {
        self.commit_with_retry(attempts, f).map(|(out, _)| out)
    }

    /// [`Store::transaction_with_retry`], also returning what the commit was (its sequence and time), with
    /// `f` free to fail with an error type of its own. An error of `f` ends the attempts at once, and nothing
    /// is written.
    pub fn commit_with_retry<R, E: From<WriteError>>(
        &self,
        attempts: usize,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<(R, Committed), E> {
        let mut last = None;
        for _ in 0..attempts.max(1) {
            let mut tx = Transaction::new(self);
            let out = f(&mut tx)?;
            match tx.commit() {
                Ok(c) => return Ok((out, c)),
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.unwrap_or_else(|| WriteError::Invalid("no attempt made".into())).into())
    }
}

/// What a committed transaction wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Commit sequence number (0 if the transaction wrote nothing).
    pub seq: u64,
    /// The commit time, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

impl<'s> Transaction<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Self {
            store,
            snap: store.db().snapshot(),
            reads: HashSet::new(),
            seen: HashMap::new(),
            staged: HashMap::new(),
            order: Vec::new(),
            keyed: Vec::new(),
            after_commit: Vec::new(),
        }
    }

    fn at_snapshot(&mut self, key: &[u8]) -> Result<Option<Arc<Envelope>>, WriteError> {
        if let Some(e) = self.seen.get(key) {
            return Ok(e.clone());
        }
        let e = self.store.read_envelope(key, Some(&self.snap))?.map(Arc::new);
        self.seen.insert(key.to_vec(), e.clone());
        Ok(e)
    }

    /// Adds an entry keyed by the commit's sequence under `prefix` to the commit, written only if the
    /// transaction writes records too.
    pub(crate) fn put_commit_keyed(&mut self, prefix: Vec<u8>, value: Vec<u8>) {
        self.keyed.push((prefix, value));
    }

    /// Adds `hook`, run once the transaction commits (never if it fails or is dropped).
    pub(crate) fn after_commit(&mut self, hook: Box<dyn FnOnce() + Send + Sync>) {
        self.after_commit.push(hook);
    }

    /// The snapshot's sequence number.
    pub fn snapshot_sequence(&self) -> u64 {
        self.snap.sequence()
    }

    /// The record as of the snapshot, for a single-record write that decides from it what to stage, its
    /// document left as the JSON text it is stored as (parsed only by writers that look into it): read
    /// without being kept, so that it can be handed out and then given back with
    /// [`Transaction::stage_write`]. Marks it read.
    pub(crate) fn read_for_write(&mut self, spec: &Declared, id: &str) -> Result<Option<Stored<Vec<u8>>>, WriteError> {
        let key = keys::record_key(spec.name(), id);
        let read = match self.snap.get(&key).map_err(StoreError::from)? {
            Some(mut bytes) => {
                let e = envelope::decode_raw(&key, &bytes)?.map(<[u8]>::len);
                bytes.drain(..bytes.len() - e.doc);
                Some(stored(id, e.map(|_| bytes)))
            }
            None => None,
        };
        self.reads.insert(key);
        Ok(read)
    }

    /// Takes back the mark [`Transaction::read_for_write`] left on the record at `key`, for a write that
    /// staged nothing: its commit does not then depend on that record.
    pub(crate) fn unread(&mut self, key: &[u8]) {
        self.reads.remove(key);
    }

    /// Stages the write a single-record write decided on, `current` being the record
    /// [`Transaction::read_for_write`] returned: `after` (a new version of it), or its deletion (`NotFound` if
    /// it is absent). Returns the version staged.
    pub(crate) fn stage_write(
        &mut self,
        spec: Arc<Declared>,
        id: &str,
        current: Option<Stored<Vec<u8>>>,
        after: Option<After>,
    ) -> Result<u64, WriteError> {
        let key = keys::record_key(spec.name(), id);
        let version = current.as_ref().map(|c| c.version);
        // Checked before anything is staged: a refused write leaves the transaction as it was.
        let version = match after {
            Some(_) => version.map_or(1, |v| v + 1),
            None => expect_version(&spec.spec, id, version, None)? + 1,
        };
        if !self.staged.contains_key(&key) {
            let before = current.map(|c| Before::of_stored(&spec, &key, &c)).transpose()?;
            self.begin_staging(spec.clone(), id, key, before);
        }
        self.stage(spec, id, after, version)
    }

    /// The record's state seen by this transaction (its own writes, else the snapshot); marks it read.
    fn current(&mut self, spec: &Declared, id: &str) -> Result<Current, WriteError> {
        let key = keys::record_key(spec.name(), id);
        if let Some(s) = self.staged.get(&key) {
            return Ok(if s.after.is_some() { Current::Staged(s.version) } else { Current::Absent });
        }
        self.reads.insert(key.clone());
        Ok(self.at_snapshot(&key)?.map_or(Current::Absent, Current::Stored))
    }

    /// Stages the record's state after this write. Versions continue from the snapshot's record when it
    /// existed (a delete then insert in one transaction is an update), and an insert then delete of a record
    /// that did not exist at the snapshot stages nothing (its absence is still checked at commit). Returns the
    /// version staged.
    fn stage(&mut self, spec: Arc<Declared>, id: &str, after: Option<After>, version: u64) -> Result<u64, WriteError> {
        let key = keys::record_key(spec.name(), id);
        if !self.staged.contains_key(&key) {
            let before = self.at_snapshot(&key)?.map(|e| Before {
                version: e.version,
                created_ms: e.created_ms,
                index_keys: index_keys(&spec, &e.doc, id),
                project: e.doc.get("project").cloned(),
            });
            self.begin_staging(spec, id, key.clone(), before);
        }
        let Some(s) = self.staged.get_mut(&key) else { return Ok(version) };
        s.version = match &s.before {
            Some(b) if after.is_some() => version.max(b.version + 1),
            _ => version,
        };
        s.after = after;
        let staged = s.version;
        s.op = match (&s.before, &s.after) {
            (None, Some(_)) => ChangeOp::Insert,
            (Some(_), Some(_)) => ChangeOp::Update,
            (Some(_), None) => ChangeOp::Delete,
            (None, None) => {
                self.staged.remove(&key);
                self.order.retain(|k| *k != key);
                return Ok(staged);
            }
        };
        Ok(staged)
    }

    /// Starts the staged write of the record at `key`, as it was at the snapshot (`before`).
    fn begin_staging(&mut self, spec: Arc<Declared>, id: &str, key: Vec<u8>, before: Option<Before>) {
        self.order.push(key.clone());
        let staged = Staged { spec, id: id.to_owned(), before, after: None, version: 0, op: ChangeOp::Delete };
        self.staged.insert(key, staged);
    }

    /// Reads a document of collection `collection`.
    pub fn get_doc(&mut self, collection: &str, id: &str) -> Result<Option<Stored<Value>>, WriteError> {
        let spec = self.store.spec(collection)?;
        validate_id(id)?;
        let env = match self.current(&spec, id)? {
            Current::Absent => return Ok(None),
            Current::Stored(e) => Envelope::clone(&e),
            Current::Staged(version) => {
                let Some((_, created_ms)) = self.staged_meta(spec.name(), id) else { return Ok(None) };
                let doc = self.staged_doc(spec.name(), id)?;
                Envelope { seq: 0, version, created_ms, updated_ms: 0, doc }
            }
        };
        Ok(Some(stored(id, env)))
    }

    /// The version and creation time (0 for a new record) of the document this transaction writes for a
    /// record, if it writes one.
    pub(crate) fn staged_meta(&self, collection: &str, id: &str) -> Option<(u64, i64)> {
        let s = self.staged.get(&keys::record_key(collection, id))?;
        s.after.as_ref()?;
        Some((s.version, s.before.as_ref().map_or(0, |b| b.created_ms)))
    }

    /// The document this transaction writes for a record, decoded as `D`; `NotFound` if it writes none.
    pub(crate) fn staged_doc<D: DeserializeOwned>(&self, collection: &str, id: &str) -> Result<D, WriteError> {
        let key = keys::record_key(collection, id);
        let Some(after) = self.staged.get(&key).and_then(|s| s.after.as_ref()) else {
            return Err(WriteError::NotFound { collection: collection.to_owned(), id: id.to_owned() });
        };
        Ok(serde_json::from_slice(&after.json).map_err(|e| StoreError::undecodable(&key, e.to_string()))?)
    }

    /// Inserts a document; fails with `AlreadyExists` if the id is taken. Returns the new version: 1, or, after
    /// a delete of the same record in this transaction, the version following the deleted one.
    pub fn insert_doc(&mut self, collection: &str, id: &str, doc: Value) -> Result<u64, WriteError> {
        self.write_with(collection, id, Expect::Absent, |spec| After::of_value(spec, &doc, id))
    }

    /// Inserts or replaces a document. Returns the new version.
    pub fn upsert_doc(&mut self, collection: &str, id: &str, doc: Value) -> Result<u64, WriteError> {
        self.write_with(collection, id, Expect::Any, |spec| After::of_value(spec, &doc, id))
    }

    /// Replaces a document whose version is `expected`; `Conflict` otherwise, `NotFound` if absent.
    pub fn update_doc(&mut self, collection: &str, id: &str, expected: u64, doc: Value) -> Result<u64, WriteError> {
        self.write_with(collection, id, Expect::Version(expected), |spec| After::of_value(spec, &doc, id))
    }

    /// Writes the document `after` makes from the collection's spec (called once the id is valid) if the
    /// record's current version is what `expect` asks for. Returns the version staged.
    fn write_with(
        &mut self,
        collection: &str,
        id: &str,
        expect: Expect,
        after: impl FnOnce(&Declared) -> Result<After, WriteError>,
    ) -> Result<u64, WriteError> {
        let spec = self.store.spec(collection)?;
        validate_id(id)?;
        let after = after(&spec)?;
        let current = self.current(&spec, id)?.version();
        let version = match expect {
            Expect::Absent if current.is_some() => {
                return Err(WriteError::AlreadyExists { collection: spec.name().to_owned(), id: id.to_owned() });
            }
            Expect::Absent => 1,
            Expect::Any => current.map_or(1, |v| v + 1),
            Expect::Version(expected) => expect_version(&spec.spec, id, current, Some(expected))? + 1,
        };
        self.stage(spec, id, Some(after), version)
    }

    /// Deletes a document, checking its version if `expected` is given.
    pub fn delete_doc(&mut self, collection: &str, id: &str, expected: Option<u64>) -> Result<(), WriteError> {
        let spec = self.store.spec(collection)?;
        validate_id(id)?;
        let current = self.current(&spec, id)?.version();
        let version = expect_version(&spec.spec, id, current, expected)?;
        self.stage(spec, id, None, version + 1).map(drop)
    }

    /// Writes a document at exactly `version`, whatever version is stored (or none): for import and restore
    /// tools that copy records, versions included, from elsewhere. The change event carries `version` too.
    /// `Invalid` if `version` is 0.
    pub fn restore_doc(&mut self, collection: &str, id: &str, version: u64, doc: Value) -> Result<(), WriteError> {
        let spec = self.store.spec(collection)?;
        validate_id(id)?;
        let after = After::of_value(&spec, &doc, id)?;
        if version == 0 {
            return Err(WriteError::Invalid(format!("{collection}/{id}: a version must be at least 1")));
        }
        let key = keys::record_key(spec.name(), id);
        self.stage(spec, id, Some(after), version)?;
        if let Some(s) = self.staged.get_mut(&key) {
            s.version = version;
        }
        Ok(())
    }

    /// Reads a typed record.
    pub fn get<T: Record>(&mut self, id: &str) -> Result<Option<Stored<T>>, WriteError> {
        self.store.ensure::<T>()?;
        Ok(self.get_doc(T::COLLECTION, id)?.map(from_doc).transpose()?)
    }

    /// Inserts a typed record. Returns its version (1).
    pub fn insert<T: Record>(&mut self, record: &T) -> Result<u64, WriteError> {
        self.store.ensure::<T>()?;
        let id = record.id();
        self.write_with(T::COLLECTION, &id, Expect::Absent, |spec| After::of_record(spec, record, &id))
    }

    /// Inserts or replaces a typed record. Returns its new version.
    pub fn upsert<T: Record>(&mut self, record: &T) -> Result<u64, WriteError> {
        self.store.ensure::<T>()?;
        let id = record.id();
        self.write_with(T::COLLECTION, &id, Expect::Any, |spec| After::of_record(spec, record, &id))
    }

    /// Replaces a typed record whose version is `expected`. Returns its new version.
    pub fn update<T: Record>(&mut self, record: &T, expected: u64) -> Result<u64, WriteError> {
        self.store.ensure::<T>()?;
        let id = record.id();
        self.write_with(T::COLLECTION, &id, Expect::Version(expected), |spec| After::of_record(spec, record, &id))
    }

    /// Deletes a typed record, checking its version if `expected` is given.
    pub fn delete<T: Record>(&mut self, id: &str, expected: Option<u64>) -> Result<(), WriteError> {
        self.store.ensure::<T>()?;
        self.delete_doc(T::COLLECTION, id, expected)
    }

    /// Commits every staged write in one atomic, conditional batch.
    pub fn commit(mut self) -> Result<Committed, WriteError> {
        let hooks = std::mem::take(&mut self.after_commit);
        let committed = self.commit_writes()?;
        for hook in hooks {
            hook();
        }
        Ok(committed)
    }

    fn commit_writes(self) -> Result<Committed, WriteError> {
        let at_ms = now_ms();
        if self.order.is_empty() {
            return Ok(Committed { seq: 0, at_ms });
        }
        let mut batch = WriteBatch::new();
        let mut inserted = Vec::new();
        let mut feed_bytes = 0;
        let mut counted: Vec<(&str, i64)> = Vec::new();
        for key in &self.order {
            let Some(s) = self.staged.get(key) else { continue };
            feed_bytes += stage_into(&mut batch, &mut inserted, s, key, at_ms);
            let delta = match s.op {
                ChangeOp::Insert => 1,
                ChangeOp::Delete => -1,
                ChangeOp::Update => 0,
            };
            match counted.iter_mut().find(|c| c.0 == s.spec.name()) {
                Some(c) => c.1 += delta,
                None => counted.push((s.spec.name(), delta)),
            }
        }
        // Record counts change in the same batch as the records (see `counts`).
        counted.retain(|c| c.1 != 0);
        for (collection, delta) in &counted {
            batch.put_commit_keyed(&keys::count_prefix(collection), &[&delta.to_le_bytes()]);
        }
        for (prefix, value) in &self.keyed {
            batch.put_commit_keyed(prefix, &[value]);
        }
        let seq = self.snap.sequence();
        // Every key read or written must be unchanged since the snapshot; a key both read and written is
        // checked once.
        let written_only = self.order.iter().filter(|k| !self.reads.contains(*k));
        let conditions =
            self.reads.iter().chain(written_only).map(|k| Condition::unchanged_since(k.clone(), seq)).collect();
        // No index build replaces a declaration while the batch is written, and none did since the writes
        // were staged: their index entries are those of the indexes maintained now.
        let _writing = self.store.writing();
        if let Some(s) = self.order.iter().filter_map(|k| self.staged.get(k)).find(|s| !self.store.is_current(&s.spec))
        {
            return Err(WriteError::TxnConflict { collection: s.spec.name().to_owned(), id: s.id.clone() });
        }
        let hints = self.store.hints();
        let ticket = hints.begin_insert(inserted);
        let result = self.store.db().write_if(batch, conditions, WriteOptions::default());
        if let Some(ticket) = ticket {
            hints.end_insert(ticket, result.as_ref().ok().copied());
        }
        match result {
            Ok(seq) => {
                self.store.note_appended(feed_bytes);
                self.store.note_counted(counted.len() as u64);
                Ok(Committed { seq, at_ms })
            }
            Err(CommitError::ConditionFailed { key }) => {
                let (collection, id) = keys::parse_record_key(&key).unwrap_or_default();
                Err(WriteError::TxnConflict { collection: collection.to_owned(), id: id.to_owned() })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Adds one staged write to the batch: index entries that changed, the record, and a change event. The
/// index keys it puts are added to `inserted`. Returns the bytes (key and value) of the change event.
fn stage_into(batch: &mut WriteBatch, inserted: &mut Vec<Vec<u8>>, s: &Staged, key: &[u8], at_ms: i64) -> u64 {
    for i in 0..s.spec.indexes.len() {
        let old = s.before.as_ref().and_then(|b| b.index_keys.get(i));
        let new = s.after.as_ref().and_then(|a| a.index_keys.get(i));
        if old == new {
            continue;
        }
        if let Some(old) = old {
            batch.delete(old);
        }
        if let Some(new) = new {
            batch.put(new, s.id.as_bytes());
            inserted.push(new.clone());
        }
    }
    // Serialized once, for both the record and its change event.
    let doc = s.after.as_ref().map(|a| a.json.as_slice());
    match doc {
        Some(doc) => {
            let created = s.before.as_ref().map_or(at_ms, |b| b.created_ms);
            batch.put_commit_prefixed(key, &envelope::encode_head(s.version, created, at_ms), doc);
        }
        None => {
            batch.delete(key);
        }
    }
    // The job queue's records are working state rewritten at every step of a job: they have no change
    // events (see `docs/queue.md`).
    if crate::queue::is_queue_collection(s.spec.name()) {
        return 0;
    }
    let prev_project = s.before.as_ref().and_then(|b| b.project.as_ref());
    let (head, tail) = encode_event(s.spec.name(), &s.id, s.op, s.version, at_ms, prev_project, doc);
    let doc = doc.unwrap_or_default();
    batch.put_commit_keyed(keys::CHANGES, &[&head, doc, tail]);
    (keys::CHANGES.len() + 12 + head.len() + doc.len() + tail.len()) as u64
}

/// The current version, if it matches `expected` (when given); `NotFound` when absent.
fn expect_version(
    spec: &CollectionSpec,
    id: &str,
    current: Option<u64>,
    expected: Option<u64>,
) -> Result<u64, WriteError> {
    let Some(current) = current else {
        return Err(WriteError::NotFound { collection: spec.name.clone(), id: id.to_owned() });
    };
    match expected {
        Some(v) if v != current => Err(WriteError::Conflict {
            collection: spec.name.clone(),
            id: id.to_owned(),
            expected: v,
            actual: Some(current),
        }),
        _ => Ok(current),
    }
}
