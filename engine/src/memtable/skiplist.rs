//! The memtable's ordered store: a skip list whose nodes live in an arena, each holding its links, its
//! internal key and its value in one allocation.
//!
//! A search step reads one node, key included, where a list of pointers to separately allocated entries
//! reads two. Nothing is removed or moved before the whole list is dropped, so a reader holds plain node
//! pointers with no reference counts and no epochs. One writer at a time (the writer lock); readers never
//! lock: a node is fully written before a release store links it in, and readers load links with acquire.
//! Level 0 is also linked backwards, so reverse scans step back without a search.

use std::alloc::{self, Layout};
use std::cmp::Ordering;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering as AtomicOrdering};

use parking_lot::{Mutex, MutexGuard};

use crate::format::key;
use crate::prefetch::{prefetch, LINE};

/// Levels a node can reach: with a one-in-two chance per level, a list of 2^20 entries (a 64 MiB
/// memtable of small entries holds about 300,000) has some 20 levels.
///
/// One in two rather than one in four: a search is bound by cache misses, one per node it compares,
/// and it compares about `(1 - p) / p` nodes per level over `log(n) / log(1/p)` levels: `log2(n)` nodes
/// with p = 1/2, `1.5 log2(n)` with p = 1/4, for 8 more bytes per node on average.
const MAX_HEIGHT: usize = 20;
/// Bytes the arena takes from the allocator at a time; a node larger than a quarter of it gets its own.
const BLOCK_SIZE: usize = 1 << 20;
const ALIGN: usize = 8;
/// Bytes of a node [`Node::prefetch`] asks for: header, links, key and a small value (a node of a 24-byte
/// key and a 150-byte value takes about 230 with two links). Larger values stream in as they are read.
const NODE_PREFETCH: usize = 4 * LINE;

/// The fixed part of a node; `height` links, the key and the value follow it in the same allocation.
#[repr(C)]
struct Header {
    /// [`key::window`] of the user key: unequal windows order two keys without reading either.
    window: u64,
    key_len: u32,
    value_len: u32,
    height: u32,
    _pad: u32,
    /// The previous node at level 0, null for the first.
    prev: AtomicPtr<Header>,
}

const HEADER_LEN: usize = size_of::<Header>();
const LINK_LEN: usize = size_of::<AtomicPtr<Header>>();

fn node_len(height: usize, key_len: usize, value_len: usize) -> usize {
    (HEADER_LEN + height * LINK_LEN + key_len + value_len).next_multiple_of(ALIGN)
}

/// A node of some list. Valid only while that list lives: the methods other modules call are `unsafe` on
/// that ground (this module's own calls run while `&SkipList` is borrowed), and the list's users (the
/// memtable's cursor) hold the list alive for as long as they hold its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Node(NonNull<Header>);

// SAFETY: a published node is immutable apart from its atomic links, and is freed only with its list.
unsafe impl Send for Node {}
// SAFETY: as above.
unsafe impl Sync for Node {}

impl Node {
    fn header(&self) -> &Header {
        // SAFETY: the node points at an initialized header in a live arena block (the caller's contract).
        unsafe { self.0.as_ref() }
    }

    fn link(&self, level: usize) -> &AtomicPtr<Header> {
        debug_assert!(level < self.header().height as usize);
        // SAFETY: links `0..height` follow the header, each initialized before the node was published.
        unsafe { &*self.0.as_ptr().cast::<u8>().add(HEADER_LEN + level * LINK_LEN).cast::<AtomicPtr<Header>>() }
    }

    fn next(&self, level: usize) -> Option<Node> {
        NonNull::new(self.link(level).load(AtomicOrdering::Acquire)).map(Node)
    }

    /// The next node at level 0.
    ///
    /// # Safety
    /// The node's list is alive.
    pub unsafe fn successor(&self) -> Option<Node> {
        self.next(0)
    }

    /// The previous node at level 0.
    ///
    /// # Safety
    /// The node's list is alive.
    pub unsafe fn predecessor(&self) -> Option<Node> {
        NonNull::new(self.header().prev.load(AtomicOrdering::Acquire)).map(Node)
    }

