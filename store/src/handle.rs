//! A collection with documents as JSON values: what the server and export/import use.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::catalog::Declared;
use crate::decoded::{CountOnly, Decode, Parse, RecordCache};
use crate::envelope::stored;
use crate::error::{ClaimError, ReadError, StoreError, WriteError};
use crate::query::{encode_cursor, execute, plan, Page, Plan, Query};
use crate::record::{CollectionSpec, Record, Stored};
use crate::store::Store;
use crate::txn::{After, Committed, Transaction};
use crate::validate::validate_id;

/// The retry policy of single-record writes ([`DynCollection::write_one`], and so every write of
/// [`DynCollection`] and [`Collection`](crate::Collection)): how many times one is tried in all while a
/// concurrent commit changes its record between its read and its commit, before it gives up with
/// [`WriteError::TxnConflict`]. Each attempt reads the record again, so a version check then sees the
/// version that won. 64 is far more than contention on one record needs in practice (a claim storm of 8
/// threads on one record retries a handful of times).
pub const WRITE_ATTEMPTS: usize = 64;

/// What a single-record write stages, as the `decide` closure of [`DynCollection::write_one`] chose from
/// the record's current state.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordWrite<D = Value> {
    /// Write this document: create the record (version 1) or replace it (next version).
    Put(D),
    /// Delete the record (`NotFound` if it is absent).
    Delete,
    /// Write nothing; the record is returned as it is.
    Keep,
}

/// A document a single-record write can stage: a JSON value, or a typed record (`&T`).
pub(crate) trait WriteDoc {
    /// The document type of the record returned.
    type Out: DeserializeOwned;
    /// Serializes and indexes the document.
    fn encode(&self, spec: &Declared, id: &str) -> Result<After, WriteError>;
    /// The document as written, for the record returned.
    fn written(self) -> Self::Out;
}

impl WriteDoc for Value {
    type Out = Value;
    fn encode(&self, spec: &Declared, id: &str) -> Result<After, WriteError> {
        After::of_value(spec, self, id)
    }
    fn written(self) -> Value {
        self
    }
}

impl<T: Record> WriteDoc for &T {
    type Out = T;
    fn encode(&self, spec: &Declared, id: &str) -> Result<After, WriteError> {
        After::of_record(spec, *self, id)
    }
    fn written(self) -> T {
        self.clone()
    }
}

/// What the `decide` of a single-record write sees of the record it may replace: the document parsed
/// (`Value`), or nothing of it but its version and times (`()`), for writes that do not look into it and
/// so need not parse it.
pub(crate) trait CurrentDoc: Sized {
    fn view(key: &[u8], current: &Stored<Vec<u8>>) -> Result<Stored<Self>, StoreError>;
}

impl CurrentDoc for Value {
    fn view(key: &[u8], current: &Stored<Vec<u8>>) -> Result<Stored<Value>, StoreError> {
        parse_doc(key, current)
    }
}

impl CurrentDoc for Box<RawValue> {
    fn view(key: &[u8], current: &Stored<Vec<u8>>) -> Result<Stored<Box<RawValue>>, StoreError> {
        parse_doc(key, current)
    }
}

impl CurrentDoc for () {
    fn view(_: &[u8], current: &Stored<Vec<u8>>) -> Result<Stored<()>, StoreError> {
        Ok(with_doc(current, ()))
    }
}

/// `current` with its document (JSON text) parsed as `D`.
fn parse_doc<D: DeserializeOwned>(key: &[u8], current: &Stored<Vec<u8>>) -> Result<Stored<D>, StoreError> {
    Ok(with_doc(current, crate::envelope::decode_doc(key, &current.doc)?))
}

/// The record `current` with `doc` for its document.
fn with_doc<D, E>(current: &Stored<E>, doc: D) -> Stored<D> {
    Stored {
        id: current.id.clone(),
        version: current.version,
        seq: current.seq,
        created_at_ms: current.created_at_ms,
        updated_at_ms: current.updated_at_ms,
        doc,
    }
}

/// What a single-record write's `decide` led to in its transaction.
pub(crate) enum Decided<D: WriteDoc> {
    /// A write was staged: the document put (`None` for a delete), to be returned once committed.
    Staged(Option<D>),
    /// Nothing was staged (`Keep`): the record as it is.
    Answered(Option<Stored<D::Out>>),
}

