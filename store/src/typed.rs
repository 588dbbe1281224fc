//! Typed collections: a [`Record`] type over a [`DynCollection`].

use std::marker::PhantomData;
use std::sync::Arc;

use crate::decoded::OrSkip;
use crate::error::{ClaimError, DeclareError, ReadError, WriteError};
use crate::handle::{DynCollection, RecordWrite};
use crate::query::{Page, Plan, Query};
use crate::record::{Record, Stored};
use crate::store::Store;

impl Store {
    /// The typed collection of `T`, declaring it (and its indexes) if needed.
    pub fn collection<T: Record>(&self) -> Result<Collection<T>, DeclareError> {
        self.ensure::<T>()?;
        Ok(Collection::new(DynCollection::new(self.clone(), T::COLLECTION)))
    }
}

/// The collection of a [`Record`] type. Made by [`Store::collection`](crate::Store::collection).
#[derive(Debug, Clone)]
pub struct Collection<T> {
    inner: DynCollection,
    _type: PhantomData<fn() -> T>,
}

impl<T: Record> Collection<T> {
    pub(crate) fn new(inner: DynCollection) -> Self {
        Self { inner, _type: PhantomData }
    }

    /// The same collection, untyped.
    pub fn as_dyn(&self) -> &DynCollection {
        &self.inner
    }

    /// Inserts a record; `AlreadyExists` if its id is taken.
    pub fn insert(&self, record: &T) -> Result<Stored<T>, WriteError> {
        let id = record.id();
        self.write(&id, |current| match current {
            Some(_) => Err(WriteError::AlreadyExists { collection: T::COLLECTION.to_owned(), id: id.clone() }),
            None => Ok(RecordWrite::Put(record)),
        })
    }

    /// Inserts or replaces a record.
    pub fn upsert(&self, record: &T) -> Result<Stored<T>, WriteError> {
        self.write(&record.id(), |_| Ok(RecordWrite::Put(record)))
    }

    /// Replaces a record whose stored version is `expected`.
    pub fn update(&self, record: &T, expected: u64) -> Result<Stored<T>, WriteError> {
        let id = record.id();
        self.write(&id, |current| {
            self.inner.expect(&id, current, Some(expected))?;
            Ok(RecordWrite::Put(record))
        })
    }

    /// Deletes a record, checking its version if `expected` is given.
    pub fn delete(&self, id: &str, expected: Option<u64>) -> Result<(), WriteError> {
        self.inner.delete(id, expected)
    }

    /// One write of `record` through [`DynCollection::write_one`], with `T`'s indexes declared first.
    fn write<'r>(
        &self,
        id: &str,
        decide: impl FnMut(Option<&Stored<()>>) -> Result<RecordWrite<&'r T>, WriteError>,
    ) -> Result<Stored<T>, WriteError> {
        self.inner.store().ensure::<T>()?;
        let written = self.inner.write_one_as(id, decide)?;
        written.ok_or_else(|| WriteError::NotFound { collection: T::COLLECTION.to_owned(), id: id.to_owned() })
    }

    /// The record with this id.
    pub fn get(&self, id: &str) -> Result<Option<Stored<T>>, ReadError> {
        self.inner.get_as(id, &self.inner.records().typed::<T>())
    }

    /// One page of matching records.
    pub fn query(&self, query: &Query) -> Result<Page<T>, ReadError> {
        self.inner.query_as(query, &self.inner.records().typed::<T>())
    }

    /// The record with this id, shared with the store's cache of decoded records: a record read before
    /// and unchanged since is handed out as the cache keeps it, without a copy (see [`Collection::query_shared`]).
    pub fn get_shared(&self, id: &str) -> Result<Option<Stored<Arc<T>>>, ReadError> {
        self.inner.get_as(id, &self.inner.records().shared::<T>())
    }

    /// The page [`Collection::query`] returns, each record shared with the store's cache of decoded records
    /// instead of copied out of it. A query repeated over records that seldom change (a scheduler polling
    /// its queue, a dashboard) finds them kept, and then costs the index scan and, per record, a check that
    /// it is unchanged (a probe of the memtables, or a point read once a flush has written later commits
    /// to tables), not a clone of each. The records are the same values `query` returns: a record changed
    /// after it was kept is read anew, never answered from the cache.
    pub fn query_shared(&self, query: &Query) -> Result<Page<Arc<T>>, ReadError> {
        self.inner.query_as(query, &self.inner.records().shared::<T>())
    }

    /// The page [`Collection::query`] returns, handed to `visit` one record at a time instead of collected;
    /// returns the page's next cursor. Each record can be used and dropped before the next is decoded,
    /// which for large documents is markedly cheaper than holding a page of them.
    pub fn query_each(&self, query: &Query, visit: impl FnMut(Stored<T>)) -> Result<Option<String>, ReadError> {
        self.inner.query_each_as(query, &self.inner.records().typed::<T>(), visit)
    }

    /// Number of matching records.
    pub fn count(&self, query: &Query) -> Result<u64, ReadError> {
        self.inner.count(query)
    }

    /// The plan a query would use.
    pub fn explain(&self, query: &Query) -> Result<Plan, ReadError> {
        self.inner.explain(query)
    }

    /// Atomically takes the first record matching one of `queries` that `change` accepts; see
    /// [`DynCollection::claim`]. `None` if nothing matched (or `change` declined every candidate),
    /// [`ClaimError::Contended`] if candidates were lost to concurrent writers round after round.
    pub fn claim(
        &self,
        queries: &[Query],
        mut change: impl FnMut(&mut T) -> bool,
    ) -> Result<Option<Stored<T>>, ClaimError> {
        // Candidates are decoded as `T` (through the record cache) and written as `T`, with no JSON tree;
        // documents that are not a `T` are passed over.
        let decoder = self.inner.records().typed::<T>();
        self.inner.claim_as(queries, &OrSkip(&decoder), |candidate| {
            let Some(mut record) = candidate.doc else { return Ok(None) };
            if !change(&mut record) {
                return Ok(None);
            }
            let id = candidate.id;
            self.write(&id, |current| {
                self.inner.expect(&id, current, Some(candidate.version))?;
                Ok(RecordWrite::Put(&record))
            })
            .map(Some)
        })
    }
}
