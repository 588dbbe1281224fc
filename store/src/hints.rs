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
    /// The largest commit sequence of a forgotten insert.
    forgotten_seq: u64,
    /// Inserts in generation order.
    inserts: Vec<Insert>,
    /// `inserts[..settled]` have all finished, ...
    settled: usize,
    /// ... committed at sequences at or below this one.
    settled_seq: u64,
    hints: HashMap<Vec<u8>, Hint>,
}

impl State {
    /// Extends the finished prefix of `inserts` over the inserts that finished since.
    fn settle(&mut self) {
        while let Some(w) = self.inserts.get(self.settled).and_then(|i| i.seq) {
            self.settled_seq = self.settled_seq.max(w);
            self.settled += 1;
        }
    }
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
            let (mut forgotten, mut forgotten_seq) = (s.forgotten, s.forgotten_seq);
            s.inserts.retain(|i| match i.seq {
                Some(w) if dropped < excess => {
                    dropped += 1;
                    forgotten = forgotten.max(i.generation);
                    forgotten_seq = forgotten_seq.max(w);
                    false
                }
                _ => true,
            });
            (s.forgotten, s.forgotten_seq) = (forgotten, forgotten_seq);
            (s.settled, s.settled_seq) = (0, 0);
            s.settle();
        }
        Some(InsertTicket { generation })
    }

    /// Records the outcome of an insert's commit: its sequence number, or `None` if it failed.
    pub fn end_insert(&self, ticket: InsertTicket, committed: Option<u64>) {
        let mut s = self.state.lock();
        if let Ok(at) = s.inserts.binary_search_by_key(&ticket.generation, |i| i.generation) {
            s.inserts[at].seq = Some(committed.unwrap_or(0));
            s.settle();
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
        // A forgotten insert may be one this scan did not see: the scan began before it, or took its snapshot
        // before it committed.
        if ticket.generation < s.forgotten || seq < s.forgotten_seq {
            return;
        }
        // The finished prefix is seen as a whole when it began before the scan and committed at or below its
        // snapshot: only the inserts after it are checked one by one.
        let prefix_seen = s.inserts[..s.settled].last().is_none_or(|last| last.generation <= ticket.generation)
            && s.settled_seq <= seq;
        let from = if prefix_seen { s.settled } else { 0 };
        let unseen = |i: &Insert| i.generation > ticket.generation || i.seq.is_none_or(|w| w > seq);
        if s.inserts[from..].iter().filter(|i| unseen(i)).any(|i| i.keys.iter().any(|k| in_range(k, lo, start))) {
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
    fn a_forgotten_insert_that_committed_after_a_scan_s_snapshot_refuses_its_hint() {
        let h = ScanHints::default();
        // In flight while 3,000 other inserts (outside the range) begin and commit, then the scan begins.
        let late = h.begin_insert(vec![b"c".to_vec()]).unwrap();
        for n in 0..3000 {
            let i = h.begin_insert(vec![b"zz".to_vec()]).unwrap();
            h.end_insert(i, Some(n + 1));
        }
        let t = h.begin_scan();
        // It commits after the scan's snapshot (3,000), and enough inserts follow for it to be forgotten
        // while the scan runs (once: the inserts forgotten all began before the scan, so their generations
        // do not refuse it).
        h.end_insert(late, Some(3001));
        for n in 0..(MAX_INSERTS as u64 + 1 - 3001) {
            let i = h.begin_insert(vec![b"zz".to_vec()]).unwrap();
            h.end_insert(i, Some(3002 + n));
        }
        h.record(t, b"a", b"m", 3000, vec![]);
        assert_eq!(start_of(&h, b"a", 10_000), None, "the scan did not see `c`, live in [a, m)");
        let t = h.begin_scan();
        h.record(t, b"a", b"m", 10_000, vec![b"c".to_vec()]);
        let hint = h.start(b"a", 10_000).unwrap();
        assert_eq!((hint.start.as_slice(), hint.exceptions), (&b"m"[..], vec![b"c".to_vec()]));
    }

    #[test]
    fn a_scan_checks_each_insert_after_an_unfinished_one() {
        let h = ScanHints::default();
        let first = h.begin_insert(vec![b"zz".to_vec()]).unwrap();
        let second = h.begin_insert(vec![b"c".to_vec()]).unwrap();
        // The second commits first, after the scan's snapshot; the first is still in flight.
        let t = h.begin_scan();
        h.end_insert(second, Some(31));
        h.record(t, b"a", b"m", 30, vec![]);
        assert_eq!(start_of(&h, b"a", 40), None, "`c` committed after the snapshot");
        h.end_insert(first, Some(32));
        let t = h.begin_scan();
        h.record(t, b"a", b"m", 32, vec![]);
        assert_eq!(start_of(&h, b"a", 40), Some(b"m".to_vec()));
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
