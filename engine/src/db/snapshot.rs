//! [`Snapshot`]: a read-only handle on the database as of one commit. It registers its sequence number in
//! the snapshot list ([`crate::snapshot::SnapshotList`]) and reads through the database at that sequence.

use std::ops::RangeBounds;
use std::sync::Arc;

use crate::error::StorageError;
use crate::iter::Iter;

use super::Inner;

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
        self.get_with(key, <[u8]>::to_vec)
    }

    /// `f` applied to the value of `key` as of the snapshot, read in place (see [`Db::get_with`]).
    ///
    /// [`Db::get_with`]: crate::Db::get_with
    pub fn get_with<R>(&self, key: impl AsRef<[u8]>, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, StorageError> {
        self.inner.get_with_at(key.as_ref(), Some(self.seq), f)
    }

    /// Whether `key` was written by a commit after sequence `after` and at or before the snapshot, if the
    /// memtables alone can tell (see [`Db::written_after`]).
    ///
    /// [`Db::written_after`]: crate::Db::written_after
    pub fn written_after(&self, key: impl AsRef<[u8]>, after: u64) -> Result<Option<bool>, StorageError> {
        self.inner.written_after(key.as_ref(), after, Some(self.seq))
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
        // Tables kept for this snapshot (their tombstones, the versions they hide) may be reclaimable now: only
        // tables with entries newer than it were (the usual snapshot is newer than every table). A table
        // installed after the check below is followed by a compaction that sees this release.
        if self.inner.snapshots.release(self.seq) && self.seq < self.inner.current_view().version.max_seq {
            self.inner.bg.lock().compaction_wanted = true;
            self.inner.bg_cv.notify_all();
        }
    }
}
