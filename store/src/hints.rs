//! Scan hints: where the live entries of an index range start, so that a queue-like range (the head of
//! PENDING jobs by priority, drained by claims) is not walked through its deleted head on every scan.
//!
//! In an LSM tree a deleted index entry stays behind as a tombstone until compaction drops it, and every
//! forward scan from the start of the range steps over all of them: claiming N jobs one after another costs
//! O(N^2). A hint records, for the lower bound `lo` of a forward index scan, the first live key `start` a
//! scan at snapshot `seq` found, i.e. that `[lo, start)` held no live entry at `seq`, and the
//! **exceptions**: keys inserted into `[lo, start)` since (at most [`MAX_EXCEPTIONS`]), the only entries of
//! that range that may be live at a later snapshot. A later scan at a snapshot `>= seq` reads the exceptions
//! by key and starts its range at `start`, so a queue whose head takes new jobs while claims drain it (new
//! urgent work arriving) is still not walked through its tombstones; a scan that finishes the range's head
//! records the hint again at its own snapshot, with only the exceptions it found live.
//!
//! Soundness rests on every index insert going through [`ScanHints::begin_insert`] *before* its commit and
//! [`ScanHints::end_insert`] after it:
//! - `begin_insert` adds each key that falls in a hint's skipped range to its exceptions (or drops the hint
//!   when they would be too many), so no scan that could see the new entry (its snapshot is taken after the
//!   commit, hence after `begin_insert`) skips it;
//! - a scan stores (or advances) a hint only if no insert that it might not have seen falls in the range
//!   it skipped: an insert it might not have seen either began after the scan read the generation (before
//!   its snapshot), or had not yet committed at a sequence at or below the scan's snapshot.

use std::collections::HashMap;

use cairn_engine::{Snapshot, StorageError};
use parking_lot::Mutex;

/// Inserts remembered for checking hints; older ones are forgotten and scans that began before them do
/// not store hints.
const MAX_INSERTS: usize = 4096;
/// Hints kept; past this, all are dropped.
const MAX_HINTS: usize = 1024;
/// Exceptions a hint holds at most (each costs a scan a point read); past this the hint is dropped.
pub(crate) const MAX_EXCEPTIONS: usize = 32;

#[derive(Debug)]
struct Insert {
    generation: u64,
    keys: Vec<Vec<u8>>,
    /// Commit sequence once committed; `None` while in flight; `Some(0)` if the commit failed.
    seq: Option<u64>,
}

/// What a forward scan from a hinted lower bound may skip: only `exceptions` (sorted, each below `start`)
/// may be live in `[lo, start)` at snapshots at or after the one the hint was recorded at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hint {
    /// Where the scan's range may start.
    pub(crate) start: Vec<u8>,
    /// Keys below `start` to read one by one, in order.
    pub(crate) exceptions: Vec<Vec<u8>>,
    seq: u64,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    /// Generations at or below this were forgotten.
    forgotten: u64,
    inserts: Vec<Insert>,
    hints: HashMap<Vec<u8>, Hint>,
}

/// Index entries (key and value) in key order.
pub(crate) type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The hints of one store.
#[derive(Debug, Default)]
pub(crate) struct ScanHints {
    state: Mutex<State>,
}

/// A scan in progress: what it needs to store a hint when it finds its first live key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanTicket {
    generation: u64,
}

/// An insert in progress, to be ended with [`ScanHints::end_insert`].
#[derive(Debug)]
#[must_use]
pub(crate) struct InsertTicket {
    generation: u64,
}

fn in_range(key: &[u8], lo: &[u8], end: &[u8]) -> bool {
    key >= lo && key < end
}

impl ScanHints {
    /// Registers index keys about to be inserted by a commit.
    pub fn begin_insert(&self, keys: Vec<Vec<u8>>) -> Option<InsertTicket> {
        if keys.is_empty() {
            return None;
        }
        let mut s = self.state.lock();
        s.hints.retain(|lo, h| {
            for k in keys.iter().filter(|k| in_range(k, lo, &h.start)) {
                if let Err(at) = h.exceptions.binary_search(k) {
                    h.exceptions.insert(at, k.clone());
                }
            }
            h.exceptions.len() <= MAX_EXCEPTIONS
        });
        s.generation += 1;
        let generation = s.generation;
        s.inserts.push(Insert { generation, keys, seq: None });
        if s.inserts.len() > MAX_INSERTS {
            // Forget the oldest finished inserts; in-flight ones stay.
            let excess = s.inserts.len() - MAX_INSERTS / 2;
            let mut dropped = 0;
            let mut forgotten = s.forgotten;
            s.inserts.retain(|i| {
                if dropped < excess && i.seq.is_some() {
                    dropped += 1;
                    forgotten = forgotten.max(i.generation);
                    false
                } else {
                    true
                }
            });
            s.forgotten = forgotten;
        }
        Some(InsertTicket { generation })
    }

