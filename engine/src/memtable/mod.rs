//! The memtable: an ordered, concurrent in-memory table of every version written since the last flush.
//!
//! Keys are internal keys (user key + trailer), so each version of a key is its own entry and readers at
//! older sequence numbers still find theirs. One leader writes at a time; readers never block.

mod filter;
mod fingers;
mod index;
mod skiplist;
mod zeroed;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::format::key::{self, key_hash, ValueKind};
use filter::MemFilter;
use fingers::{Fingers, MAX_WALK};
use index::{KeyIndex, Probe};
use skiplist::{Node, SkipList, Target};

/// Versions of a key newer than a reader's snapshot that a point read walks from the index's newest before
/// it seeks the first one it may see instead.
const WALK_BEFORE_SEEK: usize = 16;
/// Entries ahead of the one being inserted whose key-index slot and filter word [`Memtable::insert_all`]
/// asks for.
const LOOKAHEAD: usize = 8;
/// Entries a memtable holds before its first fingers are built: a smaller list's descent is short and
/// mostly in the CPU's caches.
const FINGERS_FROM: usize = 4096;
/// Memtable bytes per finger at most (a finger takes 16.5 bytes): the fingers take at most a sixteenth of
/// the memtable's size, a stride over the nodes keeping them there when entries are smaller than this.
const BYTES_PER_FINGER: usize = 272;

/// What a point lookup found in one source. The value is whatever the source lends it as: a slice of a
/// memtable node, a position in a cached block ([`crate::table::BlockValue`]), or owned bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<V = Vec<u8>> {
    /// The newest visible version is a value, written at the given sequence.
    Found(V, u64),
    /// The newest visible version is a tombstone, written at the given sequence.
    Deleted(u64),
    /// The source holds no visible version of the key.
    Absent,
}

impl<V> Lookup<V> {
    /// The same answer with the value passed through `f`.
    pub fn map<W>(self, f: impl FnOnce(V) -> W) -> Lookup<W> {
        match self {
            Lookup::Found(v, seq) => Lookup::Found(f(v), seq),
            Lookup::Deleted(seq) => Lookup::Deleted(seq),
            Lookup::Absent => Lookup::Absent,
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Lookup::Absent)
    }
}

impl<V: AsRef<[u8]>> Lookup<V> {
    /// The same answer with the value copied out.
    #[cfg(test)]
    pub fn owned(self) -> Lookup {
        self.map(|v| v.as_ref().to_vec())
    }
}

/// One version to insert (see [`Memtable::insert_all`]), with its user key's window for the sort and its
/// hash for the filter, both taken while the key is in the cache (a sorted batch visits keys out of order).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Put<'a> {
    window: u64,
    hash: u64,
    user_key: &'a [u8],
    seq: u64,
    kind: ValueKind,
    value: &'a [u8],
}

impl<'a> Put<'a> {
    pub fn new(user_key: &'a [u8], seq: u64, kind: ValueKind, value: &'a [u8]) -> Self {
        Self { window: key::window(user_key, 0), hash: key_hash(user_key), user_key, seq, kind, value }
    }
}

#[derive(Debug)]
pub(crate) struct Memtable {
    list: SkipList,
    filter: MemFilter,
    /// The node of each user key's newest version, for point reads.
    index: KeyIndex,
    /// Where seeks start (see [`fingers`]); `None` until the flush thread first builds them.
    fingers: ArcSwapOption<Fingers>,
    /// Entries at which the fingers are due to be built again ([`Memtable::fingers_due`]).
    fingers_due: AtomicUsize,
    /// Whether a seek has run since the fingers were last built: a memtable only written, or read by
    /// point reads that its key index answers, is not walked for fingers no seek would use.
    sought: AtomicBool,
    /// Most fingers: [`BYTES_PER_FINGER`] of the expected size each.
    max_fingers: usize,
    /// Number of the WAL started when this memtable was frozen: once this memtable is flushed, every
    /// WAL numbered below it is obsolete. Zero while the memtable is active.
    next_wal: AtomicUsize,
}

impl Memtable {
    /// An empty memtable expected to grow to about `memtable_size` bytes (which sizes its key filter and
    /// key index).
    pub fn new(memtable_size: usize) -> Self {
        Self {
            list: SkipList::new(),
            filter: MemFilter::for_memtable_size(memtable_size),
            index: KeyIndex::for_memtable_size(memtable_size),
            fingers: ArcSwapOption::empty(),
            fingers_due: AtomicUsize::new(FINGERS_FROM),
            sought: AtomicBool::new(false),
            max_fingers: (memtable_size / BYTES_PER_FINGER).max(1),
            next_wal: AtomicUsize::new(0),
        }
    }

