//! The memtable's key filter.

use std::sync::atomic::{AtomicU64, Ordering};

use super::zeroed::zeroed_mapped;
use crate::prefetch::prefetch;

/// A blocked bloom filter over the user keys of a memtable, so that a point read of a key the memtable does
/// not hold (the common case for a large store) skips the skip-list descent. Each key sets
/// [`MemFilter::PROBES`] bits in one 64-bit word; the filter only ever gains bits, so it needs no lock.
#[derive(Debug)]
pub(crate) struct MemFilter {
    words: Box<[AtomicU64]>,
}

impl MemFilter {
    const PROBES: u32 = 4;

    /// A filter of about one byte per 32 bytes of memtable (16 bits per key for entries of 64 bytes),
    /// between 1 KiB and 2 MiB, every page of it mapped when it is made (see [`zeroed_mapped`]).
    pub fn for_memtable_size(memtable_size: usize) -> Self {
        let bytes = (memtable_size / 32).clamp(1024, 2 << 20).next_power_of_two();
        // SAFETY: all zeros is a valid `AtomicU64`.
        Self { words: unsafe { zeroed_mapped::<AtomicU64>(bytes / 8) } }
    }

    fn word(&self, hash: u64) -> usize {
        ((hash >> 32) as usize) & (self.words.len() - 1)
    }

    fn mask_and_word(&self, hash: u64) -> (u64, usize) {
        let mut mask = 0u64;
        for i in 0..Self::PROBES {
            mask |= 1 << ((hash >> (6 * i)) & 63);
        }
        (mask, self.word(hash))
    }

    pub fn add(&self, hash: u64) {
        let (mask, word) = self.mask_and_word(hash);
        if let Some(w) = self.words.get(word) {
            w.fetch_or(mask, Ordering::Release);
        }
    }

    /// Starts loading the word a key of hash `hash` sets.
    pub fn prefetch(&self, hash: u64) {
        if let Some(w) = self.words.get(self.word(hash)) {
            prefetch(w.as_ptr());
        }
    }

    pub fn may_contain(&self, hash: u64) -> bool {
        let (mask, word) = self.mask_and_word(hash);
        self.words.get(word).is_none_or(|w| w.load(Ordering::Acquire) & mask == mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::key::key_hash;

    /// An optimized build made the filter with `calloc` (the compiler turns a loop that fills an allocation
    /// with zeros into a zeroed allocation), and its pages were first touched by the writer's `add`: this
    /// test failed under `cargo test --release` before the filter was made by `zeroed_mapped`.
    #[cfg(target_os = "linux")]
    #[test]
    fn every_page_of_the_filter_is_mapped_when_it_is_made() {
        let f = MemFilter::for_memtable_size(64 << 20);
        let (mapped, pages) = super::super::zeroed::mapped_pages(f.words.as_ptr().cast(), f.words.len() * 8);
        assert_eq!(mapped, pages, "{} of {pages} pages of the filter are not mapped", pages - mapped);
    }

    #[test]
    fn key_filter_has_no_false_negatives_and_few_false_positives() {
        // Sized for 64 MiB: 100,000 keys leave few false positives.
        let f = MemFilter::for_memtable_size(64 << 20);
        let keys: Vec<Vec<u8>> = (0..100_000u32).map(|i| format!("key-{i}").into_bytes()).collect();
        for k in &keys {
            f.add(key_hash(k));
        }
        assert!(keys.iter().all(|k| f.may_contain(key_hash(k))));
        let fp = (0..100_000u32).filter(|i| f.may_contain(key_hash(format!("other-{i}").as_bytes()))).count();
        assert!(fp < 1_000, "false positives: {fp} of 100000");
    }
}
