//! Scan hints: where the live entries of an index range start, so that a queue-like range (the head of
//! PENDING jobs by priority, drained by claims) is not walked through its deleted head on every scan.
//!
//! In an LSM tree a deleted index entry stays behind as a tombstone until compaction drops it, and every
//! forward scan from the start of the range steps over all of them: claiming N jobs one after another costs
//! O(N^2). A hint records, for the lower bound `lo` of a forward index scan, the first live key `start` a
//! scan at snapshot `seq` found, i.e. that `[lo, start)` held no live entry at `seq`. A later scan at a
//! snapshot `>= seq` starts at `start` instead, unless an index entry was inserted into `[lo, start)` since.
//!
//! Soundness rests on every index insert going through [`ScanHints::begin_insert`] *before* its commit and
//! [`ScanHints::end_insert`] after it:
//! - `begin_insert` drops every hint whose skipped range holds one of the keys, so no scan that could see
//!   the new entry (its snapshot is taken after the commit, hence after `begin_insert`) finds that hint;
//! - a scan stores (or advances) a hint only if no insert that it might not have seen falls in the range
//!   it skipped: an insert it might not have seen either began after the scan read the generation (before
//!   its snapshot), or had not yet committed at a sequence at or below the scan's snapshot.

use std::collections::HashMap;

use parking_lot::Mutex;

/// Inserts remembered for checking hints; older ones are forgotten and scans that began before them do
/// not store hints.
const MAX_INSERTS: usize = 4096;
/// Hints kept; past this, all are dropped.
const MAX_HINTS: usize = 1024;

#[derive(Debug)]
struct Insert {
    generation: u64,
    keys: Vec<Vec<u8>>,
    /// Commit sequence once committed; `None` while in flight; `Some(0)` if the commit failed.
    seq: Option<u64>,
}

#[derive(Debug)]
struct Hint {
    start: Vec<u8>,
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
        s.hints.retain(|lo, h| !keys.iter().any(|k| in_range(k, lo, &h.start)));
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

    /// Where a forward scan from `lo` at snapshot `seq` may start instead of `lo`.
    pub fn start(&self, lo: &[u8], seq: u64) -> Option<Vec<u8>> {
        let s = self.state.lock();
        s.hints.get(lo).filter(|h| h.seq <= seq).map(|h| h.start.clone())
    }

    /// Records that a forward scan from `lo` at snapshot `seq`, begun with `ticket`, found no live entry
    /// before `start`.
    pub fn record(&self, ticket: ScanTicket, lo: &[u8], start: &[u8], seq: u64) {
        if start <= lo {
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
            // Keep the hint that skips further if it is usable by at least as many snapshots.
            Some(h) if h.start.as_slice() >= start && h.seq <= seq => {}
            _ => {
                s.hints.insert(lo.to_vec(), Hint { start: start.to_vec(), seq });
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

    #[test]
    fn a_hint_is_used_by_later_snapshots_and_dropped_by_inserts_below_it() {
        let h = ScanHints::default();
        let t = h.begin_scan();
        h.record(t, b"a", b"m", 10);
        assert_eq!(h.start(b"a", 10), Some(b"m".to_vec()));
        assert_eq!(h.start(b"a", 9), None, "an older snapshot may see live entries in the skipped range");
        // An insert above the hint leaves it.
        let i = h.begin_insert(vec![b"q".to_vec()]).unwrap();
        h.end_insert(i, Some(11));
        assert_eq!(h.start(b"a", 12), Some(b"m".to_vec()));
        // An insert inside the skipped range drops it, before the insert commits.
        let i = h.begin_insert(vec![b"c".to_vec()]).unwrap();
        assert_eq!(h.start(b"a", 12), None);
        h.end_insert(i, Some(12));
    }

    #[test]
    fn a_scan_that_may_have_missed_an_insert_stores_nothing() {
        let h = ScanHints::default();
        // In flight when the scan began, committed after its snapshot.
        let i = h.begin_insert(vec![b"c".to_vec()]).unwrap();
        let t = h.begin_scan();
        h.end_insert(i, Some(21));
        h.record(t, b"a", b"m", 20);
        assert_eq!(h.start(b"a", 30), None);
        // Committed at or before the snapshot: the scan saw it, so its hint stands.
        h.record(t, b"a", b"m", 21);
        assert_eq!(h.start(b"a", 30), Some(b"m".to_vec()));
        // Began after the scan read the generation: refused whatever its sequence.
        let t = h.begin_scan();
        let i = h.begin_insert(vec![b"n".to_vec()]).unwrap();
        h.end_insert(i, Some(22));
        h.record(t, b"a", b"z", 40);
        assert_eq!(h.start(b"a", 40), Some(b"m".to_vec()), "the older hint is kept, not advanced");
        // A failed insert never happened.
        let i = h.begin_insert(vec![b"p".to_vec()]).unwrap();
        h.end_insert(i, None);
        let t = h.begin_scan();
        h.record(t, b"a", b"z", 50);
        assert_eq!(h.start(b"a", 50), Some(b"z".to_vec()));
        h.reset();
        assert_eq!(h.start(b"a", 50), None);
        h.record(t, b"a", b"z", 50);
        assert_eq!(h.start(b"a", 50), None, "scans begun before a reset store nothing");
    }

    #[test]
    fn old_inserts_are_forgotten_and_scans_older_than_them_refused() {
        let h = ScanHints::default();
        let t = h.begin_scan();
        for n in 0..(MAX_INSERTS as u64 + 10) {
            let i = h.begin_insert(vec![b"zz".to_vec()]).unwrap();
            h.end_insert(i, Some(n + 1));
        }
        h.record(t, b"a", b"b", 1_000_000);
        assert_eq!(h.start(b"a", 1_000_000), None);
        let t = h.begin_scan();
        h.record(t, b"a", b"b", 1_000_000);
        assert_eq!(h.start(b"a", 1_000_000), Some(b"b".to_vec()));
    }
}