    /// Whether [`Memtable::build_fingers`] should run: the memtable has been sought since its fingers
    /// were built, and has grown by half since (or holds [`FINGERS_FROM`] entries and has none).
    pub fn fingers_due(&self) -> bool {
        self.list.len() >= self.fingers_due.load(AtomicOrdering::Relaxed) && self.sought.load(AtomicOrdering::Relaxed)
    }

    /// Notes that a seek ran (written only when not noted yet, so that seeks on several cores do not take
    /// the line from each other).
    fn note_seek(&self) {
        if !self.sought.load(AtomicOrdering::Relaxed) {
            self.sought.store(true, AtomicOrdering::Relaxed);
        }
    }

    /// Builds the fingers from the entries now in the memtable and puts them in place of the last: a
    /// walk of every entry, which the flush thread runs once the memtable holds half as many entries
    /// again as when it last did. One caller at a time. A memtable frozen meanwhile keeps its last
    /// fingers: the walk stops, and the thread goes on to flush it.
    pub fn build_fingers(&self) {
        self.sought.store(false, AtomicOrdering::Relaxed);
        let len = self.list.len();
        let frozen = || self.next_wal() != 0;
        if let Some(fingers) = Fingers::build(&self.list, len.div_ceil(self.max_fingers), frozen) {
            self.fingers.store(Some(Arc::new(fingers)));
        }
        self.fingers_due.store((len + len / 2).max(FINGERS_FROM), AtomicOrdering::Relaxed);
    }

    /// Bytes the fingers hold (0 before they are first built).
    #[cfg(test)]
    pub fn fingers_bytes(&self) -> usize {
        self.fingers.load().as_ref().map_or(0, |f| f.bytes())
    }

    /// The first entry whose key is not before the internal key `target`: from the fingers alone when
    /// they hold every entry, else from the key index when it holds the key (see
    /// [`Memtable::seek_indexed`]), else as [`Memtable::seek_ge`] finds it. Either way the entries a scan
    /// reads next are asked for: by the fingers (which read no node), or from the node found, which the
    /// other ways have read.
    fn seek_ge_internal(&self, target: &[u8]) -> Option<Node> {
        self.note_seek();
        let t = Target::from_internal(target);
        let fingers = self.fingers.load();
        if let Some(fingers) = fingers.as_deref() {
            // SAFETY: the fingers hold nodes of `self.list`, alive while `self` is borrowed.
            if let Some(found) = unsafe { fingers.first_not_before(&t, self.list.len()) } {
                return found;
            }
        }
        let found = self.seek_indexed(target).or_else(|| self.seek_ge_from(fingers.as_deref(), &t));
        if let Some(n) = found {
            // SAFETY: a node of `self.list`, alive while `self` is borrowed.
            unsafe { n.prefetch_successor() };
        }
        found
    }

    /// Starts loading the lines of the fingers that a seek to the internal key `target` searches after
    /// their sampled windows, without waiting for them.
    fn prepare_seek(&self, target: &[u8]) {
        if let Some(fingers) = self.fingers.load().as_deref() {
            fingers.prepare(Target::from_internal(target).window());
        }
    }

    /// The first entry whose key is not before `target`.
    fn seek_ge(&self, target: &Target<'_>) -> Option<Node> {
        self.note_seek();
        self.seek_ge_from(self.fingers.load().as_deref(), target)
    }

    /// [`Memtable::seek_ge`] with the fingers the caller loaded.
    fn seek_ge_from(&self, fingers: Option<&Fingers>, target: &Target<'_>) -> Option<Node> {
        self.walk_from(fingers, target, false).map_or_else(|| self.list.seek_ge(target), |(_, after)| after)
    }

    /// The last entry whose key is not after `target`.
    fn seek_le(&self, target: &Target<'_>) -> Option<Node> {
        self.note_seek();
        let fingers = self.fingers.load();
        self.walk_from(fingers.as_deref(), target, true).map_or_else(|| self.list.seek_le(target), |(before, _)| before)
    }

    /// The boundary `target` draws (see [`SkipList::walk`]), walked from `fingers` if they are built and few
    /// entries were added near the target since; `None` to descend the list instead.
    fn walk_from(
        &self,
        fingers: Option<&Fingers>,
        target: &Target<'_>,
        past_equal: bool,
    ) -> Option<(Option<Node>, Option<Node>)> {
        // SAFETY: the fingers hold nodes of `self.list`, alive while `self` is borrowed.
        let from = unsafe { fingers?.before(target) };
        self.list.walk(from, target, past_equal, MAX_WALK)
    }

    /// Adds a version; `(user_key, seq)` must be new to this memtable (every entry has its own sequence).
    #[cfg(test)]
    pub fn insert(&self, user_key: &[u8], seq: u64, kind: ValueKind, value: &[u8]) {
        self.insert_all(&mut [Put::new(user_key, seq, kind, value)]);
    }

