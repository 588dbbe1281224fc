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
//! Each slot has a small lock of its own, held to clone or swap the block (a few nanoseconds). A reader that
//! finds a slot locked does not wait: it asks the cache, as it would without slots.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use super::block::Block;

/// The slot is locked.
const LOCKED: u8 = 1;
/// A read took the slot's block since the cache's eviction last looked.
const TOUCHED: u8 = 2;
/// Tries of a locked slot before a read gives up on it (a holder is done within nanoseconds unless it was
/// preempted).
const TRIES: usize = 16;

struct BlockSlot {
    state: AtomicU8,
    block: UnsafeCell<Option<Block>>,
}

// SAFETY: `block` is read and written only by the holder of the slot's lock (`state`'s `LOCKED` bit, taken
// with acquire and released with release ordering), and a `Block` is `Send` and `Sync` (an `Arc` of words).
unsafe impl Sync for BlockSlot {}

/// The slots of one table's data blocks, in block order.
pub(crate) struct BlockSlots {
    slots: Box<[BlockSlot]>,
}

impl std::fmt::Debug for BlockSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockSlots").field("len", &self.slots.len()).finish()
    }
}

/// A slot's lock, held until dropped.
struct Held<'a>(&'a BlockSlot);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.state.fetch_and(!LOCKED, Ordering::Release);
    }
}

impl BlockSlot {
    /// The slot's lock, unless it stays held through `tries` tries (`None`).
    fn lock(&self, tries: usize) -> Option<Held<'_>> {
        for _ in 0..tries {
            let state = self.state.load(Ordering::Relaxed);
            if state & LOCKED == 0
                && self.state.compare_exchange_weak(state, state | LOCKED, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return Some(Held(self));
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

    /// The block, under `_held`.
    fn block(&self, _held: &Held<'_>) -> &Option<Block> {
        // SAFETY: the caller holds the slot's lock, so no one writes the block meanwhile.
        unsafe { &*self.block.get() }
    }

    /// The block, mutably, under `_held`.
    #[allow(clippy::mut_from_ref)]
    fn block_mut(&self, _held: &Held<'_>) -> &mut Option<Block> {
        // SAFETY: the caller holds the slot's lock, so no one else reads or writes the block meanwhile, and
        // the reference does not outlive the lock's guard.
        unsafe { &mut *self.block.get() }
    }
}

impl BlockSlots {
    /// Empty slots for `count` blocks.
    pub fn new(count: usize) -> Self {
        Self {
            slots: (0..count).map(|_| BlockSlot { state: AtomicU8::new(0), block: UnsafeCell::new(None) }).collect(),
        }
    }

    /// Bytes of memory the slots take, for the cache's accounting (the blocks they hold are the cache's).
    pub fn charge(&self) -> usize {
        std::mem::size_of::<Self>() + self.slots.len() * std::mem::size_of::<BlockSlot>()
    }

    /// Block `i`, if its slot holds it and is not locked; marks the slot used. Starts loading the block's
    /// search windows before taking a reference, as the cache does.
    pub fn get(&self, i: usize) -> Option<Block> {
        let slot = self.slots.get(i)?;
        let held = slot.lock(TRIES)?;
        let block = slot.block(&held).as_ref()?;
        block.prefetch_head();
        let block = block.clone();
        if slot.state.load(Ordering::Relaxed) & TOUCHED == 0 {
            slot.state.fetch_or(TOUCHED, Ordering::Relaxed);
        }
        drop(held);
        Some(block)
    }

    /// Puts `block` in slot `i` if the slot is empty and not locked (otherwise leaves it: a slot is a
    /// shortcut, and a read without one asks the cache). Called under the lock of the cache shard that
    /// holds `block`, whose entry's [`SlotRelease`] empties the slot again; nothing is dropped here.
    fn fill(&self, i: usize, block: &Block) {
        let Some(slot) = self.slots.get(i) else { return };
        let Some(held) = slot.lock(TRIES) else { return };
        let place = slot.block_mut(&held);
        if place.is_none() {
            *place = Some(block.clone());
            slot.state.fetch_and(!TOUCHED, Ordering::Relaxed);
        }
    }

    /// Empties slot `i` if it holds the block whose words start at `identity`, and drops that block after
    /// the slot's lock.
    fn release(&self, i: usize, identity: usize) {
        let Some(slot) = self.slots.get(i) else { return };
        let held = slot.lock_waiting();
        let place = slot.block_mut(&held);
        let taken = if place.as_ref().is_some_and(|b| b.identity() == identity) { place.take() } else { None };
        drop(held);
        drop(taken);
    }

    /// Whether a read took slot `i`'s block since the last call; clears the mark.
    fn take_touched(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|slot| slot.state.fetch_and(!TOUCHED, Ordering::Relaxed) & TOUCHED != 0)
    }

    /// The block slot `i` holds, if any (without marking the slot used).
    #[cfg(test)]
    pub fn held(&self, i: usize) -> Option<Block> {
        let slot = self.slots.get(i)?;
        let held = slot.lock_waiting();
        slot.block(&held).clone()
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