/// One attempt of a single-record write in `tx`: reads the record of `collection` and `id` (at `key`),
/// asks `decide`, and stages what it chose. On an error nothing is staged.
pub(crate) fn stage_one<D: WriteDoc, C: CurrentDoc, E: From<WriteError>>(
    store: &Store,
    tx: &mut Transaction<'_>,
    collection: &str,
    id: &str,
    key: &[u8],
    decide: &mut impl FnMut(Option<&Stored<C>>) -> Result<RecordWrite<D>, E>,
) -> Result<Decided<D>, E> {
    let spec = store.spec(collection).map_err(WriteError::from)?;
    validate_id(id).map_err(WriteError::from)?;
    let current = tx.read_for_write(&spec, id)?;
    let seen = current.as_ref().map(|c| C::view(key, c)).transpose().map_err(WriteError::from)?;
    Ok(match decide(seen.as_ref())? {
        RecordWrite::Keep => {
            Decided::Answered(current.map(|c| parse_doc(key, &c)).transpose().map_err(WriteError::from)?)
        }
        RecordWrite::Delete => {
            tx.stage_write(spec, id, current, None)?;
            Decided::Staged(None)
        }
        RecordWrite::Put(doc) => {
            let after = doc.encode(&spec, id)?;
            tx.stage_write(spec, id, current, Some(after))?;
            Decided::Staged(Some(doc))
        }
    })
}

/// The record a committed single-record write left: `written` is its staged version and creation time
/// ([`Transaction::staged_meta`]), `doc` what [`stage_one`] staged. `None` after a delete.
pub(crate) fn committed_record<D: WriteDoc>(
    id: &str,
    written: Option<(u64, i64)>,
    doc: Option<D>,
    c: &Committed,
) -> Option<Stored<D::Out>> {
    let ((version, created_ms), doc) = written.zip(doc)?;
    Some(Stored {
        id: id.to_owned(),
        version,
        seq: c.seq,
        created_at_ms: if created_ms == 0 { c.at_ms } else { created_ms },
        updated_at_ms: c.at_ms,
        doc: doc.written(),
    })
}

/// `Invalid` unless `doc` is a JSON object (checked before anything is read, as a transaction does).
fn object(doc: &Value) -> Result<(), WriteError> {
    if doc.is_object() {
        Ok(())
    } else {
        Err(WriteError::Invalid("a document must be a JSON object".into()))
    }
}

/// Candidates a claim considers per query round.
const CLAIM_BATCH: usize = 16;

/// Rounds a claim makes while it loses races, before it gives up as `Contended`.
const CLAIM_ROUNDS: usize = 8;

impl Store {
    /// A declared collection, with documents as JSON values.
    pub fn collection_dyn(&self, name: &str) -> Result<DynCollection, ReadError> {
        self.spec(name)?;
        Ok(DynCollection::new(self.clone(), name))
    }
}

/// A declared collection whose documents are JSON objects. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynCollection {
    store: Store,
    name: String,
}

