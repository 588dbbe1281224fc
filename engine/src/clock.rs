//! A bounded, sharded cache evicting with the CLOCK (second chance) policy: a hit sets an entry's reference
//! bit; eviction walks the ring, clearing set bits and dropping the first unreferenced entry. Holds the
//! engine's decoded blocks (`table::cache`); public so that layers above cache their own decoded values
//! with the same policy (the record store's cache of decoded records).
//!
//! The caller picks the shard with a hash of its own (one it computes anyway, or a cheap one), so a lookup
//! hashes the key once more only inside its shard's map.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

const SHARDS: usize = 16;

#[derive(Debug)]
struct Slot<V> {
    value: V,
    charge: usize,
    referenced: bool,
}

/// Hits and misses are counted per shard, under the shard's lock: one counter shared by every reader would
/// be a cache line that concurrent readers take from each other on every lookup.
#[derive(Debug)]
struct Shard<K, V, S> {
    map: HashMap<K, Slot<V>, S>,
    ring: VecDeque<K>,
    used: usize,
    hits: u64,
    misses: u64,
}

/// Up to about `capacity` bytes of values (as charged by [`ClockCache::insert`]), in 16 shards of a
/// sixteenth each (or as many as [`ClockCache::with_shards`] says).
#[derive(Debug)]
pub struct ClockCache<K, V, S = RandomState> {
    shards: Box<[Mutex<Shard<K, V, S>>]>,
    shard_capacity: AtomicUsize,
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher + Default> ClockCache<K, V, S> {
    /// An empty cache of up to about `capacity` bytes; 0 caches nothing.
    pub fn new(capacity: usize) -> Self {
        Self::with_shards(capacity, SHARDS)
    }

    /// An empty cache of up to about `capacity` bytes in `shards` shards (at least 1) of an equal share:
    /// fewer shards make more contention but let a shard hold larger values.
    pub fn with_shards(capacity: usize, shards: usize) -> Self {
        let shards = shards.max(1);
        let shard =
            || Mutex::new(Shard { map: HashMap::default(), ring: VecDeque::new(), used: 0, hits: 0, misses: 0 });
        Self { shards: (0..shards).map(|_| shard()).collect(), shard_capacity: AtomicUsize::new(capacity / shards) }
    }

    /// Whether anything can be cached at all.
    pub fn enabled(&self) -> bool {
        self.shard_capacity.load(Ordering::Relaxed) > 0
    }

    /// Changes the capacity, evicting at once what no longer fits.
    pub fn set_capacity(&self, capacity: usize) {
        let per_shard = capacity / self.shards.len();
        self.shard_capacity.store(per_shard, Ordering::Relaxed);
        for shard in self.shards.iter() {
            shard.lock().evict_to(per_shard);
        }
    }

    /// Drops the entry under `key`, if any.
    pub fn remove<Q: Hash + Eq + ?Sized>(&self, hash: u64, key: &Q)
    where
        K: Borrow<Q>,
    {
        let mut shard = self.shard(hash).lock();
        if let Some(slot) = shard.map.remove(key) {
            shard.used -= slot.charge;
            shard.drop_stale_keys();
        }
    }

    /// Drops every entry (the counters stay).
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.map.clear();
            shard.ring.clear();
            shard.used = 0;
        }
    }

    /// The shard of a key whose hash is `hash`, from bits 32 to 35: a map takes its bucket from the low bits
    /// of its own hash and its tag from the top seven, so a caller may key the map by this very hash (it is
    /// the same in every key of a shard in the bits that pick the shard).
    fn shard(&self, hash: u64) -> &Mutex<Shard<K, V, S>> {
        &self.shards[(hash >> 32) as usize % self.shards.len()]
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
        self.lookup(hash, key, accept, true)
    }

    /// [`ClockCache::get_if`] that counts only a hit: for a first try whose caller falls back, when it finds
    /// nothing, to another lookup that counts.
    pub fn probe_if<Q: Hash + Eq + ?Sized>(&self, hash: u64, key: &Q, accept: impl FnOnce(&V) -> bool) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.lookup(hash, key, accept, false)
    }

    fn lookup<Q: Hash + Eq + ?Sized>(
        &self,
        hash: u64,
        key: &Q,
        accept: impl FnOnce(&V) -> bool,
        count_miss: bool,
    ) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let mut shard = self.shard(hash).lock();
        let found = shard.map.get_mut(key).filter(|slot| accept(&slot.value)).map(|slot| {
            slot.referenced = true;
            slot.value.clone()
        });
        if found.is_some() {
            shard.hits += 1;
        } else if count_miss {
            shard.misses += 1;
        }
        found
    }

    /// Caches `value` under `key` (replacing what was there), charged `charge` bytes, then evicts until
    /// the shard is back within its capacity. A value charged more than a whole shard is not kept, and
    /// takes the key's earlier value with it.
    pub fn insert(&self, hash: u64, key: K, value: V, charge: usize) {
        let shard_capacity = self.shard_capacity.load(Ordering::Relaxed);
        let mut shard = self.shard(hash).lock();
        if charge > shard_capacity {
            if let Some(old) = shard.map.remove(&key) {
                shard.used -= old.charge;
                shard.drop_stale_keys();
            }
            return;
        }
        match shard.map.insert(key.clone(), Slot { value, charge, referenced: false }) {
            Some(old) => shard.used -= old.charge,
            None => shard.ring.push_back(key),
        }
        shard.used += charge;
        shard.evict_to(shard_capacity);
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
}

