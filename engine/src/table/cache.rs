//! A bounded cache of decoded blocks, shared by every table of a database: a [`ClockCache`] keyed by
//! `(table number, block offset)`.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::clock::ClockCache;

use super::block::Block;

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

#[derive(Debug)]
pub(crate) struct BlockCache {
    blocks: ClockCache<(u64, u64), Arc<Block>, BuildHasherDefault<BlockKeyHasher>>,
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

    pub fn get(&self, table: u64, offset: u64) -> Option<Arc<Block>> {
        self.blocks.get(shard_hash(table, offset), &(table, offset))
    }

    pub fn insert(&self, table: u64, offset: u64, block: Arc<Block>) {
        let charge = block.charge();
        self.blocks.insert(shard_hash(table, offset), (table, offset), block, charge);
    }

    pub fn hits(&self) -> u64 {
        self.blocks.hits()
    }

    pub fn misses(&self) -> u64 {
        self.blocks.misses()
    }

    pub fn usage(&self) -> usize {
        self.blocks.usage()
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