    /// Records the outcome of an insert's commit: its sequence number, or `None` if it failed.
    pub fn end_insert(&self, ticket: InsertTicket, committed: Option<u64>) {
        let mut s = self.state.lock();
        if let Some(i) = s.inserts.iter_mut().find(|i| i.generation == ticket.generation) {
            i.seq = Some(committed.unwrap_or(0));
        }
    }

    /// Called before a scan takes its snapshot.
    pub fn begin_scan(&self) -> ScanTicket {
        ScanTicket { generation: self.state.lock().generation }
    }

    /// Where a forward scan from `lo` at snapshot `seq` may start instead of `lo`, and the keys before
    /// that it must read by key.
    pub fn start(&self, lo: &[u8], seq: u64) -> Option<Hint> {
        let s = self.state.lock();
        s.hints.get(lo).filter(|h| h.seq <= seq).cloned()
    }

    /// Where a forward scan from `lo` at `snap` starts (`lo` without a hint), and the entries it visits
    /// first: the hint's exceptions that `below` accepts (those under the scan's upper bound) and that are
    /// live at `snap`, in order, with their values.
    pub fn resume(
        &self,
        snap: &Snapshot,
        lo: &[u8],
        below: impl Fn(&[u8]) -> bool,
    ) -> Result<(Vec<u8>, Entries), StorageError> {
        let Some(hint) = self.start(lo, snap.sequence()) else { return Ok((lo.to_vec(), Vec::new())) };
        let mut live = Vec::new();
        for key in hint.exceptions.into_iter().filter(|k| below(k)) {
            if let Some(value) = snap.get(&key)? {
                live.push((key, value));
            }
        }
        Ok((hint.start, live))
    }

    /// Records that a forward scan from `lo` at snapshot `seq`, begun with `ticket`, found no live entry
    /// before `start` but `exceptions` (sorted; at most [`MAX_EXCEPTIONS`] are kept).
    pub fn record(&self, ticket: ScanTicket, lo: &[u8], start: &[u8], seq: u64, exceptions: Vec<Vec<u8>>) {
        if start <= lo || exceptions.len() > MAX_EXCEPTIONS {
            return;
        }
        let mut s = self.state.lock();
        if ticket.generation < s.forgotten {
            return;
        }
        let unseen = |i: &Insert| i.generation > ticket.generation || i.seq.is_none_or(|w| w > seq);
        if s.inserts.iter().filter(|i| unseen(i)).any(|i| i.keys.iter().any(|k| in_range(k, lo, start))) {
            return;
        }
        if s.hints.len() >= MAX_HINTS && !s.hints.contains_key(lo) {
            s.hints.clear();
        }
        match s.hints.get_mut(lo) {
            // Keep the hint that skips further, with no more exceptions, if it is usable by at least as many
            // snapshots.
            Some(h) if h.start.as_slice() >= start && h.exceptions.len() <= exceptions.len() && h.seq <= seq => {}
            _ => {
                s.hints.insert(lo.to_vec(), Hint { start: start.to_vec(), exceptions, seq });
            }
        }
    }