    /// Starts loading the node after this one at level 0 into the CPU's cache (see [`Node::prefetch`]), so
    /// that a scan's next step finds it there: neighbours in key order are scattered over the arena in the
    /// order they were inserted.
    ///
    /// # Safety
    /// The node's list is alive.
    pub unsafe fn prefetch_successor(&self) {
        let next = self.link(0).load(AtomicOrdering::Relaxed);
        if let Some(next) = NonNull::new(next) {
            Node(next).prefetch();
        }
    }

    /// Starts loading this node's first [`NODE_PREFETCH`] bytes, so that a read of its key and value that
    /// follows misses once rather than once per line.
    pub fn prefetch(&self) {
        for at in (0..NODE_PREFETCH).step_by(LINE) {
            prefetch(self.0.as_ptr().cast::<u8>().wrapping_add(at));
        }
    }

    /// [`key::window`] of the node's user key.
    pub fn window(&self) -> u64 {
        self.header().window
    }

    /// The node's address, as the memtable's key index keeps it.
    pub fn as_raw(&self) -> NonNull<u8> {
        self.0.cast()
    }

    /// The node at `raw`.
    ///
    /// # Safety
    /// `raw` is [`Node::as_raw`] of a node whose list is alive.
    pub unsafe fn from_raw(raw: NonNull<u8>) -> Node {
        Node(raw.cast())
    }

    fn data(&self) -> *const u8 {
        let height = self.header().height as usize;
        // SAFETY: the key and value follow the links inside the node's allocation.
        unsafe { self.0.as_ptr().cast::<u8>().add(HEADER_LEN + height * LINK_LEN) }
    }

    /// The node's internal key.
    ///
    /// # Safety
    /// The node's list is alive; the slice must not outlive it.
    pub unsafe fn key<'a>(&self) -> &'a [u8] {
        // SAFETY: `key_len` bytes written before publication; the caller keeps the list alive.
        unsafe { std::slice::from_raw_parts(self.data(), self.header().key_len as usize) }
    }

    /// The node's value.
    ///
    /// # Safety
    /// As for [`Node::key`].
    pub unsafe fn value<'a>(&self) -> &'a [u8] {
        let h = self.header();
        // SAFETY: `value_len` bytes written after the key before publication.
        unsafe { std::slice::from_raw_parts(self.data().add(h.key_len as usize), h.value_len as usize) }
    }
}

/// An internal key to search for, given as its parts, with its window computed once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    window: u64,
    user_key: &'a [u8],
    trailer: u64,
}

impl<'a> Target<'a> {
    pub fn new(user_key: &'a [u8], trailer: u64) -> Self {
        Self { window: key::window(user_key, 0), user_key, trailer }
    }

    /// The target internal key.
    pub fn from_internal(ikey: &'a [u8]) -> Self {
        let (user_key, trailer) = key::split(ikey);
        Self::new(user_key, trailer)
    }

    /// How an internal key whose user key has window `window` orders against the target; `ikey` gives the
    /// key, and is called only when the windows tie.
    fn order_with<'k>(&self, window: u64, ikey: impl FnOnce() -> &'k [u8]) -> Ordering {
        if window != self.window {
            return window.cmp(&self.window);
        }
        let (user_key, trailer) = key::split(ikey());
        user_key.cmp(self.user_key).then_with(|| self.trailer.cmp(&trailer))
    }

    /// [`key::window`] of the target's user key.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// How `node`'s key orders against the target; reads the key only when the windows tie.
    ///
    /// # Safety
    /// The node's list is alive.
    pub unsafe fn order(&self, node: Node) -> Ordering {
        // SAFETY: the caller's contract.
        self.order_with(node.header().window, || unsafe { node.key() })
    }

    /// Whether `node` lies before the boundary the target draws: its key is before the target, or equal to
    /// it when `past_equal`.
    ///
    /// # Safety
    /// The node's list is alive.
    unsafe fn precedes(&self, node: Node, past_equal: bool) -> bool {
        // SAFETY: the caller's contract.
        let ord = unsafe { self.order(node) };
        ord == Ordering::Less || past_equal && ord == Ordering::Equal
    }
}

