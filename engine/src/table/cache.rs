//! A bounded cache of decoded blocks, shared by every table of a database, keyed by `(table number, block
//! offset)`. Two [`ClockCache`]s share one budget: one for the tables' index and filter blocks (every
//! point read of a table needs both, and each is large: a table's index takes a few percent of its
//! data), the other for data blocks, whose capacity is what the first leaves. The index and filter pool
//! may take up to three quarters of the budget; it is one shard, so that a shard's share never keeps out
//! an index that fits in the budget. An index or filter that was evicted is read from the table again.
//!
//! Before either pool, a table's reader may **pin** its index and filter: hold them itself, for as long as
//! it is open, so that a point read looks neither up. Pinned bytes are charged to the same budget (they
//! count in [`BlockCache::usage`] and [`BlockCache::index_filter_usage`], and the two pools shrink by as
//! much), up to [`PIN_SHARE`] of it; a table whose index and filter do not fit in what is left keeps them
//! in the index and filter pool instead.
//!
//! A pinned table also keeps **block slots** ([`super::slots`]): its cached data blocks beside their handles,
//! filled and emptied with the cache's entries, so that a read of a cached block skips the lookup here. Its
//! hits count with the cache's ([`BlockCache::count_slot_hit`]).

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::clock::{Busy, ClockCache};

use super::block::Block;
use super::reader::{Filter, TableIndex};
use super::slots::{BlockSlots, SlotRelease};

/// A multiply-xor hasher for the cache's `(table, offset)` keys: they are not attacker-chosen, and SipHash
/// showed up in read profiles.
#[derive(Default)]
struct BlockKeyHasher(u64);

impl Hasher for BlockKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// An index or a filter: their offsets in a table differ, so one key never names both.
#[derive(Debug, Clone)]
enum Meta {
    Index(Arc<TableIndex>),
    Filter(Arc<Filter>),
}

type Cache<V> = ClockCache<(u64, u64), V, BuildHasherDefault<BlockKeyHasher>>;

/// A cached data block, and what empties its table's slot for it when the entry leaves the cache (if the
/// table keeps slots). The release is declared first so that it is dropped while the entry still holds the
/// block: no other block can then have taken the block's address.
#[derive(Debug, Clone)]
struct CachedBlock {
    release: Option<Arc<SlotRelease>>,
    block: Block,
}

impl CachedBlock {
    fn touched(&self) -> bool {
        self.release.as_ref().is_some_and(|r| r.take_touched())
    }

    /// Puts the block in slot `index` of `slots` if this entry's release is for it; whether it is.
    fn fill_slot(&self, slots: &Arc<BlockSlots>, index: usize) -> bool {
        let Some(release) = self.release.as_ref().filter(|r| r.is_for(slots, index)) else { return false };
        release.fill(&self.block);
        true
    }
}

/// Stripes of the slots' hit counter: a reader adds to its thread's, so that readers on different cores do not
/// take one cache line from each other on every read.
const HIT_STRIPES: usize = 16;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Stripe(AtomicU64);

thread_local! {
    /// This thread's stripe of a hit counter.
    static STRIPE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % HIT_STRIPES
    };
}

/// The share of the budget that pinned index and filter blocks may take: a half.
pub(crate) const PIN_SHARE: (usize, usize) = (1, 2);

#[derive(Debug)]
pub(crate) struct BlockCache {
    capacity: usize,
    /// Whether anything is cached (or charged) at all.
    enabled: bool,
    /// Bytes of index and filter blocks pinned by their tables' readers, at most `pin_limit`.
    pinned: AtomicUsize,
    pin_limit: usize,
    /// Data blocks, within `capacity` less what `meta` holds and what is pinned.
    blocks: Cache<CachedBlock>,
    /// Hits through the tables' block slots, which do not reach `blocks`.
    slot_hits: [Stripe; HIT_STRIPES],
    /// Index and filter blocks not pinned, within three quarters of `capacity` less what is pinned.
    meta: Cache<Meta>,
    /// Serializes [`BlockCache::rebalance`], so that the capacities last set follow the last change.
    rebalancing: parking_lot::Mutex<()>,
}

/// Picks a block's shard.
fn shard_hash(table: u64, offset: u64) -> u64 {
    table.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (offset >> 12).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
}

impl BlockCache {
    /// A cache holding up to about `capacity` bytes of decoded blocks: data, index and filter.
    pub fn new(capacity: usize) -> Self {
        Self::with_pin_limit(capacity, capacity / PIN_SHARE.1 * PIN_SHARE.0)
    }