    /// Forgets every hint and refuses those of scans already running (after index entries were written
    /// outside transactions, e.g. by an index build).
    pub fn reset(&self) {
        let mut s = self.state.lock();
        s.hints.clear();
        s.generation += 1;
        s.forgotten = s.generation;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of the hint for `lo` at `seq`, if it has no exceptions.
    fn start_of(h: &ScanHints, lo: &[u8], seq: u64) -> Option<Vec<u8>> {
        h.start(lo, seq).map(|h| {
            assert!(h.exceptions.is_empty(), "unexpected exceptions {:?}", h.exceptions);
            h.start
        })
    }

    #[test]
    fn a_hint_is_used_by_later_snapshots_and_dropped_by_inserts_below_it() {
        let h = ScanHints::default();
        let t = h.begin_scan();
        h.record(t, b"a", b"m", 10, vec![]);
        assert_eq!(start_of(&h, b"a", 10), Some(b"m".to_vec()));
        assert_eq!(start_of(&h, b"a", 9), None, "an older snapshot may see live entries in the skipped range");
        // An insert above the hint leaves it.
        let i = h.begin_insert(vec![b"q".to_vec()]).unwrap();
        h.end_insert(i, Some(11));
        assert_eq!(start_of(&h, b"a", 12), Some(b"m".to_vec()));
        // An insert inside the skipped range becomes an exception, before the insert commits.
        let i = h.begin_insert(vec![b"c".to_vec()]).unwrap();
        let hint = h.start(b"a", 12).unwrap();
        assert_eq!((hint.start.as_slice(), hint.exceptions), (&b"m"[..], vec![b"c".to_vec()]));
        h.end_insert(i, Some(12));
    }

    #[test]
    fn inserts_into_the_skipped_range_are_exceptions_until_too_many() {
        let h = ScanHints::default();
        let t = h.begin_scan();
        h.record(t, b"a", b"m", 10, vec![]);
        // Sorted, without duplicates; keys at `start` and above are not exceptions.
        for keys in [vec![b"k".to_vec(), b"b".to_vec()], vec![b"k".to_vec(), b"m".to_vec(), b"x".to_vec()]] {
            let i = h.begin_insert(keys).unwrap();
            h.end_insert(i, Some(11));
        }
        let hint = h.start(b"a", 11).unwrap();
        assert_eq!(hint.start, b"m");
        assert_eq!(hint.exceptions, vec![b"b".to_vec(), b"k".to_vec()]);
        // A scan that saw every insert records the exceptions it found live: the hint has fewer.
        let t = h.begin_scan();
        h.record(t, b"a", b"n", 12, vec![b"k".to_vec()]);
        let hint = h.start(b"a", 12).unwrap();
        assert_eq!((hint.start.as_slice(), hint.exceptions), (&b"n"[..], vec![b"k".to_vec()]));
        // One exception too many drops the hint.
        let keys: Vec<Vec<u8>> = (0..MAX_EXCEPTIONS as u8).map(|n| vec![b'c', n]).collect();
        let i = h.begin_insert(keys).unwrap();
        h.end_insert(i, Some(13));
        assert_eq!(h.start(b"a", 13), None);
        // A scan may not record more than the most exceptions either.
        let t = h.begin_scan();
        let many: Vec<Vec<u8>> = (0..=MAX_EXCEPTIONS as u8).map(|n| vec![b'c', n]).collect();
        h.record(t, b"a", b"n", 14, many);
        assert_eq!(h.start(b"a", 14), None);
    }

    #[test]
    fn a_scan_that_may_have_missed_an_insert_stores_nothing() {
        let h = ScanHints::default();
        // In flight when the scan began, committed after its snapshot.
        let i = h.begin_insert(vec![b"c".to_vec()]).unwrap();
        let t = h.begin_scan();
        h.end_insert(i, Some(21));
        h.record(t, b"a", b"m", 20, vec![]);
        assert_eq!(start_of(&h, b"a", 30), None);
        // Committed at or before the snapshot: the scan saw it, so its hint stands.
        h.record(t, b"a", b"m", 21, vec![]);
        assert_eq!(start_of(&h, b"a", 30), Some(b"m".to_vec()));
        // Began after the scan read the generation: refused whatever its sequence.
        let t = h.begin_scan();
        let i = h.begin_insert(vec![b"n".to_vec()]).unwrap();
        h.end_insert(i, Some(22));
        h.record(t, b"a", b"z", 40, vec![]);
        assert_eq!(start_of(&h, b"a", 40), Some(b"m".to_vec()), "the older hint is kept, not advanced");
        // A failed insert never happened.
        let i = h.begin_insert(vec![b"p".to_vec()]).unwrap();
        h.end_insert(i, None);
        let t = h.begin_scan();
        h.record(t, b"a", b"z", 50, vec![]);
        assert_eq!(start_of(&h, b"a", 50), Some(b"z".to_vec()));
        h.reset();
        assert_eq!(start_of(&h, b"a", 50), None);
        h.record(t, b"a", b"z", 50, vec![]);
        assert_eq!(start_of(&h, b"a", 50), None, "scans begun before a reset store nothing");
    }

    #[test]
    fn old_inserts_are_forgotten_and_scans_older_than_them_refused() {
        let h = ScanHints::default();
        let t = h.begin_scan();
        for n in 0..(MAX_INSERTS as u64 + 10) {
            let i = h.begin_insert(vec![b"zz".to_vec()]).unwrap();
            h.end_insert(i, Some(n + 1));
        }
        h.record(t, b"a", b"b", 1_000_000, vec![]);
        assert_eq!(start_of(&h, b"a", 1_000_000), None);
        let t = h.begin_scan();
        h.record(t, b"a", b"b", 1_000_000, vec![]);
        assert_eq!(start_of(&h, b"a", 1_000_000), Some(b"b".to_vec()));
    }
}