    /// Adds versions, as [`Memtable::insert`] does one; sorts `entries` into internal-key order first, so
    /// that each insert starts where the one before it went (a skip-list search from the top is most of
    /// an insert's cost, and a batch's keys often cluster: ascending ids, one index's entries; replayed
    /// into an empty memtable, sorted entries are appends).
    pub fn insert_all(&self, entries: &mut [Put<'_>]) {
        entries.sort_unstable_by(|a, b| {
            a.window.cmp(&b.window).then_with(|| a.user_key.cmp(b.user_key)).then_with(|| b.seq.cmp(&a.seq))
        });
        let mut inserter = self.list.inserter();
        let mut previous: Option<&[u8]> = None;
        // The key index's slot and the filter's word of a key are random lines: ask for those of the
        // entry a few places ahead, so that its misses overlap this entry's insert.
        for put in entries.iter().take(LOOKAHEAD) {
            self.prefetch_for(put.hash);
        }
        for (i, put) in entries.iter().enumerate() {
            if let Some(ahead) = entries.get(i + LOOKAHEAD) {
                self.prefetch_for(ahead.hash);
            }
            // The filter bit is set before the entry is visible, so a reader that finds the entry through
            // the skip list would also have passed the filter.
            self.filter.add(put.hash);
            let node = inserter.insert(put.user_key, key::make_trailer(put.seq, put.kind), put.value);
            // A key's versions in one group are sorted newest first: the first of a run is the newest.
            if previous != Some(put.user_key) {
                // SAFETY: `node` and every node indexed belong to `self.list`, alive while `self` is.
                unsafe { self.index.insert(put.hash, put.user_key, node) };
            }
            previous = Some(put.user_key);
        }
    }

    /// Starts loading the key index's first slot and the filter's word for a key of hash `hash`.
    fn prefetch_for(&self, hash: u64) {
        self.index.prefetch(hash);
        self.filter.prefetch(hash);
    }

    /// The first entry at or after the internal key `target`, if the key index can answer: when the memtable
    /// holds `target`'s user key and its newest version is not newer than `target` (versions sort newest
    /// first, so that version is the first entry at or after it). `None` to search the list: the key is not
    /// held, or was written after the target's sequence. A seek to an existing key (a page's cursor, a scan
    /// from a key just read) then costs a probe of the index rather than a descent of cold nodes.
    fn seek_indexed(&self, target: &[u8]) -> Option<Node> {
        let user_key = key::user_key(target);
        // SAFETY: the index holds nodes of `self.list`, alive while `self` is borrowed.
        let Probe::Found(node) = (unsafe { self.index.find(key_hash(user_key), user_key) }) else { return None };
        // SAFETY: as above.
        (key::compare(unsafe { node.key() }, target) != std::cmp::Ordering::Less).then_some(node)
    }

    /// The newest version of `user_key` with a sequence `<= seq`, its value read in place; `hash` is
    /// [`key_hash`] of the key.
    pub fn get(&self, user_key: &[u8], seq: u64, hash: u64) -> Lookup<&[u8]> {
        // The index answers first (a slot, then the node); the filter only keeps a key the index left out
        // of an overflowed index from a descent, as it costs a cache miss of its own.
        // SAFETY: the index holds nodes of `self.list`, alive while `self` is borrowed.
        let mut node = match unsafe { self.index.find(hash, user_key) } {
            Probe::Found(node) => node,
            Probe::Absent => return Lookup::Absent,
            Probe::Unknown if !self.filter.may_contain(hash) => return Lookup::Absent,
            Probe::Unknown => match self.seek_ge(&Target::new(user_key, key::seek_trailer(seq))) {
                Some(node) => node,
                None => return Lookup::Absent,
            },
        };
        // From the newest version (or the first at or below `seq`), older versions follow at level 0. A reader
        // far behind a key rewritten many times since its snapshot seeks past the newer versions rather than
        // walking them one by one.
        let mut newer = 0usize;
        loop {
            // SAFETY: `node` belongs to `self.list`, alive while `self` is borrowed.
            let (ikey, value) = unsafe { (node.key(), node.value()) };
            let (ukey, trailer) = key::split(ikey);
            if ukey != user_key {
                return Lookup::Absent;
            }
            let found = key::trailer_seq(trailer);
            if found <= seq {
                return match key::trailer_kind(trailer) {
                    Some(ValueKind::Put) => Lookup::Found(value, found),
                    Some(ValueKind::Delete) | None => Lookup::Deleted(found),
                };
            }
            newer += 1;
            if newer == WALK_BEFORE_SEEK {
                match self.seek_ge(&Target::new(user_key, key::seek_trailer(seq))) {
                    Some(next) => node = next,
                    None => return Lookup::Absent,
                }
                continue;
            }
            // SAFETY: as above.
            match unsafe { node.successor() } {
                Some(next) => node = next,
                None => return Lookup::Absent,
            }
        }
    }

    /// Bytes the entries take, the skip list's links and headers included.
    pub fn approximate_size(&self) -> usize {
        self.list.bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.list.len() == 0
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn freeze(&self, next_wal: u64) {
        self.next_wal.store(next_wal as usize, AtomicOrdering::Release);
    }

    pub fn next_wal(&self) -> u64 {
        self.next_wal.load(AtomicOrdering::Acquire) as u64
    }
}

/// A position in a memtable that keeps the memtable alive: entries are read in place, with no copies.
pub(crate) struct MemCursor {
    mem: Arc<Memtable>,
    node: Option<Node>,
}

impl MemCursor {
    /// A cursor on no entry.
    pub fn new(mem: Arc<Memtable>) -> Self {
        Self { mem, node: None }
    }

    /// Moves to the first entry `>= target` (the first entry if `None`).
    pub fn seek_ge(&mut self, target: Option<&[u8]>) {
        match target {
            Some(t) => self.node = self.mem.seek_ge_internal(t),
            None => {
                self.node = self.mem.list.first();
                self.prefetch_ahead(true);
            }
        }
    }

    /// Starts loading what [`MemCursor::seek_ge`] to `target` reads first (see [`Memtable::prepare_seek`]).
    pub fn prepare_seek(&self, target: &[u8]) {
        self.mem.prepare_seek(target);
    }

    /// Starts loading the entry after the current one in the direction of a scan (forward only: level 0's
    /// backward links are read when a step takes them).
    fn prefetch_ahead(&self, forward: bool) {
        if let (true, Some(n)) = (forward, self.node) {
            // SAFETY: the node belongs to `self.mem`'s list, which `self` keeps alive.
            unsafe { n.prefetch_successor() };
        }
    }

    /// Moves to the last entry `<= target` (the last entry if `None`).
    pub fn seek_le(&mut self, target: Option<&[u8]>) {
        let list = &self.mem.list;
        self.node = match target {
            Some(t) => self.mem.seek_le(&Target::from_internal(t)),
            None => list.last(),
        };
    }

    /// Moves to the next entry (`forward`) or the previous one.
    pub fn step(&mut self, forward: bool) {
        // SAFETY: the node belongs to `self.mem`'s list, which `self` keeps alive.
        self.node = self.node.and_then(|n| unsafe {
            if forward {
                n.successor()
            } else {
                n.predecessor()
            }
        });
        self.prefetch_ahead(forward);
    }

    /// The current internal key, or `None` off the ends.
    pub fn key(&self) -> Option<&[u8]> {
        // SAFETY: as in `step`; the slice borrows `self`, which holds the list.
        self.node.map(|n| unsafe { n.key() })
    }

    /// The current value (empty off the ends).
    pub fn value(&self) -> &[u8] {
        // SAFETY: as in `key`.
        self.node.map(|n| unsafe { n.value() }).unwrap_or_default()
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
        assert_eq!(m.get(b"a", 0, key_hash(b"a")).owned(), Lookup::Absent);
        assert_eq!(m.get(b"a", 1, key_hash(b"a")).owned(), Lookup::Found(b"v1".to_vec(), 1));
        assert_eq!(m.get(b"a", 4, key_hash(b"a")).owned(), Lookup::Found(b"v3".to_vec(), 3));
        assert_eq!(m.get(b"a", 9, key_hash(b"a")).owned(), Lookup::Deleted(5));
        assert_eq!(m.get(b"b", 9, key_hash(b"b")).owned(), Lookup::Found(b"b2".to_vec(), 2));
        assert_eq!(m.get(b"c", 9, key_hash(b"c")).owned(), Lookup::Absent);
        assert_eq!(m.get(b"", 9, key_hash(b"")).owned(), Lookup::Absent);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn a_reader_far_behind_a_rewritten_key_sees_its_version() {
        // 100 versions of "hot" between keys on either side; every snapshot sees exactly its own, from the
        // newest few (walked) to the oldest (sought past the newer ones).
        let m = Memtable::new(1 << 20);
        m.insert(b"cold-a", 1, ValueKind::Put, b"a");
        for seq in 2..=101u64 {
            m.insert(b"hot", seq, ValueKind::Put, format!("v{seq}").as_bytes());
        }
        m.insert(b"hot-z", 102, ValueKind::Put, b"z");
        let h = key_hash(b"hot");
        assert_eq!(m.get(b"hot", 1, h).owned(), Lookup::Absent);
        for seq in 2..=101u64 {
            assert_eq!(m.get(b"hot", seq, h).owned(), Lookup::Found(format!("v{seq}").into_bytes(), seq));
        }
        assert_eq!(m.get(b"hot", 500, h).owned(), Lookup::Found(b"v101".to_vec(), 101));
    }

    #[test]
    fn cursors_walk_both_directions_and_keep_the_memtable_alive() {
        let m = Arc::new(Memtable::new(1 << 20));
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            m.insert(*k, i as u64 + 1, ValueKind::Put, b"x");
        }
        let mut c = MemCursor::new(Arc::clone(&m));
        drop(m);
        let walk = |c: &mut MemCursor, forward: bool| {
            let mut out = Vec::new();
            while let Some(k) = c.key() {
                out.push(key::user_key(k).to_vec());
                assert_eq!(c.value(), b"x");
                c.step(forward);
            }
            out
        };
        assert_eq!(c.key(), None);
        c.seek_ge(None);
        assert_eq!(walk(&mut c, true), [b"a", b"b", b"c", b"d"].map(|k| k.to_vec()));
        assert_eq!(c.value(), b"");
        // Between versions: `b` at sequence 2 is the first entry at or after `b` seen at 5.
        c.seek_ge(Some(&key::internal_key(b"b", key::seek_trailer(5))));
        assert_eq!(walk(&mut c, true), [b"b", b"c", b"d"].map(|k| k.to_vec()));
        c.seek_ge(Some(&key::internal_key(b"b", key::seek_trailer(1))));
        assert_eq!(walk(&mut c, true), [b"c", b"d"].map(|k| k.to_vec()));
        c.seek_le(Some(&key::internal_key(b"c", key::seek_trailer(1))));
        assert_eq!(walk(&mut c, false), [b"c", b"b", b"a"].map(|k| k.to_vec()));
        c.seek_le(Some(&key::internal_key(b"c", key::seek_trailer(5))));
        assert_eq!(walk(&mut c, false), [b"b", b"a"].map(|k| k.to_vec()));
        c.seek_le(None);
        assert_eq!(walk(&mut c, false), [b"d", b"c", b"b", b"a"].map(|k| k.to_vec()));
        c.seek_le(Some(b"\0\0\0\0\0\0\0\0"));
        assert_eq!(c.key(), None);
    }

    /// A cursor's seek to a key the memtable holds, answered by the key index, lands where the list's own
    /// search does: on the newest version at or below the target's sequence, past a key written only after
    /// it, on a delete, and next to keys the memtable does not hold.
    #[test]
    fn a_seek_through_the_key_index_lands_where_the_list_search_does() {
        let m = Arc::new(Memtable::new(1 << 20));
        for i in 0..200u64 {
            let k = format!("k{:04}", i * 2);
            m.insert(k.as_bytes(), 1000 + i, ValueKind::Put, b"old");
            let kind = if i % 5 == 0 { ValueKind::Delete } else { ValueKind::Put };
            m.insert(k.as_bytes(), 2000 + i, kind, b"new");
        }
        let mut c = MemCursor::new(Arc::clone(&m));
        for i in 0..400u64 {
            let user = format!("k{i:04}");
            for seq in [0, 999, 1000 + i / 2, 1500, 2000 + i / 2, 2500, u64::MAX >> 8] {
                let target = key::internal_key(user.as_bytes(), key::seek_trailer(seq));
                c.seek_ge(Some(&target));
                let searched = m.list.seek_ge(&Target::from_internal(&target));
                // SAFETY: nodes of `m`'s list, alive while `m` is.
                let searched = searched.map(|n| unsafe { n.key() }.to_vec());
                assert_eq!(c.key().map(<[u8]>::to_vec), searched, "{user} at {seq}");
                if i % 2 == 0 && seq == u64::MAX >> 8 {
                    assert!(m.seek_indexed(&target).is_some(), "{user}: the index answers");
                }
            }
        }
    }

    /// The node a cursor's seek lands on (either direction), as the list's own search finds it.
    fn assert_seeks_match_the_list(m: &Arc<Memtable>, targets: &[Vec<u8>]) {
        let mut c = MemCursor::new(Arc::clone(m));
        for target in targets {
            // SAFETY: nodes of `m`'s list, alive while `m` is.
            let own = |n: Option<Node>| n.map(|n| unsafe { n.key() }.to_vec());
            c.seek_ge(Some(target));
            assert_eq!(c.key().map(<[u8]>::to_vec), own(m.list.seek_ge(&Target::from_internal(target))), "ge");
            c.seek_le(Some(target));
            assert_eq!(c.key().map(<[u8]>::to_vec), own(m.list.seek_le(&Target::from_internal(target))), "le");
        }
    }

    proptest::proptest! {
        /// Seeks that start from fingers land where the list's descent does: with fingers that hold every
        /// entry, after entries were added since they were built (a few near a target, or more than a
        /// walk takes), and with keys whose windows tie.
        #[test]
        fn seeks_from_fingers_land_where_the_list_search_does(
            before in proptest::collection::vec((0u32..3000, 0u8..3), 0..400),
            after in proptest::collection::vec((0u32..3000, 0u8..3), 0..400),
            run in 0usize..60,
            probes in proptest::collection::vec((0u32..3100, 0u8..3, 0u64..2000), 1..60),
        ) {
            // Three key shapes: short keys, keys that tie on their first eight bytes, long distinct ones.
            let user = |i: u32, shape: u8| match shape {
                0 => format!("{i:05}").into_bytes(),
                1 => format!("shared-prefix/{i:05}").into_bytes(),
                _ => format!("{i:05}-and-some-more-bytes").into_bytes(),
            };
            let m = Arc::new(Memtable::new(1 << 20));
            let mut seq = 0u64;
            let mut add = |m: &Memtable, k: &[u8]| {
                seq += 1;
                m.insert(k, seq, ValueKind::Put, b"v");
            };
            let targets: Vec<Vec<u8>> = probes
                .iter()
                .map(|&(i, shape, s)| key::internal_key(&user(i, shape), key::seek_trailer(s)))
                .chain(std::iter::once(key::internal_key(b"shared-prefix/01500/999", key::seek_trailer(1))))
                .collect();
            for &(i, shape) in &before {
                add(&m, &user(i, shape));
            }
            m.build_fingers();
            assert_seeks_match_the_list(&m, &targets);
            for &(i, shape) in &after {
                add(&m, &user(i, shape));
            }
            // A run of keys right after one spot, longer than a walk takes when `run > MAX_WALK`.
            for j in 0..run as u32 {
                add(&m, format!("shared-prefix/01500/{j:03}").as_bytes());
            }
            assert_seeks_match_the_list(&m, &targets);
        }
    }

    /// The fingers are built once the memtable holds enough entries and again when it has grown by half,
    /// and stay within a sixteenth of the memtable's size however small its entries.
    #[test]
    fn fingers_are_due_as_the_memtable_grows_and_bounded_by_its_size() {
        let size = 1 << 20;
        let m = Arc::new(Memtable::new(size));
        let mut seq = 0u64;
        let mut fill = |to: u64| {
            while seq < to {
                seq += 1;
                m.insert(format!("{seq:016x}").as_bytes(), seq, ValueKind::Put, b"");
            }
        };
        let seek = || m.seek_ge(&Target::new(b"k", key::seek_trailer(1)));
        fill(FINGERS_FROM as u64 - 1);
        seek();
        assert!(!m.fingers_due(), "a small memtable is searched without fingers");
        fill(FINGERS_FROM as u64);
        assert!(m.fingers_due());
        m.build_fingers();
        assert!(!m.fingers_due());
        fill(FINGERS_FROM as u64 * 3 / 2 - 1);
        seek();
        assert!(!m.fingers_due(), "not due before the memtable has grown by half");
        fill(FINGERS_FROM as u64 * 3 / 2);
        assert!(m.fingers_due());
        m.build_fingers();
        fill(FINGERS_FROM as u64 * 3);
        assert!(!m.fingers_due(), "not due before a seek: writes and point reads use no fingers");
        let _ = m.get(b"k", u64::MAX >> 8, key_hash(b"k"));
        assert!(!m.fingers_due(), "a point read the key index answers is not a seek");
        seek();
        assert!(m.fingers_due());
        // Entries of some 70 bytes: a memtable of 1 MiB would hold 15,000; at 40,000 the fingers take
        // every eleventh node.
        fill(40_000);
        m.build_fingers();
        assert!(m.fingers_bytes() <= size / 16, "{} bytes of fingers", m.fingers_bytes());
        assert!(m.fingers_bytes() >= size / 20, "{} bytes of fingers", m.fingers_bytes());
        let targets: Vec<Vec<u8>> = (0..45_000u64)
            .step_by(7)
            .map(|i| key::internal_key(format!("{i:016x}").as_bytes(), key::seek_trailer(i)))
            .collect();
        assert_seeks_match_the_list(&m, &targets);
    }

    #[test]
    fn a_frozen_memtable_keeps_the_fingers_it_had() {
        let m = Memtable::new(64 << 20);
        let fill = |from: u64, to: u64| {
            for i in from..to {
                m.insert(format!("{i:016x}").as_bytes(), i + 1, ValueKind::Put, b"");
            }
        };
        fill(0, 2 * FINGERS_FROM as u64);
        m.build_fingers();
        let had = m.fingers_bytes();
        assert!(had > 0);
        fill(2 * FINGERS_FROM as u64, 4 * FINGERS_FROM as u64);
        m.freeze(7);
        m.build_fingers();
        assert_eq!(m.fingers_bytes(), had, "the walk stopped at the freeze, and the last fingers stay");
        assert!(!m.fingers_due(), "and is not asked for again");
    }

    #[test]
    fn insert_all_takes_entries_in_any_order_and_versions_stay_apart() {
        // Three versions of each of 300 keys, given newest first, interleaved, across two calls (as a
        // replay of two WALs makes).
        let keys: Vec<Vec<u8>> = (0..300u32).map(|i| format!("k{:05}", (i * 7919) % 300).into_bytes()).collect();
        let m = Memtable::new(1 << 20);
        for round in [2u64, 1, 0] {
            let mut puts: Vec<Put<'_>> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let seq = round * 1000 + i as u64 + 1;
                    let kind = if round == 1 && i.is_multiple_of(3) { ValueKind::Delete } else { ValueKind::Put };
                    Put::new(k, seq, kind, k)
                })
                .collect();
            m.insert_all(&mut puts);
        }
        assert_eq!(m.len(), 900);
        for (i, k) in keys.iter().enumerate() {
            let h = key_hash(k);
            let i = i as u64;
            assert_eq!(m.get(k, u64::MAX >> 8, h).owned(), Lookup::Found(k.clone(), 2001 + i));
            let middle =
                if i.is_multiple_of(3) { Lookup::Deleted(1001 + i) } else { Lookup::Found(k.clone(), 1001 + i) };
            assert_eq!(m.get(k, 2000, h).owned(), middle);
            assert_eq!(m.get(k, 1000, h).owned(), Lookup::Found(k.clone(), i + 1));
            assert_eq!(m.get(k, 0, h).owned(), Lookup::Absent);
        }
        let mut c = MemCursor::new(Arc::new(m));
        c.seek_ge(None);
        let mut seen = Vec::new();
        while let Some(k) = c.key() {
            seen.push(k.to_vec());
            c.step(true);
        }
        assert!(seen.windows(2).all(|w| key::compare(&w[0], &w[1]) == std::cmp::Ordering::Less));
        assert_eq!(seen.len(), 900);
    }