/// Blocks of memory handed out front to back and freed together.
struct Arena {
    blocks: Vec<(NonNull<u8>, Layout)>,
    /// The free part of the current block.
    next: *mut u8,
    left: usize,
}

// SAFETY: the arena owns its blocks; raw pointers into them are not tied to a thread.
unsafe impl Send for Arena {}

impl Arena {
    fn new() -> Self {
        Self { blocks: Vec::new(), next: ptr::null_mut(), left: 0 }
    }

    /// `len` bytes (a multiple of [`ALIGN`]), aligned to [`ALIGN`] and uninitialized.
    fn alloc(&mut self, len: usize) -> NonNull<u8> {
        debug_assert!(len.is_multiple_of(ALIGN));
        if len > BLOCK_SIZE / 4 {
            return self.block(len);
        }
        if len > self.left {
            self.next = self.block(BLOCK_SIZE).as_ptr();
            self.left = BLOCK_SIZE;
        }
        let out = self.next;
        // SAFETY: `len <= left`, so the result stays inside the current block (or one past its end).
        self.next = unsafe { out.add(len) };
        self.left -= len;
        NonNull::new(out).unwrap_or_else(|| alloc::handle_alloc_error(Layout::new::<u64>()))
    }

    fn block(&mut self, len: usize) -> NonNull<u8> {
        let layout =
            Layout::from_size_align(len, ALIGN).unwrap_or_else(|_| alloc::handle_alloc_error(Layout::new::<u64>()));
        // SAFETY: `layout` has a non-zero size.
        let block = NonNull::new(unsafe { alloc::alloc(layout) }).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        self.blocks.push((block, layout));
        block
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for (block, layout) in self.blocks.drain(..) {
            // SAFETY: allocated by `Arena::block` with this layout, freed once.
            unsafe { alloc::dealloc(block.as_ptr(), layout) };
        }
    }
}

/// What only the writer touches.
struct Writer {
    arena: Arena,
    rng: u64,
}

impl Writer {
    /// A height from 1 to [`MAX_HEIGHT`], each level half as likely as the one below.
    fn random_height(&mut self) -> usize {
        // xorshift64*: fast, and the heights need no more than this.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (1 + r.trailing_zeros() as usize).min(MAX_HEIGHT)
    }
}

/// An ordered set of `(internal key, value)` entries in internal-key order; keys are unique (every entry
/// carries its own sequence number).
pub(crate) struct SkipList {
    head: Node,
    /// Levels in use; readers may see a stale (lower) height, which only starts their search lower.
    height: AtomicUsize,
    len: AtomicUsize,
    /// Arena bytes taken by nodes.
    bytes: AtomicUsize,
    writer: Mutex<Writer>,
}

// SAFETY: the list's nodes are published with release stores and never freed before the list; writes are
// serialized by the writer lock.
unsafe impl Send for SkipList {}
// SAFETY: as above.
unsafe impl Sync for SkipList {}

impl std::fmt::Debug for SkipList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkipList").field("len", &self.len()).field("bytes", &self.bytes()).finish()
    }
}

impl SkipList {
    pub fn new() -> Self {
        let mut arena = Arena::new();
        let head = Self::alloc_node(&mut arena, MAX_HEIGHT, None, &[]);
        Self {
            head,
            height: AtomicUsize::new(1),
            len: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            writer: Mutex::new(Writer { arena, rng: 0x9e37_79b9_7f4a_7c15 }),
        }
    }

