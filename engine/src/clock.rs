//! A bounded, sharded cache evicting with the CLOCK (second chance) policy: a hit sets an entry's reference
//! count; eviction walks the ring, lowering set counts and dropping the first unreferenced entry. An entry
//! of [`Priority::High`] is given more chances (a hit sets its count to 3, not 1), so that what every read
//! needs (a table's index and filter) outlives blocks that a scan passes through once. Holds the
//! engine's decoded blocks (`table::cache`); public so that layers above cache their own decoded values
//! with the same policy (the record store's cache of decoded records).
//!
//! The caller picks the shard with a hash of its own (one it computes anyway, or a cheap one), so a lookup
//! hashes the key once more only inside its shard's map.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};

use parking_lot::Mutex;

const SHARDS: usize = 16;

/// How long an entry holds on under eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// One more pass of the clock after each hit; none if never hit.
    #[default]
    Low,
    /// Three more passes after each hit, one if never hit.
    High,
}

impl Priority {
    fn on_insert(self) -> u8 {
        match self {
            Priority::Low => 0,
            Priority::High => 1,
        }
    }

    fn on_hit(self) -> u8 {
        match self {
            Priority::Low => 1,
            Priority::High => 3,
        }
    }
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    charge: usize,
    /// Passes of the clock the entry survives: set by a hit, lowered by each pass.
    chances: u8,
    priority: Priority,
}

/// Hits and misses are counted per shard, under the shard's lock: one counter shared by every reader would
/// be a cache line that concurrent readers take from each other on every lookup.
#[derive(Debug)]
struct Shard<K, V, S> {
    map: HashMap<K, Slot<V>, S>,
    ring: VecDeque<K>,
    used: usize,
    /// Of `used`, the charge of [`Priority::High`] entries.
    used_high: usize,
    hits: u64,
    misses: u64,
}

/// Up to about `capacity` bytes of values (as charged by [`ClockCache::insert`]), in 16 shards of a
/// sixteenth each.
#[derive(Debug)]
pub struct ClockCache<K, V, S = RandomState> {
    shards: Box<[Mutex<Shard<K, V, S>>]>,
    shard_capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher + Default> ClockCache<K, V, S> {
    /// An empty cache of up to about `capacity` bytes; 0 caches nothing.
    pub fn new(capacity: usize) -> Self {
        let shard = || {
            Mutex::new(Shard {
                map: HashMap::default(),
                ring: VecDeque::new(),
                used: 0,
                used_high: 0,
                hits: 0,
                misses: 0,
            })
        };
        Self { shards: (0..SHARDS).map(|_| shard()).collect(), shard_capacity: capacity / SHARDS }
    }

    /// Whether anything can be cached at all.
    pub fn enabled(&self) -> bool {
        self.shard_capacity > 0
    }

    /// The shard of a key whose hash is `hash`, from bits 32 to 35: a map takes its bucket from the low bits
    /// of its own hash and its tag from the top seven, so a caller may key the map by this very hash (it is
    /// the same in every key of a shard in the bits that pick the shard).
    fn shard(&self, hash: u64) -> &Mutex<Shard<K, V, S>> {
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// The value under `key`, marking it recently used.
    pub fn get<Q: Hash + Eq + ?Sized>(&self, hash: u64, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.get_if(hash, key, |_| true)
    }

    /// The value under `key` if `accept` takes it (a caller whose keys are hashes checks what the value is
    /// of). Only an accepted value counts as a hit and is marked recently used.
    pub fn get_if<Q: Hash + Eq + ?Sized>(&self, hash: u64, key: &Q, accept: impl FnOnce(&V) -> bool) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let mut shard = self.shard(hash).lock();
        let found = shard.map.get_mut(key).filter(|slot| accept(&slot.value)).map(|slot| {
            slot.chances = slot.priority.on_hit();
            slot.value.clone()
        });
        if found.is_some() {
            shard.hits += 1;
        } else {
            shard.misses += 1;
        }
        found
    }

    /// Caches `value` under `key` (replacing what was there), charged `charge` bytes, then evicts until
    /// the shard is back within its capacity. A value charged more than a whole shard is not kept, and
    /// takes the key's earlier value with it.
    pub fn insert(&self, hash: u64, key: K, value: V, charge: usize) {
        self.insert_with_priority(hash, key, value, charge, Priority::Low);
    }

    /// [`ClockCache::insert`] of an entry of the given priority.
    pub fn insert_with_priority(&self, hash: u64, key: K, value: V, charge: usize, priority: Priority) {
        let mut shard = self.shard(hash).lock();
        if charge > self.shard_capacity {
            if let Some(old) = shard.map.remove(&key) {
                shard.release(&old);
            }
            return;
        }
        let slot = Slot { value, charge, chances: priority.on_insert(), priority };
        match shard.map.insert(key.clone(), slot) {
            Some(old) => shard.release(&old),
            None => shard.ring.push_back(key),
        }
        shard.used += charge;
        if priority == Priority::High {
            shard.used_high += charge;
        }
        while shard.used > self.shard_capacity {
            let Some(victim) = shard.ring.pop_front() else { break };
            let Some(slot) = shard.map.get_mut(&victim) else { continue };
            if slot.chances > 0 {
                slot.chances -= 1;
                shard.ring.push_back(victim);
            } else if let Some(slot) = shard.map.remove(&victim) {
                shard.release(&slot);
            }
        }
    }

    /// Lookups answered, since the cache was made.
    pub fn hits(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().hits).sum()
    }

