//! A collection with documents as JSON values: what the server and export/import use.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::decoded::{CountOnly, Decode, Parse, RecordCache};
use crate::error::CollectionError;
use crate::query::{encode_cursor, execute, plan, Page, Plan, Query};
use crate::record::{CollectionSpec, Stored};
use crate::store::Store;
use crate::txn::{stored, Transaction};

/// How often a single-record write retries after a concurrent commit touched its record, before giving up
/// with [`CollectionError::TxnConflict`].
const SINGLE_WRITE_ATTEMPTS: usize = 64;

/// Candidates a claim considers per query round.
const CLAIM_BATCH: usize = 16;

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
    pub fn spec(&self) -> Result<Arc<CollectionSpec>, CollectionError> {
        self.store.spec(&self.name)
    }

    /// One write of `doc` as its own transaction, returning the record exactly as this commit wrote it. A
    /// conflict with a concurrent commit is retried: the retry re-reads the record, so version checks then
    /// report the version that won.
    fn write(
        &self,
        id: &str,
        doc: &Value,
        op: impl Fn(&mut Transaction<'_>, Value) -> Result<u64, CollectionError>,
    ) -> Result<Stored<Value>, CollectionError> {
        self.write_as(id, |tx| op(tx, doc.clone()), |_| Ok(doc.clone()))
    }

    /// Runs the single-record write `op` as [`DynCollection::write`] does, returning the record with the
    /// document that `doc` takes from the transaction before it commits.
    pub(crate) fn write_as<D>(
        &self,
        id: &str,
        op: impl Fn(&mut Transaction<'_>) -> Result<u64, CollectionError>,
        doc: impl Fn(&Transaction<'_>) -> Result<D, CollectionError>,
    ) -> Result<Stored<D>, CollectionError> {
        let name = &self.name;
        let mut last = None;
        for _ in 0..SINGLE_WRITE_ATTEMPTS {
            let mut tx = self.store.begin();
            op(&mut tx)?;
            let written = tx.staged_meta(name, id);
            let doc = doc(&tx)?;
            match tx.commit() {
                Ok(c) => {
                    let (version, created_ms) = written
                        .ok_or_else(|| CollectionError::NotFound { collection: name.clone(), id: id.to_owned() })?;
                    return Ok(Stored {
                        id: id.to_owned(),
                        version,
                        seq: c.seq,
                        created_at_ms: if created_ms == 0 { c.at_ms } else { created_ms },
                        updated_at_ms: c.at_ms,
                        doc,
                    });
                }
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| CollectionError::invalid("no attempt made")))
    }

    /// Inserts a document; `AlreadyExists` if the id is taken.
    pub fn insert(&self, id: &str, doc: Value) -> Result<Stored<Value>, CollectionError> {
        self.write(id, &doc, |tx, doc| tx.insert_doc(&self.name, id, doc))
    }

    /// Inserts or replaces a document.
    pub fn upsert(&self, id: &str, doc: Value) -> Result<Stored<Value>, CollectionError> {
        self.write(id, &doc, |tx, doc| tx.upsert_doc(&self.name, id, doc))
    }

    /// Replaces a document if its stored version is `expected`; `Conflict { expected, actual }` otherwise.
    pub fn update(&self, id: &str, expected: u64, doc: Value) -> Result<Stored<Value>, CollectionError> {
        self.write(id, &doc, |tx, doc| tx.update_doc(&self.name, id, expected, doc))
    }

    /// Deletes a document, if its version is `expected` when given. `NotFound` if absent.
    pub fn delete(&self, id: &str, expected: Option<u64>) -> Result<(), CollectionError> {
        self.store.transaction_with_retry(SINGLE_WRITE_ATTEMPTS, |tx| tx.delete_doc(&self.name, id, expected))
    }

    /// The document with this id.
    pub fn get(&self, id: &str) -> Result<Option<Stored<Value>>, CollectionError> {
        self.get_as(id, &Parse)
    }

    /// The store's cache of decoded records, for typed handles.
    pub(crate) fn records(&self) -> &RecordCache {
        self.store.records()
    }

    /// The record with this id, its document decoded as `D` by `decoder`.
    pub(crate) fn get_as<D>(&self, id: &str, decoder: &impl Decode<D>) -> Result<Option<Stored<D>>, CollectionError> {
        crate::store::validate_id(id)?;
        let key = crate::keys::record_key(&self.name, id);
        let Some(bytes) = self.store.db().get(&key)? else { return Ok(None) };
        Ok(Some(stored(id, decoder.decode(&key, &bytes)?)))
    }

    /// One page of the documents matching `query`, read at one snapshot.
    pub fn query(&self, query: &Query) -> Result<Page<Value>, CollectionError> {
        self.query_as(query, &Parse)
    }

    /// [`DynCollection::query`], documents decoded as `D` by `decoder`.
    pub(crate) fn query_as<D: DeserializeOwned>(
        &self,
        query: &Query,
        decoder: &impl Decode<D>,
    ) -> Result<Page<D>, CollectionError> {
        let mut records = Vec::with_capacity(query.page_size()?.min(1024));
        let next_cursor = self.query_each_as(query, decoder, |r| records.push(r))?;
        Ok(Page { records, next_cursor })
    }

    /// The page [`DynCollection::query`] returns, handed to `visit` one record at a time as it is read,
    /// instead of collected: each document can be used and dropped before the next is decoded. Returns the
    /// page's next cursor. An error ends the page; the records visited before it were read at the same
    /// snapshot and are valid.
    pub fn query_each(
        &self,
        query: &Query,
        visit: impl FnMut(Stored<Value>),
    ) -> Result<Option<String>, CollectionError> {
        self.query_each_as(query, &Parse, visit)
    }

    /// [`DynCollection::query_each`], documents decoded as `D` by `decoder`.
    pub(crate) fn query_each_as<D: DeserializeOwned>(
        &self,
        query: &Query,
        decoder: &impl Decode<D>,
        mut visit: impl FnMut(Stored<D>),
    ) -> Result<Option<String>, CollectionError> {
        let limit = query.page_size()?;
        let spec = self.spec()?;
        let ticket = self.store.hints().begin_scan();
        let snap = self.store.db().snapshot();
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
    pub fn count(&self, query: &Query) -> Result<u64, CollectionError> {
        let spec = self.spec()?;
        let ticket = self.store.hints().begin_scan();
        let snap = self.store.db().snapshot();
        let mut n = 0u64;
        let q = query.clone().after(None);
        execute(&snap, (self.store.hints(), ticket), &spec, &q, None, &CountOnly, |_, _, _| n += 1)?;
        Ok(n)
    }

    /// The plan `query` would use.
    pub fn explain(&self, query: &Query) -> Result<Plan, CollectionError> {
        plan(&*self.spec()?, query)
    }

    /// Atomically takes the first document matching one of `queries` (tried in order) that `change`
    /// accepts: `change` edits the document and returns `true` to claim it. The claim is a version-checked
    /// update, so concurrent claimers never take the same document; a claimer that loses a race moves on to
    /// the next candidate. Candidates another claim of this store is taking at the moment are tried last, so
    /// that concurrent claimers spread over the head of the queue instead of racing for its first record.
    /// `None` if none of the first 16 candidates of each query was accepted and claimed, or if 8 rounds all
    /// lost their races.
    pub fn claim(
        &self,
        queries: &[Query],
        mut change: impl FnMut(&mut Value) -> bool,
    ) -> Result<Option<Stored<Value>>, CollectionError> {
        for _round in 0..8 {
            let mut lost_race = false;
            for q in queries {
                // Candidates are read a page at a time, the first page holding one: without contention
                // the first candidate is taken, and reading (and decoding) more would be wasted.
                let (mut seen, mut page_size, mut cursor) = (0, 1, None);
                let mut taken_elsewhere = Vec::new();
                while seen < CLAIM_BATCH {
                    let page = self.query(&q.clone().limit(page_size).after(cursor.take()))?;
                    for candidate in page.records {
                        seen += 1;
                        let key = crate::keys::record_key(&self.name, &candidate.id);
                        if self.store.claims().contains(&key) {
                            taken_elsewhere.push((key, candidate));
                            continue;
                        }
                        if let Some(claimed) = self.try_claim(key, candidate, &mut change, &mut lost_race)? {
                            return Ok(Some(claimed));
                        }
                    }
                    let Some(next) = page.next_cursor else { break };
                    cursor = Some(next);
                    page_size = (page_size * 4).min(CLAIM_BATCH - seen).max(1);
                }
                for (key, candidate) in taken_elsewhere {
                    if let Some(claimed) = self.try_claim(key, candidate, &mut change, &mut lost_race)? {
                        return Ok(Some(claimed));
                    }
                }
            }
            if !lost_race {
                break;
            }
        }
        Ok(None)
    }

    /// One claim attempt on `candidate` (whose record key is `key`), marked as in flight while it lasts:
    /// the claimed record, or `None` if `change` declined it or another writer changed it first (then
    /// `lost_race` is set).
    fn try_claim(
        &self,
        key: Vec<u8>,
        candidate: Stored<Value>,
        change: &mut impl FnMut(&mut Value) -> bool,
        lost_race: &mut bool,
    ) -> Result<Option<Stored<Value>>, CollectionError> {
        let mut doc = candidate.doc;
        if !change(&mut doc) {
            return Ok(None);
        }
        // If another claimer marked it meanwhile, both go on and the version check decides.
        let _taking = self.store.claims().enter(key);
        match self.update(&candidate.id, candidate.version, doc) {
            Ok(claimed) => Ok(Some(claimed)),
            Err(
                CollectionError::Conflict { .. }
                | CollectionError::NotFound { .. }
                | CollectionError::TxnConflict { .. },
            ) => {
                *lost_race = true;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{IndexSpec, Store};

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
