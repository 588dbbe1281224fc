//! Several single-record writes committed together ([`Store::write_together`]): each decided and checked on
//! its own, as [`DynCollection::write_one_raw`](crate::DynCollection::write_one_raw) would, and those that
//! stage a write committed in one atomic batch: one WAL record and, for durable commits, one sync. The HTTP
//! server's puts and deletes go through it, so that concurrent requests share a commit.

use std::collections::HashSet;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::WriteError;
use crate::handle::{committed_record, stage_one, Decided, RecordWrite, WRITE_ATTEMPTS};
use crate::keys::record_key;
use crate::record::Stored;
use crate::store::Store;

/// The `decide` of a [`OneWrite`]: as [`DynCollection::write_one_raw`](crate::DynCollection::write_one_raw)'s.
pub type DecideRaw<'a, E> = Box<dyn FnMut(Option<&Stored<Box<RawValue>>>) -> Result<RecordWrite, E> + 'a>;

/// One single-record write of [`Store::write_together`].
pub struct OneWrite<'a, E> {
    /// The record's collection.
    pub collection: &'a str,
    /// The record's id.
    pub id: &'a str,
    /// What to write, from the record as it is now (its document as JSON text, `None` if absent).
    pub decide: DecideRaw<'a, E>,
}

impl<E> std::fmt::Debug for OneWrite<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneWrite").field("collection", &self.collection).field("id", &self.id).finish()
    }
}

/// What each write of a round came to; `None` while not yet known.
type Outcomes<E> = Vec<Option<Result<Option<Stored<Value>>, E>>>;

impl Store {
    /// Makes every write of `writes` as [`DynCollection::write_one_raw`](crate::DynCollection::write_one_raw)
    /// would make it alone, and commits those that stage a write in one atomic batch: one WAL record, and
    /// one sync if the store's commits are durable. Returns each write's answer, in order: the record as
    /// the write left it, `None` after a delete, or the write's own error.
    ///
    /// Each write is independent of the others: a `decide` that refuses (or a document the collection
    /// does not accept) stages nothing and fails that write alone, and the commit does not depend on the
    /// record such a write read. Writes to one record are made one after the other in the order given,
    /// each seeing the one before, in commits of their own. If a concurrent commit changes a record some
    /// write read, every write of the commit is decided again from a fresh read, up to
    /// [`WRITE_ATTEMPTS`] times; then each write that staged gets [`WriteError::TxnConflict`]. A commit
    /// that fails otherwise is tried again write by write, so that each gets its own answer.
    ///
    /// The writes make one batch in memory and in the WAL: the caller bounds how many it gives.
    ///
    /// ```
    /// use cairn_store::{CollectionSpec, OneWrite, RecordWrite, Store, WriteError};
    /// use serde_json::json;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// store.declare(CollectionSpec::new("jobs", vec![]))?;
    /// let mut writes = vec![
    ///     OneWrite { collection: "jobs", id: "a", decide: Box::new(|_| Ok(RecordWrite::Put(json!({"n": 1})))) },
    ///     OneWrite { collection: "jobs", id: "b", decide: Box::new(|_| Ok(RecordWrite::Delete)) },
    /// ];
    /// let answers = store.write_together::<WriteError>(&mut writes);
    /// assert_eq!(answers[0].as_ref().unwrap().as_ref().unwrap().version, 1);
    /// assert!(matches!(answers[1], Err(WriteError::NotFound { .. })));
    /// # Ok(()) }
    /// ```
    pub fn write_together<E: From<WriteError>>(
        &self,
        writes: &mut [OneWrite<'_, E>],
    ) -> Vec<Result<Option<Stored<Value>>, E>> {
        let mut outcomes: Outcomes<E> = writes.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..writes.len()).collect();
        while !pending.is_empty() {
            let mut records = HashSet::new();
            let (round, later) = pending.into_iter().partition::<Vec<_>, _>(|&i| {
                let w = &writes[i];
                records.insert((w.collection, w.id))
            });
            self.write_round(writes, &round, &mut outcomes);
            pending = later;
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(WriteError::Invalid("no attempt made".into()).into())))
            .collect()
    }

    /// Writes the writes `round` names (one per record) in one commit, into `outcomes`.
    fn write_round<E: From<WriteError>>(
        &self,
        writes: &mut [OneWrite<'_, E>],
        round: &[usize],
        outcomes: &mut Outcomes<E>,
    ) {
        let mut staged = Vec::new();
        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.begin();
            staged.clear();
            for &i in round {
                let w = &mut writes[i];
                let key = record_key(w.collection, w.id);
                match stage_one(self, &mut tx, w.collection, w.id, &key, &mut w.decide) {
                    Ok(Decided::Staged(doc)) => {
                        staged.push((i, doc, tx.staged_meta(w.collection, w.id)));
                    }
                    Ok(Decided::Answered(record)) => {
                        tx.unread(&key);
                        outcomes[i] = Some(Ok(record));
                    }
                    Err(e) => {
                        tx.unread(&key);
                        outcomes[i] = Some(Err(e));
                    }
                }
            }
            match tx.commit() {
                Ok(c) => {
                    for (i, doc, written) in staged.drain(..) {
                        outcomes[i] = Some(Ok(committed_record(writes[i].id, written, doc, &c)));
                    }
                    return;
                }
                Err(e) if e.is_retryable() => {}
                Err(e) if staged.len() == 1 => {
                    outcomes[staged[0].0] = Some(Err(e.into()));
                    return;
                }
                Err(_) => {
                    for (i, _, _) in staged.drain(..) {
                        self.write_round(writes, &[i], outcomes);
                    }
                    return;
                }
            }
        }
        for (i, _, _) in staged {
            let w = &writes[i];
            outcomes[i] =
                Some(Err(WriteError::TxnConflict { collection: w.collection.to_owned(), id: w.id.to_owned() }.into()));
        }
    }
}
