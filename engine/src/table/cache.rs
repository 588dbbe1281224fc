//! A bounded cache of decoded blocks, shared by every table of a database.
//!
//! Sharded by block, each shard evicting with the CLOCK (second chance) policy: a hit sets a reference bit;
//! eviction walks the ring, clearing set bits and dropping the first unreferenced block.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use super::block::Block;

const SHARDS: usize = 16;

type Key = (u64, u64);

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
struct Slot {
    block: Arc<Block>,
    referenced: bool,
}

/// Hits and misses are counted per shard, under the shard's lock: one counter shared by every reader would
/// be a cache line that concurrent readers take from each other on every lookup.
#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Key, Slot, BuildHasherDefault<BlockKeyHasher>>,
    ring: VecDeque<Key>,
    used: usize,
    hits: u64,
    misses: u64,
}

#[derive(Debug)]
pub(crate) struct BlockCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: usize,
}

impl BlockCache {
    /// A cache holding up to about `capacity` bytes of decoded blocks.
    pub fn new(capacity: usize) -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(), shard_capacity: capacity / SHARDS }
    }

    fn shard(&self, key: Key) -> &Mutex<Shard> {
        let h = key.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (key.1 >> 12).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        &self.shards[(h >> 59) as usize % SHARDS]
    }

    pub fn get(&self, table: u64, offset: u64) -> Option<Arc<Block>> {
        let mut shard = self.shard((table, offset)).lock();
        let found = shard.map.get_mut(&(table, offset)).map(|slot| {
            slot.referenced = true;
            slot.block.clone()
        });
        if found.is_some() {
            shard.hits += 1;
        } else {
            shard.misses += 1;
        }
        found
    }

    pub fn insert(&self, table: u64, offset: u64, block: Arc<Block>) {
        let charge = block.charge();
        if charge > self.shard_capacity {
            return;
        }
        let key = (table, offset);
        let mut shard = self.shard(key).lock();
        if shard.map.insert(key, Slot { block, referenced: false }).is_some() {
            return;
        }
        shard.ring.push_back(key);
        shard.used += charge;
        while shard.used > self.shard_capacity {
            let Some(victim) = shard.ring.pop_front() else { break };
            let Some(slot) = shard.map.get_mut(&victim) else { continue };
            if slot.referenced {
                slot.referenced = false;
                shard.ring.push_back(victim);
            } else if let Some(slot) = shard.map.remove(&victim) {
                shard.used -= slot.block.charge();
            }
        }
    }

    pub fn hits(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().hits).sum()
    }

    pub fn misses(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().misses).sum()
    }

    pub fn usage(&self) -> usize {
        self.shards.iter().map(|s| s.lock().used).sum()
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
