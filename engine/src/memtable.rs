//! The memtable: an ordered, concurrent in-memory table of every version written since the last flush.
//!
//! Keys are internal keys (user key + trailer), so each version of a key is its own entry and readers at
//! older sequence numbers still find theirs. One leader writes at a time; readers never block.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use crossbeam_skiplist::SkipSet;

use crate::format::key::{self, ValueKind};
use crate::table::key_hash;

/// One memtable entry: the first eight bytes of its user key ([`key::window`]) inline, then the entry in a
/// single shared allocation, `key_len u32 | internal key | value`. Cloning it is a reference count, so
/// iterators copy entries out cheaply; the inline window decides most comparisons of a skip-list search
/// without a visit to the allocation.
#[derive(Debug, Clone)]
pub(crate) struct MemEntry {
    window: u64,
    data: Arc<[u8]>,
}

impl MemEntry {
    fn new(user_key: &[u8], trailer: u64, value: &[u8]) -> Self {
        let key_len = user_key.len() + key::TRAILER_LEN;
        let mut buf = Vec::with_capacity(4 + key_len + value.len());
        buf.extend_from_slice(&(key_len as u32).to_le_bytes());
        key::append_internal_key(&mut buf, user_key, trailer);
        buf.extend_from_slice(value);
        Self { window: key::window(user_key, 0), data: Arc::from(buf) }
    }

    /// An entry to search for: the internal key `ikey` with no value.
    fn probe(ikey: &[u8]) -> Self {
        let (user_key, trailer) = key::split(ikey);
        Self::new(user_key, trailer, &[])
    }

    fn key_len(&self) -> usize {
        self.data.get(..4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes) as usize
    }

    /// The internal key.
    pub fn key(&self) -> &[u8] {
        self.data.get(4..4 + self.key_len()).unwrap_or_default()
    }

    pub fn value(&self) -> &[u8] {
        self.data.get(4 + self.key_len()..).unwrap_or_default()
    }
}

impl PartialEq for MemEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for MemEntry {}

impl Ord for MemEntry {
    /// The internal-key order; windows order like their user keys, so unequal windows decide it.
    fn cmp(&self, other: &Self) -> Ordering {
        self.window.cmp(&other.window).then_with(|| key::compare(self.key(), other.key()))
    }
}

impl PartialOrd for MemEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

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

/// A blocked bloom filter over the user keys of a memtable, so that a point read of a key the memtable does
/// not hold (the common case for a large store) skips the skip-list descent. Each key sets
/// [`MemFilter::PROBES`] bits in one 64-bit word; the filter only ever gains bits, so it needs no lock.
#[derive(Debug)]
struct MemFilter {
    words: Box<[AtomicU64]>,
}

impl MemFilter {
    const PROBES: u32 = 4;

    /// A filter of about one byte per 32 bytes of memtable (16 bits per key for entries of 64 bytes),
    /// between 1 KiB and 2 MiB.
    fn for_memtable_size(memtable_size: usize) -> Self {
        let bytes = (memtable_size / 32).clamp(1024, 2 << 20).next_power_of_two();
        Self { words: (0..bytes / 8).map(|_| AtomicU64::new(0)).collect() }
    }

    fn mask_and_word(&self, hash: u64) -> (u64, usize) {
        let word = ((hash >> 32) as usize) & (self.words.len() - 1);
        let mut mask = 0u64;
        for i in 0..Self::PROBES {
            mask |= 1 << ((hash >> (6 * i)) & 63);
        }
        (mask, word)
    }

    fn add(&self, hash: u64) {
        let (mask, word) = self.mask_and_word(hash);
        if let Some(w) = self.words.get(word) {
            w.fetch_or(mask, AtomicOrdering::Release);
        }
    }

    fn may_contain(&self, hash: u64) -> bool {
        let (mask, word) = self.mask_and_word(hash);
        self.words.get(word).is_none_or(|w| w.load(AtomicOrdering::Acquire) & mask == mask)
    }
}

#[derive(Debug)]
pub(crate) struct Memtable {
    map: SkipSet<MemEntry>,
    filter: MemFilter,
    size: AtomicUsize,
    /// Number of the WAL started when this memtable was frozen: once this memtable is flushed, every
    /// WAL numbered below it is obsolete. Zero while the memtable is active.
    next_wal: AtomicUsize,
}

impl Memtable {
    /// An empty memtable expected to grow to about `memtable_size` bytes (which sizes its key filter).
    pub fn new(memtable_size: usize) -> Self {
        Self {
            map: SkipSet::new(),
            filter: MemFilter::for_memtable_size(memtable_size),
            size: AtomicUsize::new(0),
            next_wal: AtomicUsize::new(0),
        }
    }

    pub fn insert(&self, user_key: &[u8], seq: u64, kind: ValueKind, value: &[u8]) {
        let entry = MemEntry::new(user_key, key::make_trailer(seq, kind), value);
        self.size.fetch_add(entry.data.len() + ENTRY_OVERHEAD, AtomicOrdering::Relaxed);
        // The filter bit is set before the entry is visible, so a reader that finds the entry through the
        // skip list would also have passed the filter.
        self.filter.add(key_hash(user_key));
        self.map.insert(entry);
    }

