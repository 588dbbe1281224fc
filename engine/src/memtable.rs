//! The memtable: an ordered, concurrent in-memory table of every version written since the last flush.
//!
//! Keys are internal keys (user key + trailer), so each version of a key is its own entry and readers at
//! older sequence numbers still find theirs. One leader writes at a time; readers never block.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use crossbeam_skiplist::SkipMap;

use crate::format::key::{self, ValueKind};

/// An internal key with the engine's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemKey(pub Box<[u8]>);

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        key::compare(&self.0, &other.0)
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An entry copied out of a memtable: internal key and value.
pub(crate) type MemEntry = (Box<[u8]>, Arc<[u8]>);

/// What a point lookup found in one source.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The newest visible version is a value, written at the given sequence.
    Found(Vec<u8>, u64),
    /// The newest visible version is a tombstone, written at the given sequence.
    Deleted(u64),
    /// The source holds no visible version of the key.
    Absent,
}

/// Approximate per-entry overhead of the skip list, for accounting.
const ENTRY_OVERHEAD: usize = 64;

#[derive(Debug)]
pub(crate) struct Memtable {
    map: SkipMap<MemKey, Arc<[u8]>>,
    size: AtomicUsize,
    /// Number of the WAL started when this memtable was frozen: once this memtable is flushed, every
    /// WAL numbered below it is obsolete. Zero while the memtable is active.
    next_wal: AtomicUsize,
}

impl Memtable {
    pub fn new() -> Self {
        Self { map: SkipMap::new(), size: AtomicUsize::new(0), next_wal: AtomicUsize::new(0) }
    }

    pub fn insert(&self, user_key: &[u8], seq: u64, kind: ValueKind, value: &[u8]) {
        let ikey = key::internal_key(user_key, key::make_trailer(seq, kind));
        self.size.fetch_add(ikey.len() + value.len() + ENTRY_OVERHEAD, AtomicOrdering::Relaxed);
        self.map.insert(MemKey(ikey.into_boxed_slice()), Arc::from(value));
    }

    /// The newest version of `user_key` with a sequence `<= seq`.
    pub fn get(&self, user_key: &[u8], seq: u64) -> Lookup {
        let seek = MemKey(key::internal_key(user_key, key::seek_trailer(seq)).into_boxed_slice());
        let Some(entry) = self.map.lower_bound(Bound::Included(&seek)) else {
            return Lookup::Absent;
        };
        let (ukey, trailer) = key::split(&entry.key().0);
        if ukey != user_key {
            return Lookup::Absent;
        }
        let seq = key::trailer_seq(trailer);
        match key::trailer_kind(trailer) {
            Some(ValueKind::Put) => Lookup::Found(entry.value().to_vec(), seq),
            Some(ValueKind::Delete) | None => Lookup::Deleted(seq),
        }
    }

    pub fn approximate_size(&self) -> usize {
        self.size.load(AtomicOrdering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn freeze(&self, next_wal: u64) {
        self.next_wal.store(next_wal as usize, AtomicOrdering::Release);
    }

    pub fn next_wal(&self) -> u64 {
        self.next_wal.load(AtomicOrdering::Acquire) as u64
    }

    /// Up to `max` entries strictly after (or, in reverse, strictly before) `from`, or from the start (end)
    /// when `from` is `None`. With `inclusive`, an entry equal to `from` is included.
    pub fn chunk(&self, from: Option<&[u8]>, inclusive: bool, reverse: bool, max: usize) -> Vec<MemEntry> {
        let probe = from.map(|f| MemKey(f.into()));
        let bound = match (&probe, inclusive) {
            (None, _) => Bound::Unbounded,
            (Some(p), true) => Bound::Included(p),
            (Some(p), false) => Bound::Excluded(p),
        };
        let take = |e: crossbeam_skiplist::map::Entry<'_, MemKey, Arc<[u8]>>| (e.key().0.clone(), e.value().clone());
        if reverse {
            self.map.range((Bound::Unbounded, bound)).rev().take(max).map(take).collect()
        } else {
            self.map.range((bound, Bound::Unbounded)).take(max).map(take).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_sees_the_newest_visible_version() {
        let m = Memtable::new();
        m.insert(b"a", 1, ValueKind::Put, b"v1");
        m.insert(b"a", 3, ValueKind::Put, b"v3");
        m.insert(b"a", 5, ValueKind::Delete, b"");
        m.insert(b"b", 2, ValueKind::Put, b"b2");
        assert_eq!(m.get(b"a", 0), Lookup::Absent);
        assert_eq!(m.get(b"a", 1), Lookup::Found(b"v1".to_vec(), 1));
        assert_eq!(m.get(b"a", 4), Lookup::Found(b"v3".to_vec(), 3));
        assert_eq!(m.get(b"a", 9), Lookup::Deleted(5));
        assert_eq!(m.get(b"b", 9), Lookup::Found(b"b2".to_vec(), 2));
        assert_eq!(m.get(b"c", 9), Lookup::Absent);
        assert_eq!(m.get(b"", 9), Lookup::Absent);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn chunks_walk_both_directions() {
        let m = Memtable::new();
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            m.insert(*k, i as u64 + 1, ValueKind::Put, b"x");
        }
        let first = m.chunk(None, false, false, 2);
        assert_eq!(
            first.iter().map(|e| key::user_key(&e.0).to_vec()).collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        let rest = m.chunk(Some(&first[1].0), false, false, 10);
        assert_eq!(rest.len(), 2);
        let back = m.chunk(Some(&first[1].0), true, true, 10);
        assert_eq!(
            back.iter().map(|e| key::user_key(&e.0).to_vec()).collect::<Vec<_>>(),
            vec![b"b".to_vec(), b"a".to_vec()]
        );
    }
}
