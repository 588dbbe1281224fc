//! A bounded, sharded cache evicting with the CLOCK (second chance) policy: a hit sets an entry's reference
//! bit; eviction walks the ring, clearing set bits and dropping the first unreferenced entry. Holds the
//! engine's decoded blocks (`table::cache`); public so that layers above cache their own decoded values
//! with the same policy (the record store's cache of decoded records).
//!
//! The caller picks the shard with a hash of its own (one it computes anyway, or a cheap one), so a lookup
//! hashes the key once more only inside its shard's map.
//!
//! Nothing is dropped under a shard's lock: values evicted, replaced or removed are handed out of the
//! critical section and dropped after it. Dropping a value may free memory (a block's buffer, a decoded
//! record), and a free that waits for the allocator's lock of another thread, or is preempted there,
//! would keep every reader of the shard waiting with it.
//!
//! A reader that would rather do the work than wait (a point read can decode its block itself) uses
//! [`ClockCache::get_unless_busy`] and [`ClockCache::insert_unless_busy`]: they try the shard's lock for
//! about 1.6 us and give up with [`Busy`]. A lock is held for a lookup or an insert, well under a
//! microsecond; what these avoid is a holder preempted inside its critical section (on a machine with more
//! busy threads than cores, for a scheduler's time slice of milliseconds).

use std::borrow::Borrow;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, MutexGuard};

const SHARDS: usize = 16;
/// Tries of a busy shard's lock before [`ClockCache::get_unless_busy`] gives up, a pause between each:
/// about 1.6 us in all on a 2-core Xeon VM, many times a critical section.
const BUSY_TRIES: usize = 128;

/// A shard's lock stayed held for as long as a lookup or insert that does not wait was willing to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

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

/// What [`ClockCache::probe_held_if`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Probed<V> {
    /// The value held under the key, accepted.
    Hit(V),
    /// A value is held under the key, not accepted.
    Declined,
    /// Nothing is held under the key.
    Absent,
}