    /// The newest version of `user_key` with a sequence `<= seq`; `hash` is [`key_hash`] of the key.
    pub fn get(&self, user_key: &[u8], seq: u64, hash: u64) -> Lookup {
        if !self.filter.may_contain(hash) {
            return Lookup::Absent;
        }
        let probe = MemEntry::new(user_key, key::seek_trailer(seq), &[]);
        let Some(found) = self.map.lower_bound(Bound::Included(&probe)) else {
            return Lookup::Absent;
        };
        let entry = found.value();
        let (ukey, trailer) = key::split(entry.key());
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

    /// Up to `max` entries from the first `>= from` (in reverse, the last `<= from`), or from the start
    /// (end) when `from` is `None`.
    pub fn chunk(&self, from: Option<&[u8]>, reverse: bool, max: usize) -> Vec<MemEntry> {
        let probe = from.map(MemEntry::probe);
        self.chunk_from(probe.as_ref().map_or(Bound::Unbounded, Bound::Included), reverse, max)
    }

    /// Up to `max` entries strictly after `last` (in reverse, strictly before), an entry a chunk returned.
    pub fn chunk_after(&self, last: &MemEntry, reverse: bool, max: usize) -> Vec<MemEntry> {
        self.chunk_from(Bound::Excluded(last), reverse, max)
    }

    fn chunk_from(&self, bound: Bound<&MemEntry>, reverse: bool, max: usize) -> Vec<MemEntry> {
        let take = |e: crossbeam_skiplist::set::Entry<'_, MemEntry>| e.value().clone();
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
        let m = Memtable::new(1 << 20);
        m.insert(b"a", 1, ValueKind::Put, b"v1");
        m.insert(b"a", 3, ValueKind::Put, b"v3");
        m.insert(b"a", 5, ValueKind::Delete, b"");
        m.insert(b"b", 2, ValueKind::Put, b"b2");
        assert_eq!(m.get(b"a", 0, key_hash(b"a")), Lookup::Absent);
        assert_eq!(m.get(b"a", 1, key_hash(b"a")), Lookup::Found(b"v1".to_vec(), 1));
        assert_eq!(m.get(b"a", 4, key_hash(b"a")), Lookup::Found(b"v3".to_vec(), 3));
        assert_eq!(m.get(b"a", 9, key_hash(b"a")), Lookup::Deleted(5));
        assert_eq!(m.get(b"b", 9, key_hash(b"b")), Lookup::Found(b"b2".to_vec(), 2));
        assert_eq!(m.get(b"c", 9, key_hash(b"c")), Lookup::Absent);
        assert_eq!(m.get(b"", 9, key_hash(b"")), Lookup::Absent);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn chunks_walk_both_directions() {
        let m = Memtable::new(1 << 20);
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            m.insert(*k, i as u64 + 1, ValueKind::Put, b"x");
        }
        let first = m.chunk(None, false, 2);
        let users = |v: &[MemEntry]| v.iter().map(|e| key::user_key(e.key()).to_vec()).collect::<Vec<_>>();
        assert_eq!(users(&first), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(first[0].value(), b"x");
        let rest = m.chunk_after(&first[1], false, 10);
        assert_eq!(users(&rest), vec![b"c".to_vec(), b"d".to_vec()]);
        let back = m.chunk(Some(first[1].key()), true, 10);
        assert_eq!(users(&back), vec![b"b".to_vec(), b"a".to_vec()]);
    }

    proptest::proptest! {
        /// Entries order exactly as their internal keys do, windows or not: keys shorter than a window,
        /// keys that differ only after it, zero bytes that look like padding, versions of one key.
        #[test]
        fn entries_order_as_internal_keys(
            a in proptest::collection::vec(proptest::prop_oneof![proptest::strategy::Just(0u8), 0u8..3], 0..12),
            b in proptest::collection::vec(proptest::prop_oneof![proptest::strategy::Just(0u8), 0u8..3], 0..12),
            (sa, sb) in (0u64..4, 0u64..4),
        ) {
            let ea = MemEntry::new(&a, key::make_trailer(sa, ValueKind::Put), b"v");
            let eb = MemEntry::new(&b, key::make_trailer(sb, ValueKind::Delete), b"");
            proptest::prop_assert_eq!(ea.cmp(&eb), key::compare(ea.key(), eb.key()));
            let probe = MemEntry::probe(eb.key());
            proptest::prop_assert_eq!(ea.cmp(&probe), key::compare(ea.key(), eb.key()));
        }
    }

    #[test]
    fn key_filter_has_no_false_negatives_and_few_false_positives() {
        // Sized for 64 MiB: 100,000 keys leave few false positives.
        let f = MemFilter::for_memtable_size(64 << 20);
        let keys: Vec<Vec<u8>> = (0..100_000u32).map(|i| format!("key-{i}").into_bytes()).collect();
        for k in &keys {
            f.add(key_hash(k));
        }
        assert!(keys.iter().all(|k| f.may_contain(key_hash(k))));
        let fp = (0..100_000u32).filter(|i| f.may_contain(key_hash(format!("other-{i}").as_bytes()))).count();
        assert!(fp < 1_000, "false positives: {fp} of 100000");
        // Overfilled (a tiny memtable's filter), it answers "maybe", never "no", for what it holds.
        let m = Memtable::new(0);
        for (i, k) in keys.iter().take(20_000).enumerate() {
            m.insert(k, i as u64 + 1, ValueKind::Put, b"v");
        }
        for (i, k) in keys.iter().take(20_000).enumerate() {
            assert_eq!(m.get(k, u64::MAX >> 8, key_hash(k)), Lookup::Found(b"v".to_vec(), i as u64 + 1));
        }
    }
}
