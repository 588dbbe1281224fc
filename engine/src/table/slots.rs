//! Block slots: a table reader's shortcut to its cached data blocks, one slot per block beside the handles,
//! so that a read of a cached block looks up neither the cache's shard nor its hash map.
//!
//! The cache stays the owner and the bound. A slot only ever holds a block that the cache holds too:
//! - a slot is filled under the lock of the cache shard that holds the block, and only if it is empty;
//! - the cache's entry carries a [`SlotRelease`], whose drop empties the slot if it still holds that block;
//!   the cache drops an entry when it evicts, replaces or removes it.
//!
//! So a block that leaves the cache leaves its slot too, and the slots add no memory beyond the cache's
//! budget but their own (charged with the table's pinned index). A read through a slot marks it used, and the
//! cache's eviction asks that mark ([`SlotRelease::take_touched`]) as it asks its own reference bit.
//!
//! A slot is one word: the address of its block's words ([`Block::into_raw`]), whose low bits (the words
//! are 8-byte aligned) are the slot's lock and its used mark, and whose top 16 bits (unused by addresses
//! below 2^48, which is where the heap lies) hold the block's entry count, so that a read can ask for the
//! lines its seek searches first before it reads the block. A table's slots take 8 bytes a block, eight to a
//! line. The lock is held to take a reference to the block or to swap it (a few nanoseconds). A reader that
//! finds a slot locked does not wait: it asks the cache, as it would without slots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::block::Block;

/// The slot is locked.
const LOCKED: u64 = 1;
/// A read took the slot's block since the cache's eviction last looked.
const TOUCHED: u64 = 2;
/// The slot's top 16 bits hold the block's entry count (the address is below 2^48).
const COUNTED: u64 = 4;
/// Where the entry count starts in a slot's word.
const COUNT_SHIFT: u32 = 48;
/// Tries of a locked slot before a read gives up on it (a holder is done within nanoseconds unless it was
/// preempted).
const TRIES: usize = 16;

/// One block's slot: 0, or the address of a block's words that the slot holds a share of, with
/// [`LOCKED`], [`TOUCHED`] and [`COUNTED`] in its low bits and, if `COUNTED`, the block's entry count in
/// its top 16.
struct BlockSlot(AtomicU64);

/// The word of a slot that holds the block at `raw`, of `n` entries (neither locked nor marked used).
fn slot_word(raw: usize, n: usize) -> u64 {
    let (raw, n) = (raw as u64, n as u64);
    if raw >> COUNT_SHIFT == 0 && n >> (64 - COUNT_SHIFT) == 0 {
        raw | COUNTED | n << COUNT_SHIFT
    } else {
        raw
    }
}

/// The address of the block a slot's `word` holds, or 0.
fn address(word: u64) -> usize {
    let raw = if word & COUNTED != 0 { word & ((1 << COUNT_SHIFT) - 1) } else { word };
    (raw & !(LOCKED | TOUCHED | COUNTED)) as usize
}

/// The entry count of the block a slot's `word` holds, if the word holds it.
fn entry_count(word: u64) -> Option<usize> {
    (word & COUNTED != 0).then_some((word >> COUNT_SHIFT) as usize)
}

/// The slots of one table's data blocks, in block order, and which of those blocks hold one entry stored
/// uncompressed (one bit a block, set by the first point read of such a block), which a point read whose
/// slot is empty takes from the table's map without asking the cache (see `TableReader::data_block`).
pub(crate) struct BlockSlots {
    slots: Box<[BlockSlot]>,
    in_place: Box<[AtomicU64]>,
}

impl std::fmt::Debug for BlockSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockSlots").field("len", &self.slots.len()).finish()
    }
}

/// A slot's lock, held until [`Held::unlock`] or dropped.
struct Held<'a> {
    slot: &'a BlockSlot,
    /// The slot's word when it was locked, without the lock bit.
    word: u64,
}

