//! The snapshot list: the sequence numbers open snapshots read at, so that compaction keeps the versions
//! they can see. The [`Snapshot`](crate::Snapshot) handle users read through is the database's
//! (`db/snapshot.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

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

    /// Releases one registration of `seq`. Returns whether the oldest open snapshot moved on (or none is
    /// left): what compaction may drop grew.
    pub fn release(&self, seq: u64) -> bool {
        let mut open = self.open.lock();
        let was_oldest = open.keys().next() == Some(&seq);
        if let Some(n) = open.get_mut(&seq) {
            *n -= 1;
            if *n == 0 {
                open.remove(&seq);
                return was_oldest;
            }
        }
        false
    }

    /// The oldest sequence an open snapshot reads at, or the latest sequence if none is open.
    pub fn oldest(&self, latest: &AtomicU64) -> u64 {
        let open = self.open.lock();
        let latest = latest.load(Ordering::Acquire);
        open.keys().next().copied().unwrap_or(latest).min(latest)
    }
}
