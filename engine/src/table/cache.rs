//! A bounded cache of decoded blocks, shared by every table of a database, keyed by `(table number, block
//! offset)`. Two [`ClockCache`]s share one budget: one for the tables' index and filter blocks (every
//! point read of a table needs both, and each is large: a table's index takes a few percent of its
//! data), the other for data blocks, whose capacity is what the first leaves. The index and filter pool
//! may take up to three quarters of the budget; it is one shard, so that a shard's share never keeps out
//! an index that fits in the budget. An index or filter that was evicted is read from the table again.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::clock::ClockCache;

use super::block::Block;
use super::reader::{Filter, TableIndex};

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

#[derive(Debug)]
pub(crate) struct BlockCache {
    capacity: usize,
    /// Data blocks, within `capacity` less what `meta` holds.
    blocks: Cache<Arc<Block>>,
    /// Index and filter blocks, within three quarters of `capacity`.
    meta: Cache<Meta>,
}

/// Picks a block's shard.
fn shard_hash(table: u64, offset: u64) -> u64 {
    table.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (offset >> 12).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
}

impl BlockCache {
    /// A cache holding up to about `capacity` bytes of decoded blocks: data, index and filter.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, blocks: ClockCache::new(capacity), meta: ClockCache::with_shards(capacity / 4 * 3, 1) }
    }

    /// Whether anything can be cached: a disabled cache has its tables keep their index and filter.
    pub fn enabled(&self) -> bool {
        self.meta.enabled()
    }

    pub fn get(&self, table: u64, offset: u64) -> Option<Arc<Block>> {
        self.blocks.get(shard_hash(table, offset), &(table, offset))
    }

    pub fn insert(&self, table: u64, offset: u64, block: Arc<Block>) {
        let charge = block.charge();
        self.blocks.insert(shard_hash(table, offset), (table, offset), block, charge);
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
        self.blocks.set_capacity(self.capacity.saturating_sub(self.meta.usage()));
    }

    /// Caches an index or filter, and gives data blocks what is left of the budget.
    fn insert_meta(&self, table: u64, offset: u64, meta: Meta, charge: usize) {
        self.meta.insert(shard_hash(table, offset), (table, offset), meta, charge);
        self.blocks.set_capacity(self.capacity.saturating_sub(self.meta.usage()));
    }

    /// Drops everything cached.
    #[cfg(test)]
    pub fn clear(&self) {
        self.blocks.clear();
        self.meta.clear();
    }

    pub fn hits(&self) -> u64 {
        self.blocks.hits() + self.meta.hits()
    }

    pub fn misses(&self) -> u64 {
        self.blocks.misses() + self.meta.misses()
    }

    /// Bytes charged for everything cached: data, index and filter blocks.
    pub fn usage(&self) -> usize {
        self.blocks.usage() + self.meta.usage()
    }

    /// Of [`BlockCache::usage`], the bytes of index and filter blocks.
    pub fn index_filter_usage(&self) -> usize {
        self.meta.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::key::{internal_key, make_trailer, ValueKind};
    use crate::table::block::BlockBuilder;

    fn block(size: usize) -> Arc<Block> {
        let mut b = BlockBuilder::default();
        b.add(&internal_key(b"k", make_trailer(1, ValueKind::Put)), &vec![0u8; size]);
        Arc::new(Block::decode(b.finish()).unwrap())
    }

    #[test]
    fn stays_within_capacity_and_counts_hits() {
        let cache = BlockCache::new(16 * 10_000);
        for i in 0..1000 {
            cache.insert(1, i * 4096, block(1000));
        }
        assert!(cache.usage() <= 16 * 10_000);
        assert!(cache.get(1, 999 * 4096).is_some());
        assert!(cache.get(2, 0).is_none());
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        let tiny = BlockCache::new(0);
        tiny.insert(1, 0, block(10));
        assert!(tiny.get(1, 0).is_none());
    }
}