impl Held<'_> {
    /// The address of the block the slot holds, or 0.
    fn block(&self) -> usize {
        address(self.word)
    }

    /// Unlocks the slot, leaving `word` (a block's, perhaps marked used) in it.
    fn unlock(self, word: u64) {
        debug_assert_eq!(word & LOCKED, 0);
        self.slot.0.store(word, Ordering::Release);
        std::mem::forget(self);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.slot.0.store(self.word, Ordering::Release);
    }
}

impl BlockSlot {
    /// The slot's lock, unless it stays held through `tries` tries (`None`).
    fn lock(&self, tries: usize) -> Option<Held<'_>> {
        for _ in 0..tries {
            let word = self.0.load(Ordering::Relaxed);
            if word & LOCKED == 0
                && self.0.compare_exchange_weak(word, word | LOCKED, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return Some(Held { slot: self, word });
            }
            std::hint::spin_loop();
        }
        None
    }

    /// The slot's lock, waiting (and yielding the core) for as long as it takes.
    fn lock_waiting(&self) -> Held<'_> {
        loop {
            if let Some(held) = self.lock(TRIES) {
                return held;
            }
            std::thread::yield_now();
        }
    }
}

impl BlockSlots {
    /// Empty slots for `count` blocks.
    pub fn new(count: usize) -> Self {
        Self {
            slots: (0..count).map(|_| BlockSlot(AtomicU64::new(0))).collect(),
            in_place: (0..count.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Bytes of memory the slots take, for the cache's accounting (the blocks they hold are the cache's).
    pub fn charge(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.slots.len() * std::mem::size_of::<BlockSlot>()
            + self.in_place.len() * std::mem::size_of::<AtomicU64>()
    }

    /// Whether block `i` was found to hold one entry stored uncompressed (see [`BlockSlots::set_in_place`]).
    pub fn in_place(&self, i: usize) -> bool {
        self.in_place.get(i / 64).is_some_and(|w| w.load(Ordering::Relaxed) & 1 << (i % 64) != 0)
    }

    /// Records that block `i` holds one entry stored uncompressed: while its slot is empty, a point read
    /// goes to the table's map without asking the cache, and caches the block only if the cache has room.
    pub fn set_in_place(&self, i: usize) {
        if let Some(w) = self.in_place.get(i / 64) {
            w.fetch_or(1 << (i % 64), Ordering::Relaxed);
        }
    }

    /// Block `i`, if its slot holds it and is not locked; marks the slot used. Starts loading the block's
    /// first lines (its reference count, shape and windows) before reading them.
    pub fn get(&self, i: usize) -> Option<Block> {
        let slot = self.slots.get(i)?;
        let held = slot.lock(TRIES)?;
        let (word, raw) = (held.word, held.block());
        if raw == 0 {
            return None;
        }
        Block::prefetch_raw(raw, entry_count(word));
        // SAFETY: the slot holds a share of the block at `raw` (filled from `Block::into_raw`), which only a
        // holder of its lock can give back, and this read holds it.
        let block = unsafe { Block::clone_raw(raw) };
        held.unlock(word | TOUCHED);
        Some(block)
    }

    /// Asks for the first lines of the block slot `i` holds, if any, without locking the slot or waiting: a
    /// hint, harmless if the block leaves the slot meanwhile (a prefetch reads nothing).
    pub fn prefetch(&self, i: usize) {
        let word = self.slots.get(i).map_or(0, |s| s.0.load(Ordering::Relaxed));
        if address(word) != 0 {
            Block::prefetch_raw(address(word), entry_count(word));
        }
    }

    /// Puts `block` in slot `i` if the slot is empty and not locked (otherwise leaves it: a slot is a
    /// shortcut, and a read without one asks the cache). Called under the lock of the cache shard that
    /// holds `block`, whose entry's [`SlotRelease`] empties the slot again; nothing is dropped here.
    fn fill(&self, i: usize, block: &Block) {
        let Some(slot) = self.slots.get(i) else { return };
        let Some(held) = slot.lock(TRIES) else { return };
        if held.block() == 0 {
            held.unlock(slot_word(block.clone().into_raw(), block.len()));
        }
    }

    /// Empties slot `i` if it holds the block whose words start at `identity`, and drops that block after
    /// the slot's lock.
    fn release(&self, i: usize, identity: usize) {
        let Some(slot) = self.slots.get(i) else { return };
        let held = slot.lock_waiting();
        if held.block() == identity && identity != 0 {
            held.unlock(0);
            // SAFETY: the slot held the share `identity` stands for, and gave it up above, under its lock.
            drop(unsafe { Block::from_raw(identity) });
        }
    }

    /// Whether a read took slot `i`'s block since the last call; clears the mark. (A read or fill that holds
    /// the slot's lock meanwhile may set it again as it unlocks: the mark is a hint to the eviction.)
    fn take_touched(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|slot| slot.0.fetch_and(!TOUCHED, Ordering::Relaxed) & TOUCHED != 0)
    }

    /// The block slot `i` holds, if any (without marking the slot used).
    #[cfg(test)]
    pub fn held(&self, i: usize) -> Option<Block> {
        let held = self.slots.get(i)?.lock_waiting();
        // SAFETY: as in `get`.
        (held.block() != 0).then(|| unsafe { Block::clone_raw(held.block()) })
    }
}

impl Drop for BlockSlots {
    fn drop(&mut self) {
        // Every slot is emptied by its cache entry's release, which holds the slots alive: none is left full
        // by then. A share left behind all the same is given back rather than leaked.
        for slot in self.slots.iter_mut() {
            let raw = address(*slot.0.get_mut());
            if raw != 0 {
                // SAFETY: the slot held the share `raw` stands for; nothing else can reach the slot now.
                drop(unsafe { Block::from_raw(raw) });
            }
        }
    }
}

/// Carried by the cache's entry of a block that has a slot: empties the slot when the entry is dropped.
#[derive(Debug)]
pub(crate) struct SlotRelease {
    slots: Arc<BlockSlots>,
    index: usize,
    /// [`Block::identity`] of the entry's block.
    identity: usize,
}

impl SlotRelease {
    /// The release of slot `index` of `slots` for `block`.
    pub fn new(slots: Arc<BlockSlots>, index: usize, block: &Block) -> Self {
        Self { slots, index, identity: block.identity() }
    }