    /// A node with null links holding the internal key `user_key + trailer` (none for the head) and `value`.
    fn alloc_node(arena: &mut Arena, height: usize, key: Option<(&[u8], u64)>, value: &[u8]) -> Node {
        let key_len = key.map_or(0, |(user_key, _)| user_key.len() + key::TRAILER_LEN);
        let base = arena.alloc(node_len(height, key_len, value.len())).as_ptr();
        let header = Header {
            window: key.map_or(0, |(user_key, _)| key::window(user_key, 0)),
            key_len: key_len as u32,
            value_len: value.len() as u32,
            height: height as u32,
            _pad: 0,
            prev: AtomicPtr::new(ptr::null_mut()),
        };
        // SAFETY: `base` is aligned and holds `node_len` bytes: the header, `height` links, key and value.
        unsafe {
            base.cast::<Header>().write(header);
            let links = base.add(HEADER_LEN).cast::<AtomicPtr<Header>>();
            for level in 0..height {
                links.add(level).write(AtomicPtr::new(ptr::null_mut()));
            }
            let data = base.add(HEADER_LEN + height * LINK_LEN);
            if let Some((user_key, trailer)) = key {
                ptr::copy_nonoverlapping(user_key.as_ptr(), data, user_key.len());
                let trailer = trailer.to_le_bytes();
                ptr::copy_nonoverlapping(trailer.as_ptr(), data.add(user_key.len()), key::TRAILER_LEN);
            }
            ptr::copy_nonoverlapping(value.as_ptr(), data.add(key_len), value.len());
            Node(NonNull::new_unchecked(base.cast::<Header>()))
        }
    }

    pub fn len(&self) -> usize {
        self.len.load(AtomicOrdering::Acquire)
    }

    /// Bytes of the nodes, links and headers included.
    pub fn bytes(&self) -> usize {
        self.bytes.load(AtomicOrdering::Relaxed)
    }

    /// The writer's handle: holds the writer lock until dropped, and inserts keys that ascend (as a sorted
    /// batch does) from where the previous one went instead of from the top of the list.
    pub fn inserter(&self) -> Inserter<'_> {
        Inserter { list: self, writer: self.writer.lock(), splice: None }
    }

    /// Descends from `from` at `level` to the boundary `target` draws (with `past_equal`, a key equal to
    /// the target counts as before it). Returns the last node before the boundary at level 0 (the head
    /// where none) and the first node after it; `splice` gets both at every level from `level` down.
    fn descend(
        &self,
        from: Node,
        level: usize,
        target: &Target<'_>,
        past_equal: bool,
        mut splice: Option<&mut Splice>,
    ) -> (Node, Option<Node>) {
        let mut x = from;
        let mut level = level;
        loop {
            let next = x.next(level);
            if level > 0 {
                prefetch(x.link(level - 1).load(AtomicOrdering::Relaxed));
            }
            // SAFETY: `n` is a published node of this list, which is alive while `self` is borrowed.
            let before = next.is_some_and(|n| unsafe { target.precedes(n, past_equal) });
            match next {
                Some(n) if before => x = n,
                _ => {
                    if let Some(s) = splice.as_deref_mut() {
                        if let (Some(p), Some(n)) = (s.prevs.get_mut(level), s.nexts.get_mut(level)) {
                            (*p, *n) = (x, next);
                        }
                    }
                    if level == 0 {
                        return (x, next);
                    }
                    level -= 1;
                }
            }
        }
    }

    /// The boundary `target` draws at level 0 (as [`SkipList::seek_ge`] and [`SkipList::seek_le`] find
    /// it: the last node before it, `None` for the head, and the first after it), walked from `from` (a
    /// node before the target, or `None` for the head) if at most `max_steps` nodes lie between; `None`
    /// past that.
    pub fn walk(
        &self,
        from: Option<Node>,
        target: &Target<'_>,
        past_equal: bool,
        max_steps: usize,
    ) -> Option<(Option<Node>, Option<Node>)> {
        let mut x = from.unwrap_or(self.head);
        for _ in 0..=max_steps {
            let next = x.next(0);
            // SAFETY: `n` is a published node of this list, which is alive while `self` is borrowed.
            let before = next.is_some_and(|n| unsafe { target.precedes(n, past_equal) });
            match next {
                Some(n) if before => {
                    // SAFETY: as above.
                    unsafe { n.prefetch_successor() };
                    x = n;
                }
                _ => return Some((Some(x).filter(|x| *x != self.head), next)),
            }
        }
        None
    }

    fn top_level(&self) -> usize {
        self.height.load(AtomicOrdering::Acquire).clamp(1, MAX_HEIGHT) - 1
    }

    /// The first node whose key is not before `target`.
    pub fn seek_ge(&self, target: &Target<'_>) -> Option<Node> {
        self.descend(self.head, self.top_level(), target, false, None).1
    }

    /// The last node whose key is not after `target`.
    pub fn seek_le(&self, target: &Target<'_>) -> Option<Node> {
        Some(self.descend(self.head, self.top_level(), target, true, None).0).filter(|p| *p != self.head)
    }

    pub fn first(&self) -> Option<Node> {
        self.head.next(0)
    }

    pub fn last(&self) -> Option<Node> {
        let mut x = self.head;
        for level in (0..=self.top_level()).rev() {
            while let Some(next) = x.next(level) {
                x = next;
            }
        }
        Some(x).filter(|x| *x != self.head)
    }
}

