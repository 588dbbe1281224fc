//! A bounded cache of decoded blocks, shared by every table of a database: a [`ClockCache`] keyed by
//! `(table number, block offset)`. It holds data blocks and also every table's index and filter, so that
//! all the memory tables take for reading is within one budget however many tables there are; index and
//! filter blocks are cached at [`Priority::High`] (every point read of the table needs them) and are
//! read from the table again when they were evicted.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::clock::{ClockCache, Priority};

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

/// What the cache holds under a `(table, offset)`: the offsets of a table's data, index and filter blocks
/// differ, so one key never names two kinds.
#[derive(Debug, Clone)]
enum Cached {
    Data(Arc<Block>),
    Index(Arc<TableIndex>),
    Filter(Arc<Filter>),
}

#[derive(Debug)]
pub(crate) struct BlockCache {
    blocks: ClockCache<(u64, u64), Cached, BuildHasherDefault<BlockKeyHasher>>,
}

/// Picks a block's shard.
fn shard_hash(table: u64, offset: u64) -> u64 {
    table.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (offset >> 12).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
}

impl BlockCache {
    /// A cache holding up to about `capacity` bytes of decoded blocks.
    pub fn new(capacity: usize) -> Self {
        Self { blocks: ClockCache::new(capacity) }
    }

    /// Whether anything can be cached: a disabled cache has its tables keep their index and filter.
    pub fn enabled(&self) -> bool {
        self.blocks.enabled()
    }

    pub fn get(&self, table: u64, offset: u64) -> Option<Arc<Block>> {
        let accept = |c: &Cached| matches!(c, Cached::Data(_));
        match self.blocks.get_if(shard_hash(table, offset), &(table, offset), accept) {
            Some(Cached::Data(b)) => Some(b),
            _ => None,
        }
    }

    pub fn insert(&self, table: u64, offset: u64, block: Arc<Block>) {
        let charge = block.charge();
        self.blocks.insert(shard_hash(table, offset), (table, offset), Cached::Data(block), charge);
    }

    /// The index of the table `table`, whose index block is at `offset`.
    pub fn get_index(&self, table: u64, offset: u64) -> Option<Arc<TableIndex>> {
        let accept = |c: &Cached| matches!(c, Cached::Index(_));
        match self.blocks.get_if(shard_hash(table, offset), &(table, offset), accept) {
            Some(Cached::Index(i)) => Some(i),
            _ => None,
        }
    }

    pub fn insert_index(&self, table: u64, offset: u64, index: Arc<TableIndex>) {
        let charge = index.charge();
        self.blocks.insert_with_priority(
            shard_hash(table, offset),
            (table, offset),
            Cached::Index(index),
            charge,
            Priority::High,
        );
    }

    /// The filter of the table `table`, whose filter block is at `offset`.
    pub fn get_filter(&self, table: u64, offset: u64) -> Option<Arc<Filter>> {
        let accept = |c: &Cached| matches!(c, Cached::Filter(_));
        match self.blocks.get_if(shard_hash(table, offset), &(table, offset), accept) {
            Some(Cached::Filter(f)) => Some(f),
            _ => None,
        }
    }

    pub fn insert_filter(&self, table: u64, offset: u64, filter: Arc<Filter>) {
        let charge = filter.charge();
        self.blocks.insert_with_priority(
            shard_hash(table, offset),
            (table, offset),
            Cached::Filter(filter),
            charge,
            Priority::High,
        );
    }

    pub fn hits(&self) -> u64 {
        self.blocks.hits()
    }

    pub fn misses(&self) -> u64 {
        self.blocks.misses()
    }

    /// Bytes charged for everything cached: data, index and filter blocks.
    pub fn usage(&self) -> usize {
        self.blocks.usage()
    }

    /// Drops everything cached.
    #[cfg(test)]
    pub fn clear(&self) {
        self.blocks.clear();
    }

    /// Of [`BlockCache::usage`], the bytes of index and filter blocks.
    pub fn index_filter_usage(&self) -> usize {
        self.blocks.usage_high()
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