    /// Lookups that found nothing (or nothing accepted), since the cache was made.
    pub fn misses(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().misses).sum()
    }

    /// Bytes charged for what is cached.
    pub fn usage(&self) -> usize {
        self.shards.iter().map(|s| s.lock().used).sum()
    }

    /// Drops every entry (counters stay).
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.map.clear();
            shard.ring.clear();
            shard.used = 0;
            shard.used_high = 0;
        }
    }

    /// Of [`ClockCache::usage`], the bytes charged for entries of [`Priority::High`].
    pub fn usage_high(&self) -> usize {
        self.shards.iter().map(|s| s.lock().used_high).sum()
    }
}

impl<K, V, S> Shard<K, V, S> {
    /// Takes a removed slot's charge off the shard's usage.
    fn release(&mut self, slot: &Slot<V>) {
        self.used -= slot.charge;
        if slot.priority == Priority::High {
            self.used_high -= slot.charge;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> ClockCache<u64, u64> {
        ClockCache::new(capacity)
    }

    #[test]
    fn keeps_within_capacity_and_gives_referenced_entries_a_second_chance() {
        // One shard's worth of keys (hash 0 always picks shard 0): room for 4 entries of 10 bytes.
        let c = cache(SHARDS * 40);
        for k in 0..4 {
            c.insert(0, k, k * 100, 10);
        }
        assert_eq!(c.get(0, &0), Some(0));
        c.insert(0, 4, 400, 10);
        // Key 0 was referenced, so the oldest unreferenced entry (1) went instead.
        assert_eq!((c.get(0, &0), c.get(0, &1), c.get(0, &4)), (Some(0), None, Some(400)));
        assert_eq!(c.usage(), 40);
        assert_eq!((c.hits(), c.misses()), (3, 1));
        // A value the caller rejects is a miss, and does not save its entry from eviction.
        assert_eq!(c.get_if(0, &2, |v| *v != 200), None);
        assert_eq!((c.hits(), c.misses()), (3, 2));
        c.insert(0, 5, 500, 10);
        assert_eq!(c.get(0, &2), None);
    }

    #[test]
    fn high_priority_entries_outlive_a_stream_of_low_priority_ones() {
        let c = cache(SHARDS * 100);
        c.insert_with_priority(0, 1, 1, 30, Priority::High);
        c.insert_with_priority(0, 2, 2, 30, Priority::High);
        assert_eq!(c.get(0, &1), Some(1));
        // A scan: low-priority entries inserted once each, never read again.
        for k in 100..110 {
            c.insert(0, k, k, 20);
        }
        // Key 1 was hit, key 2 never was: 2 went with the scan's entries, 1 held on.
        assert_eq!((c.get(0, &1), c.get(0, &2)), (Some(1), None));
        assert_eq!(c.usage_high(), 30);
        assert!(c.usage() <= 100);
        // Replacing and dropping take a high-priority charge off.
        c.insert(0, 1, 1, 10);
        assert_eq!(c.usage_high(), 0);
        c.insert_with_priority(0, 3, 3, 10, Priority::High);
        c.clear();
        assert_eq!((c.usage(), c.usage_high(), c.get(0, &3)), (0, 0, None));
    }

    #[test]
    fn replacing_a_key_recharges_it_and_an_oversized_value_drops_it() {
        let c = cache(SHARDS * 100);
        c.insert(7, 1, 1, 30);
        c.insert(7, 1, 2, 50);
        assert_eq!((c.get(7, &1), c.usage()), (Some(2), 50));
        c.insert(7, 1, 3, 101);
        assert_eq!((c.get(7, &1), c.usage()), (None, 0));
        // The ring still names key 1; evicting past that stale entry is harmless.
        for k in 10..20 {
            c.insert(7, k, k, 20);
        }
        assert_eq!(c.usage(), 100);
        let off = cache(0);
        off.insert(0, 1, 1, 1);
        assert!(!off.enabled());
        assert_eq!(off.get(0, &1), None);
    }
}
