//! Bucket statistics kept on write: every commit that adds, replaces or deletes objects of a bucket writes
//! one entry with the change of its object count and byte total, keyed by its commit sequence, in the same
//! batch as the object records (as the record counts of `counts.rs` are kept); a bucket's statistics are
//! the sum of its entries. Reading a bucket with many entries folds them into one.

use cairn_engine::{Snapshot, WriteBatch};
use parking_lot::Mutex;

use crate::error::StoreError;
use crate::keys;
use crate::store::Store;
use crate::txn::Transaction;

use super::model::BucketStats;

/// Entries a bucket's statistics may have before a read folds them.
const FOLD_AT: usize = 256;

/// Prefix of a bucket's entries.
pub(crate) fn prefix(bucket: &str) -> Vec<u8> {
    [keys::ARTIFACT_STATS, bucket.as_bytes(), b"\x00"].concat()
}

/// Adds a change of `objects` objects and `bytes` bytes of `bucket` to the transaction's commit.
pub(crate) fn add(tx: &mut Transaction<'_>, bucket: &str, objects: i64, bytes: i64) {
    if objects != 0 || bytes != 0 {
        let mut value = objects.to_le_bytes().to_vec();
        value.extend_from_slice(&bytes.to_le_bytes());
        tx.put_commit_keyed(prefix(bucket), value);
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<(i64, i64), StoreError> {
    let field = |at: usize| value.get(at..at + 8).and_then(|b| b.try_into().ok()).map(i64::from_le_bytes);
    match (field(0), field(8)) {
        (Some(objects), Some(bytes)) if value.len() == 16 => Ok((objects, bytes)),
        _ => Err(StoreError::undecodable(key, "bucket statistics entry")),
    }
}

/// A bucket's statistics at `snap`, and how many entries hold them.
pub(crate) fn sum_at(snap: &Snapshot, bucket: &str) -> Result<(BucketStats, usize), StoreError> {
    let (mut objects, mut bytes, mut entries) = (0i64, 0i64, 0);
    for pair in snap.prefix(prefix(bucket))? {
        let (key, value) = pair?;
        let (o, b) = decode(&key, &value)?;
        objects += o;
        bytes += b;
        entries += 1;
    }
    Ok((BucketStats { objects: objects.max(0) as u64, bytes: bytes.max(0) as u64 }, entries))
}

/// Replaces a bucket's entries by one holding their sum, unless another fold is running.
#[expect(clippy::big_endian_bytes, reason = "entries sort in commit order, as the change feed's keys")]
pub(crate) fn fold(store: &Store, lock: &Mutex<()>, bucket: &str) -> Result<(), StoreError> {
    let Some(_folding) = lock.try_lock() else { return Ok(()) };
    let snap = store.db().snapshot();
    let mut batch = WriteBatch::new();
    let (mut objects, mut bytes) = (0i64, 0i64);
    for pair in snap.prefix(prefix(bucket))? {
        let (key, value) = pair?;
        let (o, b) = decode(&key, &value)?;
        objects += o;
        bytes += b;
        batch.delete(&key);
    }
    if batch.len() <= 1 {
        return Ok(());
    }
    // Later commits write entries at later sequences than the snapshot's: the folded entry sorts first.
    let mut key = prefix(bucket);
    key.extend_from_slice(&snap.sequence().to_be_bytes());
    key.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut value = objects.to_le_bytes().to_vec();
    value.extend_from_slice(&bytes.to_le_bytes());
    batch.put(&key, &value);
    store.db().write(batch)?;
    Ok(())
}

/// Replaces every entry `snap` holds (of every bucket) by one entry per bucket of `totals` holding its
/// statistics as of `snap`. Commits after `snap` keep their entries, which add to these.
#[expect(clippy::big_endian_bytes, reason = "entries sort in commit order, as the change feed's keys")]
pub(crate) fn replace_all(
    store: &Store,
    snap: &Snapshot,
    totals: &std::collections::BTreeMap<String, BucketStats>,
) -> Result<(), StoreError> {
    let mut batch = WriteBatch::new();
    for pair in snap.prefix(keys::ARTIFACT_STATS)? {
        batch.delete(pair?.0);
    }
    for (bucket, stats) in totals.iter().filter(|(_, s)| **s != BucketStats::default()) {
        let mut key = prefix(bucket);
        key.extend_from_slice(&snap.sequence().to_be_bytes());
        key.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut value = (stats.objects as i64).to_le_bytes().to_vec();
        value.extend_from_slice(&(stats.bytes as i64).to_le_bytes());
        batch.put(&key, &value);
    }
    if !batch.is_empty() {
        store.db().write(batch)?;
    }
    Ok(())
}

/// Removes every entry of a deleted bucket.
pub(crate) fn clear(store: &Store, bucket: &str) -> Result<(), StoreError> {
    let mut batch = WriteBatch::new();
    for pair in store.db().prefix(prefix(bucket))? {
        batch.delete(pair?.0);
    }
    if !batch.is_empty() {
        store.db().write(batch)?;
    }
    Ok(())
}

/// Whether a read found enough entries to fold them.
pub(crate) fn wants_fold(entries: usize) -> bool {
    entries > FOLD_AT
}