impl<K: Hash + Eq, V, S: BuildHasher> Shard<K, V, S> {
    /// Once keys of removed entries make up most of the ring, drops them from it: a shard that never
    /// fills up never sweeps them out, and would grow its ring with every removal.
    fn drop_stale_keys(&mut self) {
        if self.ring.len() > 2 * self.map.len() + 16 {
            let Shard { ring, map, .. } = self;
            ring.retain(|k| map.contains_key(k));
        }
    }

    /// Evicts until at most `capacity` bytes are charged.
    fn evict_to(&mut self, capacity: usize) {
        while self.used > capacity {
            let Some(victim) = self.ring.pop_front() else { break };
            let Some(slot) = self.map.get_mut(&victim) else { continue };
            if slot.referenced {
                slot.referenced = false;
                self.ring.push_back(victim);
            } else if let Some(slot) = self.map.remove(&victim) {
                self.used -= slot.charge;
            }
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
        // A probe counts its hit, not its miss.
        assert_eq!((c.probe_if(0, &2, |v| *v != 200), c.probe_if(0, &9, |_| true)), (None, None));
        assert_eq!(c.probe_if(0, &3, |_| true), Some(300));
        assert_eq!((c.hits(), c.misses()), (4, 2));
        c.insert(0, 5, 500, 10);
        assert_eq!(c.get(0, &2), None);
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
        c.remove(7, &19);
        assert_eq!((c.get(7, &19), c.usage()), (None, 80));
        // Keys removed again and again do not pile up in the ring of a shard that never fills.
        let roomy = cache(SHARDS * 1000);
        for k in 0..1000 {
            roomy.insert(3, k, k, 1);
            roomy.remove(3, &k);
        }
        assert!(roomy.shards[0].lock().ring.len() <= 16);
        // A smaller capacity evicts at once; clearing drops the rest.
        c.set_capacity(SHARDS * 40);
        assert_eq!(c.usage(), 40);
        c.clear();
        assert_eq!(c.usage(), 0);
        let one = ClockCache::<u64, u64>::with_shards(100, 1);
        one.insert(1 << 40, 1, 1, 90);
        assert_eq!(one.get(1 << 40, &1), Some(1));
        let off = cache(0);
        off.insert(0, 1, 1, 1);
        assert!(!off.enabled());
        assert_eq!(off.get(0, &1), None);
    }
}