/// At each level, the nodes an insert went between: the previous insert's neighbours, where the next
/// insert of a larger key starts its search.
struct Splice {
    prevs: [Node; MAX_HEIGHT],
    nexts: [Option<Node>; MAX_HEIGHT],
}

/// The list's writer (see [`SkipList::inserter`]).
pub(crate) struct Inserter<'a> {
    list: &'a SkipList,
    writer: MutexGuard<'a, Writer>,
    /// The last node inserted and the splice around it; `None` before the first insert.
    splice: Option<(Node, Splice)>,
}

impl Inserter<'_> {
    /// Inserts `user_key` + `trailer` with `value`, and returns its node, linked at every level. The
    /// internal key must not be in the list already.
    pub fn insert(&mut self, user_key: &[u8], trailer: u64, value: &[u8]) -> Node {
        let list = self.list;
        let height = self.writer.random_height();
        let node = SkipList::alloc_node(&mut self.writer.arena, height, Some((user_key, trailer)), value);
        let target = Target::new(user_key, trailer);
        let listed = list.top_level() + 1;
        // SAFETY (both keys): nodes of this list, alive while it is borrowed.
        let (start, mut splice) = match self.splice.take() {
            // After the last insert: start at the lowest level whose next node is past the new key.
            Some((last, splice)) if unsafe { target.order(last) } == Ordering::Less => {
                let level = (0..listed).find(|&l| {
                    splice
                        .nexts
                        .get(l)
                        .copied()
                        .flatten()
                        .is_none_or(|n| unsafe { target.order(n) } == Ordering::Greater)
                });
                (level, splice)
            }
            _ => (None, Splice { prevs: [list.head; MAX_HEIGHT], nexts: [None; MAX_HEIGHT] }),
        };
        let (from, level) = match start {
            Some(level) => (splice.prevs.get(level).copied().unwrap_or(list.head), level),
            None => (list.head, listed - 1),
        };
        list.descend(from, level, &target, false, Some(&mut splice));
        if height > listed {
            for level in listed..height {
                if let (Some(p), Some(n)) = (splice.prevs.get_mut(level), splice.nexts.get_mut(level)) {
                    (*p, *n) = (list.head, None);
                }
            }
            list.height.store(height, AtomicOrdering::Release);
        }
        for (level, next) in splice.nexts.iter().enumerate().take(height) {
            node.link(level).store(next.map_or(ptr::null_mut(), |n| n.0.as_ptr()), AtomicOrdering::Relaxed);
        }
        if let Some(&prev) = splice.prevs.first().filter(|p| **p != list.head) {
            node.header().prev.store(prev.0.as_ptr(), AtomicOrdering::Relaxed);
        }
        // Publish bottom up: a reader that finds the node at any level finds it at level 0.
        for (level, prev) in splice.prevs.iter().enumerate().take(height) {
            prev.link(level).store(node.0.as_ptr(), AtomicOrdering::Release);
        }
        if let Some(next) = splice.nexts.first().copied().flatten() {
            next.header().prev.store(node.0.as_ptr(), AtomicOrdering::Release);
        }
        for prev in splice.prevs.iter_mut().take(height) {
            *prev = node;
        }
        self.splice = Some((node, splice));
        let node_bytes = node_len(height, user_key.len() + key::TRAILER_LEN, value.len());
        list.bytes.fetch_add(node_bytes, AtomicOrdering::Relaxed);
        list.len.fetch_add(1, AtomicOrdering::Release);
        node
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::format::key::{make_trailer, ValueKind};

    fn collect(list: &SkipList, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut node = if reverse { list.last() } else { list.first() };
        while let Some(n) = node {
            // SAFETY: `list` outlives the loop.
            unsafe {
                out.push((n.key().to_vec(), n.value().to_vec()));
                node = if reverse { n.predecessor() } else { n.successor() };
            }
        }
        out
    }

    /// Every level links, in order, exactly the nodes that tall: a search's shortcuts skip nothing.
    fn assert_levels_complete(list: &SkipList) {
        for level in 0..MAX_HEIGHT {
            let (mut linked, mut x) = (Vec::new(), list.head);
            while let Some(next) = x.next(level) {
                linked.push(next);
                x = next;
            }
            let mut tall = Vec::new();
            let mut node = list.first();
            while let Some(n) = node {
                if n.header().height as usize > level {
                    tall.push(n);
                }
                // SAFETY: `list` outlives the loop.
                node = unsafe { n.successor() };
            }
            assert_eq!(linked, tall, "level {level}");
        }
    }

    proptest::proptest! {
        /// Any insertion order: both directions list every entry in internal-key order, and each seek lands
        /// where a sorted model says.
        #[test]
        fn matches_a_sorted_model(
            entries in proptest::collection::vec((proptest::collection::vec(0u8..4, 0..6), 0u64..50, 0usize..300), 0..200),
            probes in proptest::collection::vec((proptest::collection::vec(0u8..4, 0..6), 0u64..50), 0..20),
        ) {
            let list = SkipList::new();
            let mut seen = BTreeSet::new();
            let mut fresh = Vec::new();
            for (user, seq, value_len) in &entries {
                let ikey = key::internal_key(user, make_trailer(*seq, ValueKind::Put));
                if seen.insert(ikey.clone()) {
                    fresh.push((ikey, vec![*seq as u8; *value_len]));
                }
            }
            // The first half in the order given (the splice restarts at every descent), the rest sorted
            // (each insert starts from the one before) through a second inserter.
            let (given, rest) = fresh.split_at(fresh.len() / 2);
            let mut rest = rest.to_vec();
            rest.sort_by(|a, b| key::compare(&a.0, &b.0));
            for part in [given, &rest[..]] {
                let mut inserter = list.inserter();
                for (ikey, value) in part {
                    let (user, trailer) = key::split(ikey);
                    inserter.insert(user, trailer, value);
                }
            }
            let mut sorted = fresh;
            sorted.sort_by(|a, b| key::compare(&a.0, &b.0));
            assert_levels_complete(&list);
            proptest::prop_assert_eq!(list.len(), sorted.len());
            proptest::prop_assert_eq!(collect(&list, false), sorted.clone());
            let mut reversed = sorted.clone();
            reversed.reverse();
            proptest::prop_assert_eq!(collect(&list, true), reversed);
            for (user, seq) in &probes {
                let target = key::internal_key(user, key::seek_trailer(*seq));
                let cmp = |k: &[u8]| key::compare(k, &target);
                // SAFETY: `list` outlives these reads.
                let ge = list.seek_ge(&Target::from_internal(&target)).map(|n| unsafe { n.key().to_vec() });
                let want_ge = sorted.iter().find(|(k, _)| cmp(k) != Ordering::Less).map(|e| e.0.clone());
                proptest::prop_assert_eq!(ge, want_ge);
                // SAFETY: as above.
                let le = list.seek_le(&Target::from_internal(&target)).map(|n| unsafe { n.key().to_vec() });
                let want_le = sorted.iter().rev().find(|(k, _)| cmp(k) != Ordering::Greater).map(|e| e.0.clone());
                proptest::prop_assert_eq!(le, want_le);
            }
        }
    }

    proptest::proptest! {
        /// A target orders keys as the internal-key order does, whether the windows decide or the keys.
        #[test]
        fn targets_order_as_internal_keys(
            a in proptest::collection::vec(0u8..3, 0..12),
            b in proptest::collection::vec(0u8..3, 0..12),
            (sa, sb) in (0u64..4, 0u64..4),
        ) {
            let ka = key::internal_key(&a, make_trailer(sa, ValueKind::Put));
            let kb = key::internal_key(&b, key::seek_trailer(sb));
            let target = Target::from_internal(&kb);
            proptest::prop_assert_eq!(target.order_with(key::window(&a, 0), || &ka), key::compare(&ka, &kb));
        }
    }

    #[test]
    fn large_values_get_their_own_block_and_bytes_count_every_node() {
        let list = SkipList::new();
        let big = vec![7u8; BLOCK_SIZE];
        let mut inserter = list.inserter();
        inserter.insert(b"b", make_trailer(2, ValueKind::Put), &big);
        inserter.insert(b"a", make_trailer(1, ValueKind::Put), b"small");
        inserter.insert(b"c", make_trailer(3, ValueKind::Put), &[]);
        drop(inserter);
        // The head and the two small nodes share the first block; the large one has its own.
        assert_eq!(list.writer.lock().arena.blocks.len(), 2);
        let got = collect(&list, false);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1, b"small");
        assert_eq!(got[1].1, big);
        assert!(got[2].1.is_empty());
        assert!(list.bytes() >= BLOCK_SIZE + 2 * (HEADER_LEN + LINK_LEN + 9), "{}", list.bytes());
        assert!(list.bytes() < BLOCK_SIZE + 3 * (HEADER_LEN + MAX_HEIGHT * LINK_LEN + 16));
    }

    #[test]
    fn heights_thin_out_by_half_per_level() {
        let mut w = Writer { arena: Arena::new(), rng: 1 };
        let mut counts = [0usize; MAX_HEIGHT + 1];
        for _ in 0..400_000 {
            counts[w.random_height()] += 1;
        }
        assert_eq!(counts[0], 0);
        for level in 1..5 {
            let ratio = counts[level] as f64 / counts[level + 1] as f64;
            assert!((1.8..2.2).contains(&ratio), "level {level}: {counts:?}");
        }
    }

    /// Readers scanning while the writer inserts see an ordered list whose length never shrinks, and find
    /// every entry published before their scan began.
    #[test]
    fn concurrent_readers_see_ordered_complete_prefixes() {
        let list = Arc::new(SkipList::new());
        let key_of = |i: u64| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % 100_000).to_le_bytes();
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let list = Arc::clone(&list);
                std::thread::spawn(move || {
                    let mut last_len = 0;
                    for round in 0..200 {
                        let published = list.len();
                        let reverse = (round + r) % 2 == 1;
                        let seen = collect(&list, reverse);
                        assert!(seen.len() >= published, "saw {} of {published}", seen.len());
                        let ordered = seen.windows(2).all(|w| {
                            let ord = key::compare(&w[0].0, &w[1].0);
                            if reverse {
                                ord == Ordering::Greater
                            } else {
                                ord == Ordering::Less
                            }
                        });
                        assert!(ordered);
                        assert!(seen.len() >= last_len);
                        last_len = seen.len();
                    }
                })
            })
            .collect();
        // Batches of 100, sorted within each as the write path sorts a commit group.
        for batch in (0..20_000u64).collect::<Vec<_>>().chunks(100) {
            let mut sorted: Vec<_> = batch.iter().map(|&i| (key_of(i), i)).collect();
            sorted.sort();
            let mut inserter = list.inserter();
            for (k, i) in sorted {
                inserter.insert(&k, make_trailer(i + 1, ValueKind::Put), &i.to_le_bytes());
            }
        }
        for r in readers {
            r.join().expect("reader");
        }
        assert_eq!(collect(&list, false).len(), 20_000);
        assert_levels_complete(&list);
    }
}
