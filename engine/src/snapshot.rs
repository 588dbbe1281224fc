//! Snapshots: reads at a fixed sequence number.

use std::collections::BTreeMap;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::db::Inner;
use crate::error::StorageError;
use crate::iter::Iter;

/// The sequence numbers that open snapshots read at, so compaction keeps what they can see.
#[derive(Debug, Default)]
pub(crate) struct SnapshotList {
    open: Mutex<BTreeMap<u64, usize>>,
}

impl SnapshotList {
    /// Registers a snapshot at the latest sequence. Reading `latest` under the list's lock orders this
    /// against [`SnapshotList::oldest`]: a compaction that computed its horizon before us used a sequence
    /// no newer than ours.
    pub fn register_latest(&self, latest: &AtomicU64) -> u64 {
        let mut open = self.open.lock();
        let seq = latest.load(Ordering::Acquire);
        *open.entry(seq).or_insert(0) += 1;
        seq
    }

    pub fn release(&self, seq: u64) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&seq) {
            *n -= 1;
            if *n == 0 {
                open.remove(&seq);
            }
        }
    }

    /// The oldest sequence an open snapshot reads at, or the latest sequence if none is open.
    pub fn oldest(&self, latest: &AtomicU64) -> u64 {
        let open = self.open.lock();
        let latest = latest.load(Ordering::Acquire);
        open.keys().next().copied().unwrap_or(latest).min(latest)
    }
}

/// A consistent, read-only view of the database as of one commit. Every read through it sees exactly the
/// commits up to [`Snapshot::sequence`], whatever is written, flushed or compacted meanwhile. Dropping it lets
/// compaction reclaim the versions it kept alive.
pub struct Snapshot {
    inner: Arc<Inner>,
    seq: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("seq", &self.seq).finish()
    }
}

impl Snapshot {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        let seq = inner.register_snapshot();
        Self { inner, seq }
    }

    /// The sequence number the snapshot reads at.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// The value of `key` as of the snapshot.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get_at(key.as_ref(), Some(self.seq))
    }

    /// Pairs with keys in `range`, ascending, as of the snapshot.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Iter, StorageError> {
        self.inner.iter_at(&range, Some(self.seq), false)
    }

    /// Pairs with keys in `range`, descending, as of the snapshot.
    pub fn range_rev<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Iter, StorageError> {
        self.inner.iter_at(&range, Some(self.seq), true)
    }

    /// Pairs whose key starts with `prefix`, ascending, as of the snapshot.
    pub fn prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Iter, StorageError> {
        self.inner.prefix_at(prefix.as_ref(), Some(self.seq), false)
    }

    /// Pairs whose key starts with `prefix`, descending, as of the snapshot.
    pub fn prefix_rev(&self, prefix: impl AsRef<[u8]>) -> Result<Iter, StorageError> {
        self.inner.prefix_at(prefix.as_ref(), Some(self.seq), true)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.inner.snapshots.release(self.seq);
    }
}
