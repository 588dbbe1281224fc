//! Jobs per queue and state, kept on write: every commit that moves jobs of a queue between states (or
//! adds or deletes them) writes one entry with the change of each state's count, keyed by its commit
//! sequence, in the same batch as the jobs (as the record counts of `counts.rs` are kept); a queue's counts
//! are the sum of its entries. A read that finds many entries folds them into one, and so does the
//! maintenance thread, so a read sums a bounded number of entries.

use cairn_engine::{Snapshot, WriteBatch};
use parking_lot::Mutex;

use crate::error::StoreError;
use crate::keys;
use crate::store::Store;
use crate::txn::Transaction;

use super::model::JobState;

/// Entries a queue's counts may have before a read folds them.
const FOLD_AT: usize = 256;

/// Prefix of a queue's entries.
pub(crate) fn prefix(queue: &str) -> Vec<u8> {
    [keys::QUEUE_STATS, queue.as_bytes(), b"\x00"].concat()
}

/// Count changes staged by one transaction, per queue.
#[derive(Debug, Default)]
pub(crate) struct Deltas(Vec<(String, [i64; 7])>);

impl Deltas {
    fn entry(&mut self, queue: &str) -> &mut [i64; 7] {
        let at = match self.0.iter().position(|(q, _)| q == queue) {
            Some(at) => at,
            None => {
                self.0.push((queue.to_owned(), [0; 7]));
                self.0.len() - 1
            }
        };
        // `at` is in bounds: found, or just pushed.
        &mut self.0[at].1
    }

    /// A job of `queue` moved from `from` (`None`: it is new) to `to` (`None`: it is deleted).
    pub(crate) fn moved(&mut self, queue: &str, from: Option<JobState>, to: Option<JobState>) {
        if from == to {
            return;
        }
        let e = self.entry(queue);
        if let Some(from) = from {
            e[from.index()] -= 1;
        }
        if let Some(to) = to {
            e[to.index()] += 1;
        }
    }

    /// Adds the entries to the transaction's commit.
    pub(crate) fn stage(self, tx: &mut Transaction<'_>) {
        for (queue, delta) in self.0 {
            if delta.iter().any(|d| *d != 0) {
                tx.put_commit_keyed(prefix(&queue), encode(&delta));
            }
        }
    }
}

fn encode(counts: &[i64; 7]) -> Vec<u8> {
    counts.iter().flat_map(|c| c.to_le_bytes()).collect()
}

fn decode(key: &[u8], value: &[u8]) -> Result<[i64; 7], StoreError> {
    let mut out = [0i64; 7];
    if value.len() != 56 {
        return Err(StoreError::undecodable(key, "queue count entry"));
    }
    for (i, chunk) in value.chunks_exact(8).enumerate() {
        let bytes: [u8; 8] = chunk.try_into().map_err(|_| StoreError::undecodable(key, "queue count entry"))?;
        if let Some(slot) = out.get_mut(i) {
            *slot = i64::from_le_bytes(bytes);
        }
    }
    Ok(out)
}

/// A queue's counts at `snap`, and how many entries hold them.
pub(crate) fn sum_at(snap: &Snapshot, queue: &str) -> Result<([i64; 7], usize), StoreError> {
    let mut sum = [0i64; 7];
    let mut entries = 0;
    for pair in snap.prefix(prefix(queue))? {
        let (key, value) = pair?;
        for (s, d) in sum.iter_mut().zip(decode(&key, &value)?) {
            *s += d;
        }
        entries += 1;
    }
    Ok((sum, entries))
}

/// Whether a read found enough entries to fold them.
pub(crate) fn wants_fold(entries: usize) -> bool {
    entries > FOLD_AT
}

/// Replaces a queue's entries by one holding their sum, unless another fold is running.
#[expect(clippy::big_endian_bytes, reason = "entries sort in commit order, as the change feed's keys")]
pub(crate) fn fold(store: &Store, lock: &Mutex<()>, queue: &str) -> Result<(), StoreError> {
    let Some(_folding) = lock.try_lock() else { return Ok(()) };
    let snap = store.db().snapshot();
    let mut batch = WriteBatch::new();
    let mut sum = [0i64; 7];
    for pair in snap.prefix(prefix(queue))? {
        let (key, value) = pair?;
        for (s, d) in sum.iter_mut().zip(decode(&key, &value)?) {
            *s += d;
        }
        batch.delete(&key);
    }
    if batch.len() <= 1 {
        return Ok(());
    }
    // Later commits write entries at later sequences than the snapshot's: the folded entry sorts first.
    let mut key = prefix(queue);
    key.extend_from_slice(&snap.sequence().to_be_bytes());
    key.extend_from_slice(&u32::MAX.to_be_bytes());
    batch.put(&key, encode(&sum));
    store.db().write(batch)?;
    Ok(())
}

/// The queues that have count entries (every queue a job was ever enqueued to), in name order: one seek
/// per queue.
pub(crate) fn queues(store: &Store) -> Result<Vec<String>, StoreError> {
    let snap = store.db().snapshot();
    let end = keys::after_prefix(keys::QUEUE_STATS).unwrap_or_default();
    let mut start = keys::QUEUE_STATS.to_vec();
    let mut out = Vec::new();
    loop {
        let Some(pair) = snap.range(start.clone()..end.clone())?.next() else { break };
        let (key, _) = pair?;
        let rest = key.get(keys::QUEUE_STATS.len()..).unwrap_or_default();
        let Some(sep) = rest.iter().position(|b| *b == 0) else {
            return Err(StoreError::undecodable(&key, "queue count key"));
        };
        let name = rest.get(..sep).unwrap_or_default();
        out.push(String::from_utf8_lossy(name).into_owned());
        // Past every entry of this queue: the queue name followed by 0x01.
        start = [keys::QUEUE_STATS, name, b"\x01"].concat();
    }
    Ok(out)
}