impl DynCollection {
    pub(crate) fn new(store: Store, name: &str) -> Self {
        Self { store, name: name.to_owned() }
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The collection's current declaration (re-read on every call: it changes when indexes are added).
    pub fn spec(&self) -> Result<Arc<CollectionSpec>, ReadError> {
        Ok(self.store.spec(&self.name)?.spec.clone())
    }

    /// Writes one record in a transaction of its own: the single-record write path of the store, which
    /// [`DynCollection::insert`], `upsert`, `update`, `delete`, the typed [`Collection`](crate::Collection)
    /// and the HTTP server all use.
    ///
    /// `decide` gets the record as it is now (`None` if absent) and says what to write: a new document
    /// ([`RecordWrite::Put`]: the record is created at version 1, or replaced at the next version), its
    /// deletion ([`RecordWrite::Delete`]: `NotFound` if absent) or nothing ([`RecordWrite::Keep`]); or it
    /// refuses with an error of its own, which `write_one` returns as is, having written nothing. If a
    /// concurrent commit changes the record before this one commits, the write is tried again from a fresh
    /// read, calling `decide` again, up to [`WRITE_ATTEMPTS`] times in all; then the conflict is returned.
    ///
    /// Returns the record as the write left it, built from what was written: its version, commit sequence,
    /// times (set by the store: `created_at_ms` kept from the record replaced, `updated_at_ms` the commit's
    /// time) and document. `None` after a delete, or for `Keep` of an absent record.
    ///
    /// ```
    /// use cairn_store::{CollectionSpec, RecordWrite, Store, WriteError};
    /// use serde_json::json;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// store.declare(CollectionSpec::new("counters", vec![]))?;
    /// let counters = store.collection_dyn("counters")?;
    /// for _ in 0..3 {
    ///     counters.write_one("c1", |current| {
    ///         let n = current.map_or(0, |c| c.doc["n"].as_i64().unwrap_or(0));
    ///         Ok::<_, WriteError>(RecordWrite::Put(json!({ "n": n + 1 })))
    ///     })?;
    /// }
    /// assert_eq!(counters.get("c1")?.unwrap().doc["n"], 3);
    /// # Ok(()) }
    /// ```
    pub fn write_one<E: From<WriteError>>(
        &self,
        id: &str,
        decide: impl FnMut(Option<&Stored<Value>>) -> Result<RecordWrite, E>,
    ) -> Result<Option<Stored<Value>>, E> {
        self.write_one_as(id, decide)
    }

    /// [`DynCollection::write_one`] with `decide` given the current document as the JSON text it is stored
    /// as, checked but not parsed into a value: for writers that look into it only now and then, or only at
    /// a field (the HTTP server reads a record's `project` only for a token limited to one).
    pub fn write_one_raw<E: From<WriteError>>(
        &self,
        id: &str,
        decide: impl FnMut(Option<&Stored<Box<RawValue>>>) -> Result<RecordWrite, E>,
    ) -> Result<Option<Stored<Value>>, E> {
        self.write_one_as(id, decide)
    }

    /// [`DynCollection::write_one`] of documents of type `D` (see [`WriteDoc`]), `decide` seeing the current
    /// record as `C` (see [`CurrentDoc`]).
    pub(crate) fn write_one_as<D: WriteDoc, C: CurrentDoc, E: From<WriteError>>(
        &self,
        id: &str,
        mut decide: impl FnMut(Option<&Stored<C>>) -> Result<RecordWrite<D>, E>,
    ) -> Result<Option<Stored<D::Out>>, E> {
        let mut last = None;
        let key = crate::keys::record_key(&self.name, id);
        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.store.begin();
            let doc = match stage_one(&self.store, &mut tx, &self.name, id, &key, &mut decide)? {
                Decided::Answered(record) => return Ok(record),
                Decided::Staged(doc) => doc,
            };
            let written = tx.staged_meta(&self.name, id);
            match tx.commit() {
                Ok(c) => return Ok(committed_record(id, written, doc, &c)),
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.unwrap_or_else(|| WriteError::Invalid("no attempt made".into())).into())
    }

    /// Inserts a document; `AlreadyExists` if the id is taken.
    pub fn insert(&self, id: &str, doc: Value) -> Result<Stored<Value>, WriteError> {
        validate_id(id)?;
        object(&doc)?;
        let written = self.write_one_as(id, |current: Option<&Stored<()>>| match current {
            Some(_) => Err(WriteError::AlreadyExists { collection: self.name.clone(), id: id.to_owned() }),
            None => Ok(RecordWrite::Put(doc.clone())),
        })?;
        written.ok_or_else(|| self.not_found(id))
    }

    /// Inserts or replaces a document.
    pub fn upsert(&self, id: &str, doc: Value) -> Result<Stored<Value>, WriteError> {
        validate_id(id)?;
        object(&doc)?;
        let written =
            self.write_one_as(id, |_: Option<&Stored<()>>| Ok::<_, WriteError>(RecordWrite::Put(doc.clone())))?;
        written.ok_or_else(|| self.not_found(id))
    }

    /// Replaces a document if its stored version is `expected`; `Conflict { expected, actual }` otherwise.
    pub fn update(&self, id: &str, expected: u64, doc: Value) -> Result<Stored<Value>, WriteError> {
        validate_id(id)?;
        object(&doc)?;
        let written = self.write_one_as(id, |current: Option<&Stored<()>>| {
            self.expect(id, current, Some(expected))?;
            Ok::<_, WriteError>(RecordWrite::Put(doc.clone()))
        })?;
        written.ok_or_else(|| self.not_found(id))
    }

    /// Deletes a document, if its version is `expected` when given. `NotFound` if absent.
    pub fn delete(&self, id: &str, expected: Option<u64>) -> Result<(), WriteError> {
        self.write_one_as(id, |current: Option<&Stored<()>>| {
            self.expect(id, current, expected)?;
            Ok::<_, WriteError>(RecordWrite::<Value>::Delete)
        })?;
        Ok(())
    }

    /// `NotFound` if `current` is absent, `Conflict` if its version is not `expected` (when given).
    pub(crate) fn expect<D>(
        &self,
        id: &str,
        current: Option<&Stored<D>>,
        expected: Option<u64>,
    ) -> Result<(), WriteError> {
        let Some(current) = current else { return Err(self.not_found(id)) };
        match expected {
            Some(v) if v != current.version => Err(WriteError::Conflict {
                collection: self.name.clone(),
                id: id.to_owned(),
                expected: v,
                actual: Some(current.version),
            }),
            _ => Ok(()),
        }
    }

    fn not_found(&self, id: &str) -> WriteError {
        WriteError::NotFound { collection: self.name.clone(), id: id.to_owned() }
    }

    /// The store this collection is in.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The document with this id.
    pub fn get(&self, id: &str) -> Result<Option<Stored<Value>>, ReadError> {
        self.get_as(id, &Parse)
    }

    /// The document with this id as the JSON text it is stored as, checked but not parsed into a value: for
    /// callers that pass the document on as it is, such as the HTTP server answering a `GET`.
    pub fn get_raw(&self, id: &str) -> Result<Option<Stored<Box<RawValue>>>, ReadError> {
        self.get_as(id, &Parse)
    }

    /// The store's cache of decoded records, for typed handles.
    pub(crate) fn records(&self) -> &RecordCache {
        self.store.records()
    }

    /// The record with this id, its document decoded as `D` by `decoder`.
    pub(crate) fn get_as<D>(&self, id: &str, decoder: &impl Decode<D>) -> Result<Option<Stored<D>>, ReadError> {
        validate_id(id)?;
        let key = crate::keys::record_key(&self.name, id);
        let db = self.store.db();
        // The read below sees every commit up to `at`. A record the decoder keeps and knows current is
        // answered without it.
        let at = db.last_sequence();
        if let Some(record) = decoder.recall(&key, at, |after| db.written_after(&key, after))? {
            return Ok(Some(stored(id, record)));
        }
        // Decoded in place, in the memtable or the cached block that holds the record.
        let Some(record) = db.get_with(&key, |bytes| decoder.decode(&key, bytes, at))? else {
            return Ok(None);
        };
        Ok(Some(stored(id, record?)))
    }

    /// One page of the documents matching `query`, read at one snapshot.
    pub fn query(&self, query: &Query) -> Result<Page<Value>, ReadError> {
        self.query_as(query, &Parse)
    }

    /// [`DynCollection::query`], documents decoded as `D` by `decoder`.
    pub(crate) fn query_as<D>(&self, query: &Query, decoder: &impl Decode<D>) -> Result<Page<D>, ReadError> {
        let mut records = Vec::with_capacity(query.page_size()?.min(1024));
        let next_cursor = self.query_each_as(query, decoder, |r| records.push(r))?;
        Ok(Page { records, next_cursor })
    }

    /// The page [`DynCollection::query`] returns, handed to `visit` one record at a time as it is read,
    /// instead of collected: each document can be used and dropped before the next is decoded. Returns the
    /// page's next cursor. An error ends the page; the records visited before it were read at the same
    /// snapshot and are valid.
    pub fn query_each(&self, query: &Query, visit: impl FnMut(Stored<Value>)) -> Result<Option<String>, ReadError> {
        self.query_each_as(query, &Parse, visit)
    }

    /// [`DynCollection::query_each`], documents decoded as `D` by `decoder`.
    pub(crate) fn query_each_as<D>(
        &self,
        query: &Query,
        decoder: &impl Decode<D>,
        mut visit: impl FnMut(Stored<D>),
    ) -> Result<Option<String>, ReadError> {
        let limit = query.page_size()?;
        let (spec, ticket, snap) = self.store.declared_at_snapshot(&self.name)?;
        let mut last_key = Vec::new();
        let more =
            execute::<D>(&snap, (self.store.hints(), ticket), &spec, query, Some(limit), decoder, |key, env, id| {
                if let Some(env) = env {
                    last_key.clear();
                    last_key.extend_from_slice(key);
                    visit(stored(id, env));
                }
            })?;
        // `more` implies a full page, so at least one record and its key.
        Ok(more.then(|| encode_cursor(&last_key)))
    }

    /// Number of documents matching `query` (its limit and cursor are ignored).
    pub fn count(&self, query: &Query) -> Result<u64, ReadError> {
        let (spec, ticket, snap) = self.store.declared_at_snapshot(&self.name)?;
        let mut n = 0u64;
        let q = query.clone().after(None);
        execute(&snap, (self.store.hints(), ticket), &spec, &q, None, &CountOnly, |_, _, _| n += 1)?;
        Ok(n)
    }

    /// The plan `query` would use.
    pub fn explain(&self, query: &Query) -> Result<Plan, ReadError> {
        plan(&*self.spec()?, query)
    }

    /// Atomically takes the first document matching one of `queries` (tried in order) that `change`
    /// accepts: `change` edits the document and returns `true` to claim it. The claim is a version-checked
    /// update, so concurrent claimers never take the same document; a claimer that loses a race moves on to
    /// the next candidate. Candidates another claim of this store is taking at the moment are tried last, so
    /// that concurrent claimers spread over the head of the queue instead of racing for its first record.
    /// A round tries the first 16 candidates of each query; a round that lost a race is followed by another,
    /// up to 8. `None` only if a round lost no race and claimed nothing: no candidate matched, or `change`
    /// declined every one. [`ClaimError::Contended`] if all 8 rounds lost races (candidates exist, but
    /// concurrent writers took or changed each one tried): nothing was claimed, and a retry may succeed.
    pub fn claim(
        &self,
        queries: &[Query],
        mut change: impl FnMut(&mut Value) -> bool,
    ) -> Result<Option<Stored<Value>>, ClaimError> {
        self.claim_as(queries, &Parse, |candidate| {
            let mut doc = candidate.doc;
            if !change(&mut doc) {
                return Ok(None);
            }
            self.update(&candidate.id, candidate.version, doc).map(Some)
        })
    }

    /// [`DynCollection::claim`] of documents decoded as `D` by `decoder`: `attempt` gets each candidate in
    /// turn and writes it with a version-checked update (`Some`, the record written), or declines it
    /// (`None`). A conflict, or the candidate gone, is a lost race.
    pub(crate) fn claim_as<D: DeserializeOwned, O>(
        &self,
        queries: &[Query],
        decoder: &impl Decode<D>,
        mut attempt: impl FnMut(Stored<D>) -> Result<Option<Stored<O>>, WriteError>,
    ) -> Result<Option<Stored<O>>, ClaimError> {
        for _round in 0..CLAIM_ROUNDS {
            let mut lost_race = false;
            for q in queries {
                // Candidates are read a page at a time, the first page holding one: without contention
                // the first candidate is taken, and reading (and decoding) more would be wasted.
                let (mut seen, mut page_size, mut cursor) = (0, 1, None);
                let mut taken_elsewhere = Vec::new();
                while seen < CLAIM_BATCH {
                    let page = self.query_as(&q.clone().limit(page_size).after(cursor.take()), decoder)?;
                    for candidate in page.records {
                        seen += 1;
                        let key = crate::keys::record_key(&self.name, &candidate.id);
                        if self.store.claims().contains(&key) {
                            taken_elsewhere.push((key, candidate));
                            continue;
                        }
                        if let Some(claimed) = self.try_claim(key, candidate, &mut attempt, &mut lost_race)? {
                            return Ok(Some(claimed));
                        }
                    }
                    let Some(next) = page.next_cursor else { break };
                    cursor = Some(next);
                    page_size = (page_size * 4).min(CLAIM_BATCH - seen).max(1);
                }
                for (key, candidate) in taken_elsewhere {
                    if let Some(claimed) = self.try_claim(key, candidate, &mut attempt, &mut lost_race)? {
                        return Ok(Some(claimed));
                    }
                }
            }
            if !lost_race {
                return Ok(None);
            }
        }
        Err(ClaimError::Contended { collection: self.name.to_string() })
    }

    /// One claim attempt on `candidate` (whose record key is `key`), marked as in flight while it lasts:
    /// the claimed record, or `None` if `attempt` declined it or another writer changed it first (then
    /// `lost_race` is set).
    fn try_claim<D, O>(
        &self,
        key: Vec<u8>,
        candidate: Stored<D>,
        attempt: &mut impl FnMut(Stored<D>) -> Result<Option<Stored<O>>, WriteError>,
        lost_race: &mut bool,
    ) -> Result<Option<Stored<O>>, ClaimError> {
        // If another claimer marked it meanwhile, both go on and the version check decides.
        let _taking = self.store.claims().enter(key);
        match attempt(candidate) {
            Ok(claimed) => Ok(claimed),
            Err(WriteError::Conflict { .. } | WriteError::NotFound { .. } | WriteError::TxnConflict { .. }) => {
                *lost_race = true;
                Ok(None)
            }
            Err(WriteError::Store(e)) => Err(e.into()),
            Err(WriteError::UnknownCollection(c)) => Err(ClaimError::UnknownCollection(c)),
            Err(WriteError::Invalid(m)) => Err(ClaimError::Invalid(m)),
            // An update refuses nothing else.
            Err(e) => Err(ClaimError::Invalid(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{IndexSpec, Store};

    #[test]
    fn raw_reads_answer_the_stored_text_of_what_get_parses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.declare(CollectionSpec::new("c", vec![])).unwrap();
        let c = store.collection_dyn("c").unwrap();
        c.insert("a", json!({"z": [1, 2.5, "x\"y"], "a": {"b": null}, "n": -3})).unwrap();
        let parsed = c.get("a").unwrap().unwrap();
        let raw = c.get_raw("a").unwrap().unwrap();
        let text = serde_json::to_string(&parsed.doc).unwrap();
        assert_eq!(raw.doc.get(), text, "the text a parse and a write give back");
        assert_eq!(
            (raw.id.as_str(), raw.version, raw.seq, raw.created_at_ms, raw.updated_at_ms),
            (parsed.id.as_str(), parsed.version, parsed.seq, parsed.created_at_ms, parsed.updated_at_ms)
        );
        assert!(c.get_raw("b").unwrap().is_none());
        // A raw write sees the same text, and writes as `write_one` does.
        let written = c
            .write_one_raw("a", |current| {
                assert_eq!(current.map(|s| (s.doc.get(), s.version)), Some((text.as_str(), raw.version)));
                Ok::<_, WriteError>(RecordWrite::Put(json!({"n": 1})))
            })
            .unwrap()
            .unwrap();
        assert_eq!((written.version, written.doc), (2, json!({"n": 1})));
        assert_eq!(
            c.write_one_raw("b", |current| Ok::<_, WriteError>(if current.is_none() {
                RecordWrite::Keep
            } else {
                RecordWrite::Delete
            }))
            .unwrap(),
            None
        );
    }

    #[test]
    fn write_one_decides_again_after_a_conflict_and_returns_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.declare(CollectionSpec::new("c", vec![IndexSpec::new("n", &["n"])])).unwrap();
        let c = store.collection_dyn("c").unwrap();
        let first = c.insert("a", json!({"n": 1})).unwrap();
        // The first attempt's read is overtaken by another write: `decide` runs again and sees it.
        let mut seen = Vec::new();
        let written = c
            .write_one("a", |current| {
                let current = current.unwrap();
                seen.push(current.version);
                if seen.len() == 1 {
                    c.upsert("a", json!({"n": 10})).unwrap();
                }
                Ok::<_, WriteError>(RecordWrite::Put(json!({"n": current.doc["n"].as_i64().unwrap() + 1})))
            })
            .unwrap()
            .unwrap();
        assert_eq!(seen, [1, 2]);
        assert_eq!(written.doc, json!({"n": 11}));
        assert_eq!(written.version, 3);
        assert_eq!(written.created_at_ms, first.created_at_ms);
        assert_eq!(c.get("a").unwrap().unwrap(), written, "the answer is what was stored");
        // `Keep` writes nothing and returns the record as it is.
        let kept = c.write_one("a", |_| Ok::<_, WriteError>(RecordWrite::Keep)).unwrap();
        assert_eq!(kept.as_ref(), Some(&written));
        assert_eq!(c.write_one("b", |_| Ok::<_, WriteError>(RecordWrite::Keep)).unwrap(), None);
        // A refusal is returned as is, and nothing is written.
        let refused = c.write_one("a", |_| Err::<RecordWrite, _>(WriteError::Invalid("no".into())));
        assert!(matches!(refused, Err(WriteError::Invalid(m)) if m == "no"));
        assert_eq!(c.get("a").unwrap().unwrap().version, 3);
        // Deleting an absent record is `NotFound`; a delete returns `None`.
        let absent = c.write_one("b", |_| Ok::<_, WriteError>(RecordWrite::Delete));
        assert!(matches!(absent, Err(WriteError::NotFound { .. })));
        assert_eq!(c.write_one("a", |_| Ok::<_, WriteError>(RecordWrite::Delete)).unwrap(), None);
        assert!(c.get("a").unwrap().is_none());
        store.check_indexes().unwrap();
    }

    #[test]
    fn a_claim_that_makes_a_non_object_is_invalid_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.declare(CollectionSpec::new("q", vec![IndexSpec::new("state", &["state"])])).unwrap();
        let q = store.collection_dyn("q").unwrap();
        q.insert("a", json!({"state": "ready"})).unwrap();
        let claimed = q.claim(&[Query::new().eq("state", "ready")], |doc| {
            *doc = json!(5);
            true
        });
        assert!(
            matches!(&claimed, Err(ClaimError::Invalid(m)) if m == "a document must be a JSON object"),
            "{claimed:?}"
        );
        assert_eq!(q.get("a").unwrap().unwrap().version, 1);
    }

    /// Losing every race of every round is `Contended`, not "nothing matched"; nothing is claimed. A claim
    /// that finds no candidate is `None`.
    #[test]
    fn a_claim_that_loses_every_race_is_contended() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.declare(CollectionSpec::new("q", vec![IndexSpec::new("state", &["state"])])).unwrap();
        let q = store.collection_dyn("q").unwrap();
        q.insert("a", json!({"state": "ready"})).unwrap();
        let ready = [Query::new().eq("state", "ready")];
        // Another writer changes the candidate between the claim's read and its write, every time.
        let other = q.clone();
        let mut tries = 0;
        let claimed = q.claim(&ready, |doc| {
            tries += 1;
            let current = other.get("a").unwrap().unwrap();
            other.update("a", current.version, json!({"state": "ready", "touched": tries})).unwrap();
            doc["state"] = json!("taken");
            true
        });
        assert!(matches!(&claimed, Err(ClaimError::Contended { collection }) if collection == "q"), "{claimed:?}");
        assert!(claimed.unwrap_err().is_retryable());
        assert_eq!(tries, CLAIM_ROUNDS);
        assert_eq!(q.get("a").unwrap().unwrap().doc["state"], "ready", "nothing claimed");
        assert!(q.claim(&[Query::new().eq("state", "gone")], |_| true).unwrap().is_none());
    }

    #[test]
    fn a_claim_tries_candidates_another_claim_is_taking_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.declare(CollectionSpec::new("q", vec![IndexSpec::new("state_rank", &["state", "rank"])])).unwrap();
        let q = store.collection_dyn("q").unwrap();
        for (id, rank) in [("a", 1), ("b", 2), ("c", 3)] {
            q.insert(id, json!({"state": "ready", "rank": rank})).unwrap();
        }
        let ready = [Query::new().eq("state", "ready").order_by("rank")];
        let take = |doc: &mut Value| {
            doc["state"] = json!("taken");
            true
        };
        // `a` is being claimed elsewhere: `b` is taken instead, and `a` is left for its claimer.
        let taking_a = store.claims().enter(crate::keys::record_key("q", "a")).unwrap();
        assert_eq!(q.claim(&ready, take).unwrap().unwrap().id, "b");
        // With every other candidate gone, the one in flight is tried after all.
        assert_eq!(q.claim(&ready, take).unwrap().unwrap().id, "c");
        assert_eq!(q.claim(&ready, take).unwrap().unwrap().id, "a");
        drop(taking_a);
        assert!(q.claim(&ready, take).unwrap().is_none());
        assert!(store.claims().enter(crate::keys::record_key("q", "a")).is_some(), "no mark left behind");
    }
}