    /// Whether this release is for slot `index` of `slots`.
    pub fn is_for(&self, slots: &Arc<BlockSlots>, index: usize) -> bool {
        Arc::ptr_eq(&self.slots, slots) && self.index == index
    }

    /// Puts the entry's `block` in its slot, if the slot is empty. Only under the lock of the cache shard
    /// that holds the entry, so that the entry's drop comes after it.
    pub fn fill(&self, block: &Block) {
        debug_assert_eq!(block.identity(), self.identity);
        self.slots.fill(self.index, block);
    }

    /// Whether a read took the block through its slot since the cache's eviction last asked.
    pub fn take_touched(&self) -> bool {
        self.slots.take_touched(self.index)
    }
}

impl Drop for SlotRelease {
    fn drop(&mut self) {
        self.slots.release(self.index, self.identity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::key::{internal_key, make_trailer, ValueKind};
    use crate::table::block::BlockBuilder;

    fn block(tag: &str) -> Block {
        let mut b = BlockBuilder::default();
        b.add(&internal_key(tag.as_bytes(), make_trailer(1, ValueKind::Put)), tag.as_bytes());
        Block::decode(&b.finish()).unwrap()
    }

    /// A slot is a word, and a block's in-place mark a bit: 1,000 blocks take 8,000 bytes and 16 words.
    #[test]
    fn a_slot_is_one_word() {
        assert_eq!(std::mem::size_of::<BlockSlot>(), 8);
        assert_eq!(BlockSlots::new(1000).charge(), std::mem::size_of::<BlockSlots>() + 8000 + 16 * 8);
    }

    /// A block marked as read in place stays marked, and no other block is.
    #[test]
    fn in_place_marks_are_one_bit_a_block() {
        let slots = BlockSlots::new(130);
        for i in [0, 63, 64, 129] {
            slots.set_in_place(i);
        }
        let marked: Vec<usize> = (0..130).filter(|&i| slots.in_place(i)).collect();
        assert_eq!(marked, [0, 63, 64, 129]);
        assert!(slots.get(0).is_none(), "a mark fills no slot");
    }

    /// A slot is filled only while empty, a read through it shares the block and marks it used, and a release
    /// empties it only for the block it holds, giving back the slot's share.
    #[test]
    fn fill_read_mark_and_release() {
        let slots = BlockSlots::new(2);
        let (a, b) = (block("a"), block("b"));
        assert!(slots.get(0).is_none());
        slots.fill(0, &a);
        slots.fill(0, &b);
        assert_eq!(a.holders(), 2);
        assert_eq!(b.holders(), 1, "a full slot is not filled again");
        assert!(!slots.take_touched(0));
        let read = slots.get(0).unwrap();
        assert_eq!((read.identity(), read.value(0), a.holders()), (a.identity(), &b"a"[..], 3));
        assert!(slots.take_touched(0));
        assert!(!slots.take_touched(0), "the mark is cleared");
        drop(read);
        slots.release(0, b.identity());
        assert_eq!(slots.held(0).map(|h| h.identity()), Some(a.identity()), "another block's release is ignored");
        slots.release(0, a.identity());
        assert!(slots.get(0).is_none());
        assert_eq!(a.holders(), 1);
        assert!(slots.get(1).is_none() && slots.get(2).is_none());
    }

    /// A slot found locked is passed over, not waited for; the lock leaves the slot's word as it found it.
    #[test]
    fn a_locked_slot_is_passed_over() {
        let slots = BlockSlots::new(1);
        let a = block("a");
        slots.fill(0, &a);
        let slot = slots.slots.first().unwrap();
        let held = slot.lock(1).unwrap();
        assert!(slots.get(0).is_none());
        slots.fill(0, &block("b"));
        drop(held);
        assert_eq!(slots.get(0).map(|g| g.identity()), Some(a.identity()));
    }

    /// A prefetch takes no lock, no share and no mark, full slot, empty slot or none.
    #[test]
    fn a_prefetch_changes_nothing() {
        let slots = BlockSlots::new(2);
        let a = block("a");
        slots.fill(0, &a);
        let words = |s: &BlockSlots| s.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).collect::<Vec<_>>();
        let before = words(&slots);
        for i in 0..3 {
            slots.prefetch(i);
        }
        assert_eq!((words(&slots), a.holders()), (before, 2));
        assert_eq!(words(&slots).into_iter().map(address).collect::<Vec<_>>(), vec![a.identity(), 0]);
    }

    /// A slot's word holds the block's address and, when both fit, its entry count beside the flags.
    #[test]
    fn a_slot_word_holds_the_address_and_the_count() {
        for (raw, n) in [(0x7fff_dead_bee8usize, 1usize), (0x10, 0xffff), (0x5555_0000_0008, 37)] {
            let word = slot_word(raw, n);
            for flags in [0, LOCKED, TOUCHED, LOCKED | TOUCHED] {
                assert_eq!((address(word | flags), entry_count(word | flags)), (raw, Some(n)));
            }
        }
        // A count or an address too large for the word leaves the count out.
        for (raw, n) in [(0x10usize, 0x1_0000usize), (1usize << 50 | 8, 3)] {
            assert_eq!((address(slot_word(raw, n) | TOUCHED), entry_count(slot_word(raw, n))), (raw, None));
        }
    }

    /// Slots dropped while full give their shares back.
    #[test]
    fn dropped_slots_give_their_blocks_back() {
        let slots = BlockSlots::new(3);
        let a = block("a");
        slots.fill(1, &a);
        assert_eq!(a.holders(), 2);
        drop(slots);
        assert_eq!(a.holders(), 1);
    }
}