/// Up to about `capacity` bytes of values (as charged by [`ClockCache::insert`]), in 16 shards of a
/// sixteenth each (or as many as [`ClockCache::with_shards`] says).
#[derive(Debug)]
pub struct ClockCache<K, V, S = RandomState> {
    shards: Box<[Mutex<Shard<K, V, S>>]>,
    shard_capacity: AtomicUsize,
    /// Lookups that gave up on a busy shard (counted as misses).
    busy: AtomicU64,
    /// Whether a value was used outside the cache since eviction last asked (and forgets it): such a value
    /// gets a second chance, as one whose reference bit is set does. See [`ClockCache::with_touched`].
    touched: fn(&V) -> bool,
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
        Self {
            shards: (0..shards).map(|_| shard()).collect(),
            shard_capacity: AtomicUsize::new(capacity / shards),
            busy: AtomicU64::new(0),
            touched: |_| false,
        }
    }

    /// The same cache, whose eviction also asks `touched` of each value it passes: for values that readers
    /// reach without a lookup (the engine's tables keep a cached block beside its handle), which set a mark
    /// of their own on use; `touched` reports and clears it.
    pub fn with_touched(mut self, touched: fn(&V) -> bool) -> Self {
        self.touched = touched;
        self
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
            let mut evicted = Vec::new();
            shard.lock().evict_to(per_shard, &mut evicted, self.touched);
            drop(evicted);
        }
    }

    /// Drops the entry under `key`, if any.
    pub fn remove<Q: Hash + Eq + ?Sized>(&self, hash: u64, key: &Q)
    where
        K: Borrow<Q>,
    {
        let mut shard = self.shard(hash).lock();
        let removed = shard.map.remove(key);
        if let Some(slot) = &removed {
            shard.used -= slot.charge;
            shard.drop_stale_keys();
        }
        drop(shard);
        drop(removed);
    }

    /// Drops every entry (the counters stay).
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let map = std::mem::take(&mut shard.map);
            shard.ring.clear();
            shard.used = 0;
            drop(shard);
            drop(map);
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
        Self::found_or_miss(&mut self.shard(hash).lock(), key, accept)
    }

    /// [`ClockCache::get_if`] that tells a key held but not accepted ([`Probed::Declined`], nothing
    /// counted) from one not held ([`Probed::Absent`], counted as a miss): for a first try whose caller
    /// looks again only for a key held.
    pub fn probe_held_if<Q: Hash + Eq + ?Sized>(&self, hash: u64, key: &Q, accept: impl FnOnce(&V) -> bool) -> Probed<V>
    where
        K: Borrow<Q>,
    {
        let mut shard = self.shard(hash).lock();
        let probed = Self::lookup_in(&mut shard, key, accept);
        if matches!(probed, Probed::Absent) {
            shard.misses += 1;
        }
        probed
    }

    /// [`ClockCache::get`] that does not wait for a busy shard: `Err(Busy)` (counted as a miss) if its lock
    /// stayed held through 128 tries (about 1.6 us). `found` sees the value before it is cloned (to start
    /// loading what the caller reads next while the clone waits for its reference count's line).
    pub fn get_unless_busy<Q: Hash + Eq + ?Sized>(
        &self,
        hash: u64,
        key: &Q,
        found: impl FnOnce(&V),
    ) -> Result<Option<V>, Busy>
    where
        K: Borrow<Q>,
    {
        let Some(mut shard) = self.lock_unless_busy(hash) else {
            self.busy.fetch_add(1, Ordering::Relaxed);
            return Err(Busy);
        };
        Ok(Self::found_or_miss(&mut shard, key, |v| {
            found(v);
            true
        }))
    }

    /// [`ClockCache::insert`] that does not wait for a busy shard: `Err(Busy)`, and `value` dropped, if its
    /// lock stayed held through 128 tries (about 1.6 us).
    pub fn insert_unless_busy(&self, hash: u64, key: K, value: V, charge: usize) -> Result<(), Busy> {
        self.insert_unless_busy_then(hash, key, value, charge, true, |_| {}).map(drop)
    }

    /// [`ClockCache::insert_unless_busy`] that, if the value is kept, passes it to `kept` under the shard's
    /// lock: before anything can evict it, so that whatever `kept` does is undone by the value's drop. With
    /// `evict` false the value is kept only if its shard has room for it without evicting anything; otherwise
    /// it is dropped (after the lock) and the answer is `Ok(false)`.
    pub fn insert_unless_busy_then(
        &self,
        hash: u64,
        key: K,
        value: V,
        charge: usize,
        evict: bool,
        kept: impl FnOnce(&V),
    ) -> Result<bool, Busy> {
        let evicted = Vec::with_capacity(if evict { 4 } else { 0 });
        let Some(shard) = self.lock_unless_busy(hash) else { return Err(Busy) };
        if !evict && shard.used.saturating_add(charge) > self.shard_capacity.load(Ordering::Relaxed) {
            drop(shard);
            drop(value);
            return Ok(false);
        }
        self.insert_in(shard, key, value, charge, evicted, kept);
        Ok(true)
    }

    /// Holds the lock of `hash`'s shard, as a preempted reader or writer would.
    #[cfg(test)]
    pub(crate) fn hold_shard(&self, hash: u64) -> impl Drop + '_ {
        self.shard(hash).lock()
    }

    /// Whether `hash`'s shard would take `charge` more bytes without evicting anything; `false` if the shard
    /// stays held through 128 tries (about 1.6 us).
    pub fn has_room_unless_busy(&self, hash: u64, charge: usize) -> bool {
        let capacity = self.shard_capacity.load(Ordering::Relaxed);
        self.lock_unless_busy(hash).is_some_and(|shard| shard.used.saturating_add(charge) <= capacity)
    }

    /// The lock of `hash`'s shard, unless it stays held through [`BUSY_TRIES`] tries.
    fn lock_unless_busy(&self, hash: u64) -> Option<MutexGuard<'_, Shard<K, V, S>>> {
        let shard = self.shard(hash);
        for _ in 0..BUSY_TRIES {
            if let Some(guard) = shard.try_lock() {
                return Some(guard);
            }
            std::hint::spin_loop();
        }
        None
    }

    /// The value under `key` if `accept` takes it, marked recently used and counted as a hit; whether a
    /// miss counts is the caller's to say.
    fn lookup_in<Q: Hash + Eq + ?Sized>(
        shard: &mut Shard<K, V, S>,
        key: &Q,
        accept: impl FnOnce(&V) -> bool,
    ) -> Probed<V>
    where
        K: Borrow<Q>,
    {
        let Some(slot) = shard.map.get_mut(key) else { return Probed::Absent };
        if !accept(&slot.value) {
            return Probed::Declined;
        }
        slot.referenced = true;
        let value = slot.value.clone();
        shard.hits += 1;
        Probed::Hit(value)
    }

    /// [`ClockCache::lookup_in`] that counts anything but a hit as a miss.
    fn found_or_miss<Q: Hash + Eq + ?Sized>(
        shard: &mut Shard<K, V, S>,
        key: &Q,
        accept: impl FnOnce(&V) -> bool,
    ) -> Option<V>
    where
        K: Borrow<Q>,
    {
        match Self::lookup_in(shard, key, accept) {
            Probed::Hit(value) => Some(value),
            Probed::Declined | Probed::Absent => {
                shard.misses += 1;
                None
            }
        }
    }

    /// Caches `value` under `key` (replacing what was there), charged `charge` bytes, then evicts until
    /// the shard is back within its capacity. A value charged more than a whole shard is not kept, and
    /// takes the key's earlier value with it.
    pub fn insert(&self, hash: u64, key: K, value: V, charge: usize) {
        // Room for what an insert usually evicts, taken before the lock.
        let evicted = Vec::with_capacity(4);
        self.insert_in(self.shard(hash).lock(), key, value, charge, evicted, |_| {});
    }

    /// Inserts under `shard`'s lock, moving what leaves the cache to `evicted`, dropped after the lock;
    /// `kept` sees the value if it is kept, before the eviction that makes room for it.
    fn insert_in(
        &self,
        mut shard: MutexGuard<'_, Shard<K, V, S>>,
        key: K,
        value: V,
        charge: usize,
        mut evicted: Vec<V>,
        kept: impl FnOnce(&V),
    ) {
        let shard_capacity = self.shard_capacity.load(Ordering::Relaxed);
        if charge > shard_capacity {
            if let Some(old) = shard.map.remove(&key) {
                shard.used -= old.charge;
                shard.drop_stale_keys();
                evicted.push(old.value);
            }
            drop(shard);
            drop((value, evicted));
            return;
        }
        let Shard { map, ring, used, .. } = &mut *shard;
        let slot = Slot { value, charge, referenced: false };
        let slot = match map.entry(key) {
            Entry::Occupied(mut entry) => {
                let old = entry.insert(slot);
                *used -= old.charge;
                evicted.push(old.value);
                entry.into_mut()
            }
            Entry::Vacant(entry) => {
                ring.push_back(entry.key().clone());
                entry.insert(slot)
            }
        };
        kept(&slot.value);
        *used += charge;
        shard.evict_to(shard_capacity, &mut evicted, self.touched);
        drop(shard);
        drop(evicted);
    }

    /// Lookups answered, since the cache was made.
    pub fn hits(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().hits).sum()
    }

    /// Lookups that found nothing (or nothing accepted), or gave up on a busy shard, since the cache was
    /// made.
    pub fn misses(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().misses).sum::<u64>() + self.busy.load(Ordering::Relaxed)
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

    /// Evicts until at most `capacity` bytes are charged, moving the evicted values to `evicted`, for the
    /// caller to drop once it has released the shard. A value `touched` says was used gets a second chance.
    fn evict_to(&mut self, capacity: usize, evicted: &mut Vec<V>, touched: fn(&V) -> bool) {
        while self.used > capacity {
            let Some(victim) = self.ring.pop_front() else { break };
            let Some(slot) = self.map.get_mut(&victim) else { continue };
            // Both marks are cleared: `touched` forgets its own as it answers.
            if std::mem::take(&mut slot.referenced) | touched(&slot.value) {
                self.ring.push_back(victim);
            } else if let Some(slot) = self.map.remove(&victim) {
                self.used -= slot.charge;
                evicted.push(slot.value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn cache(capacity: usize) -> ClockCache<u64, u64> {
        ClockCache::new(capacity)
    }

    /// A value used outside the cache, as `touched` reports, gets a second chance as a referenced one does,
    /// and the mark is cleared as eviction passes it.
    #[test]
    fn values_touched_outside_the_cache_get_a_second_chance() {
        use std::sync::atomic::AtomicBool;
        let c: ClockCache<u64, Arc<AtomicBool>> =
            ClockCache::new(SHARDS * 40).with_touched(|v| v.swap(false, Ordering::Relaxed));
        let marks: Vec<Arc<AtomicBool>> = (0..9).map(|_| Arc::new(AtomicBool::new(false))).collect();
        for (k, mark) in marks.iter().enumerate().take(4) {
            c.insert(0, k as u64, mark.clone(), 10);
        }
        marks[0].store(true, Ordering::Relaxed);
        c.insert(0, 4, marks[4].clone(), 10);
        // Key 0 was touched, so the oldest untouched entry (1) went instead, and key 0's mark was cleared.
        assert!(c.get(0, &1).is_none());
        assert!(!marks[0].load(Ordering::Relaxed));
        // Untouched since, key 0 goes when the ring comes round to it again, after 2, 3 and 4.
        for k in 5..8 {
            c.insert(0, k, marks[k as usize].clone(), 10);
            assert!(c.get(0, &(k - 3)).is_none());
        }
        c.insert(0, 8, marks[8].clone(), 10);
        assert!(c.get(0, &0).is_none());
        assert_eq!(c.usage(), 40);
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
        // A probe for a held key tells a declined value (nothing counted) from no value (a miss).
        assert_eq!(c.probe_held_if(0, &2, |v| *v != 200), Probed::Declined);
        assert_eq!((c.hits(), c.misses()), (3, 2));
        assert_eq!(c.probe_held_if(0, &9, |_| true), Probed::Absent);
        assert_eq!((c.hits(), c.misses()), (3, 3));
        assert_eq!(c.probe_held_if(0, &3, |_| true), Probed::Hit(300));
        assert_eq!((c.hits(), c.misses()), (4, 3));
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

    /// A value that counts its drops, and the drops made while a shard of its cache was locked.
    #[derive(Clone)]
    struct Watched {
        locked: Arc<dyn Fn() -> bool + Send + Sync>,
        drops: Arc<[AtomicUsize; 2]>,
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            self.drops[0].fetch_add(1, Ordering::Relaxed);
            if (self.locked)() {
                self.drops[1].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn values_leave_the_cache_after_its_lock_is_released() {
        let cache = Arc::new(ClockCache::<u64, Watched>::with_shards(40, 2));
        let weak = Arc::downgrade(&cache);
        let locked: Arc<dyn Fn() -> bool + Send + Sync> =
            Arc::new(move || weak.upgrade().is_some_and(|c| c.shards.iter().any(|s| s.is_locked())));
        let drops = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let value = || Watched { locked: locked.clone(), drops: drops.clone() };
        let dropped = || drops[0].load(Ordering::Relaxed);
        // Shard 0 holds 20 bytes: a third entry of 10 evicts one.
        for k in 0..3 {
            cache.insert(0, k, value(), 10);
        }
        assert_eq!(dropped(), 1, "evicted");
        cache.insert(0, 1, value(), 10);
        assert_eq!(dropped(), 2, "replaced");
        cache.insert(0, 1, value(), 30);
        assert_eq!(dropped(), 4, "too large, with the value it replaced");
        cache.remove(0, &2);
        assert_eq!(dropped(), 5, "removed");
        cache.insert(0, 7, value(), 10);
        cache.insert(0, 8, value(), 10);
        cache.set_capacity(20);
        assert_eq!(dropped(), 6, "evicted by a smaller capacity");
        cache.clear();
        assert_eq!(dropped(), 7, "cleared");
        assert_eq!(drops[1].load(Ordering::Relaxed), 0, "values dropped under a shard's lock");
    }

    #[test]
    fn a_busy_shard_turns_away_lookups_and_inserts_that_do_not_wait() {
        let c = cache(SHARDS * 100);
        c.insert(0, 1, 10, 10);
        let held = c.hold_shard(0);
        let mut seen = Vec::new();
        assert_eq!(c.get_unless_busy(0, &1, |v| seen.push(*v)), Err(Busy));
        assert_eq!(c.insert_unless_busy(0, 2, 20, 10), Err(Busy));
        // Another shard answers.
        assert_eq!(c.get_unless_busy(1 << 32, &1, |_| ()), Ok(None));
        drop(held);
        assert_eq!(
            (c.get_unless_busy(0, &1, |v| seen.push(*v)), c.get_unless_busy(0, &2, |v| seen.push(*v))),
            (Ok(Some(10)), Ok(None))
        );
        // Only the lookup that found its value showed it.
        assert_eq!(seen, [10]);
        assert_eq!(c.insert_unless_busy(0, 2, 20, 10), Ok(()));
        assert_eq!(c.get(0, &2), Some(20));
        // The lookup turned away counts as a miss, as do the two that found nothing.
        assert_eq!((c.hits(), c.misses()), (2, 3));
    }

    /// An insert that may not evict keeps its value only while the shard has room for it, and tells which.
    #[test]
    fn an_insert_that_may_not_evict_keeps_its_value_only_with_room() {
        let c = cache(SHARDS * 100);
        let insert = |key: u64, charge: usize| c.insert_unless_busy_then(0, key, key, charge, false, |_| {});
        assert_eq!(insert(1, 60), Ok(true));
        assert_eq!(insert(2, 40), Ok(true), "exactly full");
        assert_eq!(insert(3, 1), Ok(false));
        assert_eq!((c.get(0, &1), c.get(0, &2), c.get(0, &3)), (Some(1), Some(2), None), "nothing evicted");
        assert_eq!(c.usage(), 100);
        let held = c.hold_shard(0);
        assert_eq!(insert(4, 1), Err(Busy));
        drop(held);
    }
}