    #[test]
    fn an_overfilled_key_filter_still_finds_every_key() {
        // A tiny memtable's filter answers "maybe", never "no", for what it holds.
        let keys: Vec<Vec<u8>> = (0..20_000u32).map(|i| format!("key-{i}").into_bytes()).collect();
        let m = Memtable::new(0);
        for (i, k) in keys.iter().enumerate() {
            m.insert(k, i as u64 + 1, ValueKind::Put, b"v");
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.get(k, u64::MAX >> 8, key_hash(k)).owned(), Lookup::Found(b"v".to_vec(), i as u64 + 1));
        }
        assert_eq!(m.len(), 20_000);
    }

    /// Past its slots the key index leaves keys out and says so: every key, indexed or not, is still found
    /// at every version, and keys never written are absent.
    #[test]
    fn an_overflowed_key_index_still_finds_every_version() {
        let m = Memtable::new(0);
        assert_eq!(m.index.bytes(), 512 * 8);
        let keys: Vec<Vec<u8>> = (0..3000u32).map(|i| format!("key-{i}").into_bytes()).collect();
        for round in 0..2u64 {
            let mut puts: Vec<Put<'_>> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| Put::new(k, round * 10_000 + i as u64 + 1, ValueKind::Put, k))
                .collect();
            m.insert_all(&mut puts);
        }
        let indexed =
            keys.iter().filter(|k| matches!(unsafe { m.index.find(key_hash(k), k) }, Probe::Found(_))).count();
        assert!(indexed <= 512 && indexed > 0, "{indexed} keys indexed");
        for (i, k) in keys.iter().enumerate() {
            let (h, i) = (key_hash(k), i as u64);
            assert_eq!(m.get(k, u64::MAX >> 8, h).owned(), Lookup::Found(k.clone(), 10_001 + i));
            assert_eq!(m.get(k, 10_000, h).owned(), Lookup::Found(k.clone(), i + 1));
            assert_eq!(m.get(k, 0, h).owned(), Lookup::Absent);
        }
        for i in 0..3000u32 {
            let k = format!("other-{i}").into_bytes();
            assert_eq!(m.get(&k, u64::MAX >> 8, key_hash(&k)).owned(), Lookup::Absent);
        }
    }

    /// Readers racing the writer see, for every key, the newest version at or below the sequence they read
    /// at, as published after each group: the index is updated before a group's sequence is published.
    #[test]
    fn readers_racing_the_writer_find_the_newest_published_version() {
        use std::sync::atomic::AtomicU64;
        let m = Arc::new(Memtable::new(1 << 20));
        let published = Arc::new(AtomicU64::new(0));
        let keys: Vec<Vec<u8>> = (0..200u32).map(|i| format!("key-{i:04}").into_bytes()).collect();
        // Group `g` (sequences `g * 1000 + 1 ..`) writes every key whose index is a multiple of `g % 7 + 1`.
        let written = |g: u64, i: usize| i.is_multiple_of((g % 7 + 1) as usize);
        let groups = 300u64;
        const DONE: u64 = u64::MAX;
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| loop {
                    let seq = published.load(AtomicOrdering::Acquire);
                    if seq == DONE {
                        break;
                    }
                    let g = seq / 1000;
                    for (i, k) in keys.iter().enumerate().step_by(13) {
                        let want = (1..=g).rev().find(|&g| written(g, i)).map(|g| g * 1000 + i as u64);
                        let got = match m.get(k, seq, key_hash(k)) {
                            Lookup::Found(v, seq) => {
                                assert_eq!(v, k.as_slice());
                                Some(seq)
                            }
                            Lookup::Deleted(_) => panic!("no deletes were written"),
                            Lookup::Absent => None,
                        };
                        assert_eq!(got, want, "key {i} at {seq}");
                    }
                });
            }
            for g in 1..=groups {
                let mut puts: Vec<Put<'_>> = keys
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| written(g, *i))
                    .map(|(i, k)| Put::new(k, g * 1000 + i as u64, ValueKind::Put, k))
                    .collect();
                m.insert_all(&mut puts);
                published.store(g * 1000 + 999, AtomicOrdering::Release);
            }
            published.store(DONE, AtomicOrdering::Release);
        });
    }

    /// Cursors seeking while the writer inserts and fingers are rebuilt under them (complete, stale, or
    /// none yet) land on the first published key at or after their target: an unpublished entry they may
    /// land on instead is never past that key.
    #[test]
    fn seeks_racing_the_writer_and_rebuilt_fingers_land_on_the_first_published_key() {
        use std::sync::atomic::AtomicU64;
        // Large enough that the fingers take every node.
        let m = Arc::new(Memtable::new(64 << 20));
        let published = Arc::new(AtomicU64::new(0));
        // Even keys in a scattered order, 20 to a group (sequences 1, 2, ... in that order); probes are odd.
        const KEYS: u32 = 20_000;
        let order: Vec<u32> = (0..KEYS).map(|i| i.wrapping_mul(2_654_435_761) % KEYS * 2).collect();
        let seq_of: std::collections::HashMap<u32, u64> =
            order.iter().enumerate().map(|(i, &k)| (k, i as u64 + 1)).collect();
        let key = |k: u32| format!("k{k:06}").into_bytes();
        const DONE: u64 = u64::MAX;
        std::thread::scope(|s| {
            s.spawn(|| {
                while published.load(AtomicOrdering::Acquire) != DONE {
                    m.build_fingers();
                }
            });
            for r in 0..2u32 {
                let (m, published, seq_of) = (&m, &published, &seq_of);
                s.spawn(move || {
                    let mut c = MemCursor::new(Arc::clone(m));
                    let mut probe = r;
                    loop {
                        let seq = published.load(AtomicOrdering::Acquire);
                        if seq == DONE {
                            break;
                        }
                        probe = (probe + 7919) % (2 * KEYS + 2);
                        let odd = probe | 1;
                        c.seek_ge(Some(&key::internal_key(&key(odd), key::seek_trailer(seq))));
                        // The first key after the probe written at or below `seq`, as a model says.
                        let want =
                            (odd + 1..2 * KEYS + 2).step_by(2).find(|k| seq_of.get(k).is_some_and(|&s| s <= seq));
                        let got = c.key().map(|k| key::user_key(k).to_vec());
                        match (got, want) {
                            (Some(got), Some(want)) => {
                                assert!(got <= key(want), "probe {odd} at {seq} passed {want}");
                                assert!(got > key(odd));
                            }
                            (Some(got), None) => assert!(got > key(odd)),
                            (None, want) => assert_eq!(want, None, "probe {odd} at {seq} found nothing"),
                        }
                    }
                });
            }
            let keys: Vec<Vec<u8>> = order.iter().map(|&k| key(k)).collect();
            for (g, chunk) in keys.chunks(20).enumerate() {
                let first = g as u64 * 20 + 1;
                let mut puts: Vec<Put<'_>> =
                    chunk.iter().enumerate().map(|(i, k)| Put::new(k, first + i as u64, ValueKind::Put, k)).collect();
                m.insert_all(&mut puts);
                published.store(first + chunk.len() as u64 - 1, AtomicOrdering::Release);
            }
            published.store(DONE, AtomicOrdering::Release);
        });
    }
}