    /// As [`BlockCache::new`], with at most `pin_limit` bytes of pinned index and filter blocks (0: none
    /// are pinned, every table's go through the index and filter pool).
    pub fn with_pin_limit(capacity: usize, pin_limit: usize) -> Self {
        let meta = ClockCache::with_shards(capacity / 4 * 3, 1);
        Self {
            capacity,
            enabled: meta.enabled(),
            pinned: AtomicUsize::new(0),
            pin_limit: pin_limit.min(capacity / 4 * 3),
            blocks: ClockCache::new(capacity).with_touched(CachedBlock::touched),
            slot_hits: Default::default(),
            meta,
            rebalancing: parking_lot::Mutex::new(()),
        }
    }

    /// Whether anything can be cached: a disabled cache has its tables keep their index and filter.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Charges `charge` bytes of a table's index and filter, which its reader then holds, if they fit in
    /// what is left of the pin limit; `false` (and nothing charged) if not.
    pub fn try_pin(&self, charge: usize) -> bool {
        if !self.enabled {
            return false;
        }
        let fits = self
            .pinned
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(charge).filter(|&total| total <= self.pin_limit)
            })
            .is_ok();
        if fits {
            self.rebalance();
        }
        fits
    }

    /// Gives back what [`BlockCache::try_pin`] charged (the table is closed).
    pub fn unpin(&self, charge: usize) {
        self.pinned.fetch_sub(charge, Ordering::AcqRel);
        self.rebalance();
    }

    /// Sets the pools' capacities from what is pinned and what the index and filter pool holds.
    fn rebalance(&self) {
        let _one_at_a_time = self.rebalancing.lock();
        let pinned = self.pinned.load(Ordering::Acquire);
        self.meta.set_capacity((self.capacity / 4 * 3).saturating_sub(pinned));
        self.blocks.set_capacity(self.capacity.saturating_sub(pinned + self.meta.usage()));
    }

    /// The data block at `offset` of `table`, unless its shard is busy: a read that gets `Err(Busy)`
    /// decodes the block itself rather than wait for a holder of the shard that may have been preempted.
    /// A block found is also put in `slot` (the table's slots and the block's index), if it is empty and the
    /// cache's entry carries a release for it; the flag says whether it does (if not, the caller inserts
    /// the block again with one).
    pub fn get_unless_busy(
        &self,
        table: u64,
        offset: u64,
        slot: Option<(&Arc<BlockSlots>, usize)>,
    ) -> Result<Option<(Block, bool)>, Busy> {
        let mut released = false;
        let found = self.blocks.get_unless_busy(shard_hash(table, offset), &(table, offset), |cached| {
            cached.block.prefetch_head();
            if let Some((slots, index)) = slot {
                released = cached.fill_slot(slots, index);
            }
        })?;
        Ok(found.map(|cached| (cached.block, released)))
    }

    /// Counts a hit of a block read through a table's slot.
    pub fn count_slot_hit(&self) {
        let stripe = STRIPE.with(|s| *s);
        if let Some(counter) = self.slot_hits.get(stripe) {
            counter.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Holds the shard of a data block's key, as a preempted thread would.
    #[cfg(test)]
    pub fn hold_shard(&self, table: u64, offset: u64) -> impl Drop + '_ {
        self.blocks.hold_shard(shard_hash(table, offset))
    }

    /// Whether the block at `offset` of `table`, charged about `charge` bytes, would be cached without
    /// evicting anything; `false` if its shard is busy.
    pub fn has_room_unless_busy(&self, table: u64, offset: u64, charge: usize) -> bool {
        self.blocks.has_room_unless_busy(shard_hash(table, offset), charge)
    }

    /// Caches a data block unless its shard is busy (then it is left out), and puts it in `slot` (the table's
    /// slots and the block's index) if it is kept and the slot is empty.
    pub fn insert_unless_busy(&self, table: u64, offset: u64, block: Block, slot: Option<(Arc<BlockSlots>, usize)>) {
        self.insert_block(table, offset, block, slot, false);
    }

    /// [`BlockCache::insert_unless_busy`] that leaves the block out if its shard has no room for it without
    /// evicting anything.
    pub fn insert_if_room_unless_busy(
        &self,
        table: u64,
        offset: u64,
        block: Block,
        slot: Option<(Arc<BlockSlots>, usize)>,
    ) {
        self.insert_block(table, offset, block, slot, true);
    }

    fn insert_block(
        &self,
        table: u64,
        offset: u64,
        block: Block,
        slot: Option<(Arc<BlockSlots>, usize)>,
        if_room: bool,
    ) {
        let release = slot.map(|(slots, index)| Arc::new(SlotRelease::new(slots, index, &block)));
        let charge = block.charge() + release.as_ref().map_or(0, |_| std::mem::size_of::<SlotRelease>() + 16);
        let cached = CachedBlock { release, block };
        let (hash, key) = (shard_hash(table, offset), (table, offset));
        let fill = |kept: &CachedBlock| {
            if let Some(release) = &kept.release {
                release.fill(&kept.block);
            }
        };
        let _left_out = self.blocks.insert_unless_busy_then(hash, key, cached, charge, !if_room, fill);
    }

    /// The index of the table `table`, whose index block is at `offset`.
    pub fn get_index(&self, table: u64, offset: u64) -> Option<Arc<TableIndex>> {
        match self.meta.get_if(shard_hash(table, offset), &(table, offset), |m| matches!(m, Meta::Index(_))) {
            Some(Meta::Index(i)) => Some(i),
            _ => None,
        }
    }

    pub fn insert_index(&self, table: u64, offset: u64, index: Arc<TableIndex>) {
        let charge = index.charge();
        self.insert_meta(table, offset, Meta::Index(index), charge);
    }

    /// The filter of the table `table`, whose filter block is at `offset`.
    pub fn get_filter(&self, table: u64, offset: u64) -> Option<Arc<Filter>> {
        match self.meta.get_if(shard_hash(table, offset), &(table, offset), |m| matches!(m, Meta::Filter(_))) {
            Some(Meta::Filter(f)) => Some(f),
            _ => None,
        }
    }

    pub fn insert_filter(&self, table: u64, offset: u64, filter: Arc<Filter>) {
        let charge = filter.charge();
        self.insert_meta(table, offset, Meta::Filter(filter), charge);
    }

    /// Drops a table's index and filter (the table is closed).
    pub fn remove_meta(&self, table: u64, index_offset: u64, filter_offset: u64) {
        self.meta.remove(shard_hash(table, index_offset), &(table, index_offset));
        self.meta.remove(shard_hash(table, filter_offset), &(table, filter_offset));
        self.rebalance();
    }

    /// Caches an index or filter, and gives data blocks what is left of the budget.
    fn insert_meta(&self, table: u64, offset: u64, meta: Meta, charge: usize) {
        self.meta.insert(shard_hash(table, offset), (table, offset), meta, charge);
        self.rebalance();
    }

    /// The data block at `offset` of `table`, if cached (counted as a lookup).
    #[cfg(test)]
    pub fn cached_block(&self, table: u64, offset: u64) -> Option<Block> {
        self.blocks.get(shard_hash(table, offset), &(table, offset)).map(|cached| cached.block)
    }

    /// Drops everything cached (pinned blocks stay with their readers).
    #[cfg(test)]
    pub fn clear(&self) {
        self.blocks.clear();
        self.meta.clear();
    }

    /// Lookups answered, and blocks read through their tables' slots.
    pub fn hits(&self) -> u64 {
        let slot_hits: u64 = self.slot_hits.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
        self.blocks.hits() + self.meta.hits() + slot_hits
    }

    pub fn misses(&self) -> u64 {
        self.blocks.misses() + self.meta.misses()
    }

    /// Bytes charged for everything cached: data, index and filter blocks, pinned ones included.
    pub fn usage(&self) -> usize {
        self.blocks.usage() + self.index_filter_usage()
    }

    /// Of [`BlockCache::usage`], the bytes of index and filter blocks, pinned or in their pool.
    pub fn index_filter_usage(&self) -> usize {
        self.meta.usage() + self.pinned_usage()
    }

    /// Of [`BlockCache::index_filter_usage`], the bytes pinned by readers.
    pub fn pinned_usage(&self) -> usize {
        self.pinned.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::key::{internal_key, make_trailer, ValueKind};
    use crate::table::block::BlockBuilder;

    fn block(size: usize) -> Block {
        let mut b = BlockBuilder::default();
        b.add(&internal_key(b"k", make_trailer(1, ValueKind::Put)), &vec![0u8; size]);
        Block::decode(&b.finish()).unwrap()
    }

    #[test]
    fn stays_within_capacity_and_counts_hits() {
        let cache = BlockCache::new(16 * 10_000);
        for i in 0..1000 {
            cache.insert_unless_busy(1, i * 4096, block(1000), None);
        }
        assert!(cache.usage() <= 16 * 10_000);
        assert!(cache.get_unless_busy(1, 999 * 4096, None).unwrap().is_some());
        assert!(cache.get_unless_busy(2, 0, None).unwrap().is_none());
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        let tiny = BlockCache::new(0);
        tiny.insert_unless_busy(1, 0, block(10), None);
        assert!(matches!(tiny.get_unless_busy(1, 0, None), Ok(None)));
    }
}
