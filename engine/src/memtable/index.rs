//! The memtable's key index: a hash table from user key to the skip-list node of the key's newest version,
//! so that a point read of a key the memtable holds finds it with a probe or two instead of a skip-list
//! descent (a cache miss per node compared: some 17 in a list of 100,000 entries).
//!
//! Open addressing over a fixed array of slots sized from `memtable_size`: a slot is empty (null) or holds
//! a node's address with the top 16 bits of the key's hash as a tag in the pointer's unused high bits, so
//! that a probe passes other keys' slots without reading their nodes. A key goes to the first slot of its
//! probe sequence (at most [`MAX_PROBES`] slots from the one its hash picks) that is empty or already
//! names it. Slots are never emptied, so a probe that meets an empty slot has proved the key absent. A key
//! that finds no slot is left out and the index marked *overflowed*: from then on a probe that finds
//! nothing answers "unknown", and the read searches the skip list.
//!
//! One writer at a time (the memtable's), storing with release after the node is linked into the list;
//! readers load with acquire. A slot replaced by a newer version of its key is replaced whole, so a reader
//! sees the old node or the new one. Either is at or newer than every version a reader may see (a commit's
//! entries, and so their slots, are written before its sequence is published), and older versions follow
//! a node at level 0, newest first.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use super::skiplist::Node;
use super::zeroed::zeroed_mapped;
use crate::format::key;
use crate::prefetch::prefetch;

/// Slots a key may take, from the one its hash picks: two cache lines.
const MAX_PROBES: usize = 16;
/// Bits of a node's address; the tag sits above them.
const ADDR_BITS: u32 = 48;
const ADDR_MASK: usize = (1 << ADDR_BITS) - 1;

/// The sequence number of a node's version.
///
/// # Safety
/// The node's list is alive.
unsafe fn seq_of(node: Node) -> u64 {
    // SAFETY: the caller's contract.
    key::trailer_seq(key::split(unsafe { node.key() }).1)
}

/// What the index knows of a key.
#[derive(Debug)]
pub(crate) enum Probe {
    /// The node of the key's newest version.
    Found(Node),
    /// The memtable does not hold the key.
    Absent,
    /// The key may be in the memtable without being indexed (the index overflowed).
    Unknown,
}

#[derive(Debug)]
pub(crate) struct KeyIndex {
    slots: Box<[AtomicPtr<u8>]>,
    overflowed: AtomicBool,
}

impl KeyIndex {
    /// An index of one slot (8 bytes) per 128 bytes of `memtable_size`, between 512 and 2^21 slots (4 MiB
    /// for the default 64 MiB memtable): a slot per key for entries of 128 bytes, at most half full for
    /// entries of 256 (links and headers included).
    /// Every page of the slots is mapped when the index is made (see [`zeroed_mapped`]).
    pub fn for_memtable_size(memtable_size: usize) -> Self {
        let slots = (memtable_size / 128).clamp(512, 1 << 21).next_power_of_two();
        // SAFETY: all zeros is a valid `AtomicPtr` (null).
        let slots = unsafe { zeroed_mapped::<AtomicPtr<u8>>(slots) };
        Self { slots, overflowed: AtomicBool::new(false) }
    }

    /// Bytes the index takes.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.slots.len() * size_of::<AtomicPtr<u8>>()
    }

    fn slot(&self, hash: u64, probe: usize) -> Option<&AtomicPtr<u8>> {
        let i = ((hash >> 16) as usize).wrapping_add(probe) & (self.slots.len() - 1);
        self.slots.get(i)
    }

    fn tag(hash: u64) -> usize {
        (hash >> ADDR_BITS) as usize
    }

    /// The node a slot names if its tag is `tag` and its user key is `user_key`. With `read_value`, the
    /// node's value is about to be read: its lines start loading while the key is compared.
    ///
    /// # Safety
    /// Every node in the index belongs to a list that is alive.
    unsafe fn matching(slot: *mut u8, tag: usize, user_key: &[u8], read_value: bool) -> Option<Node> {
        if slot.addr() >> ADDR_BITS != tag {
            return None;
        }
        let node = NonNull::new(slot.map_addr(|a| a & ADDR_MASK))?;
        // SAFETY: an address this index holds is a node's (`insert`), alive by the caller's contract.
        let node = unsafe { Node::from_raw(node) };
        if read_value {
            node.prefetch();
        }
        // SAFETY: as above.
        (key::user_key(unsafe { node.key() }) == user_key).then_some(node)
    }

    /// Makes `node` the newest version of `user_key`, whose [`key::key_hash`] is `hash`, unless the index
    /// holds a newer one. Called by the list's one writer, after `node` is linked.
    ///
    /// # Safety
    /// `node` and every node already in the index belong to a list that is alive.
    pub unsafe fn insert(&self, hash: u64, user_key: &[u8], node: Node) {
        let raw = node.as_raw().as_ptr();
        let tag = Self::tag(hash);
        if raw.addr() & !ADDR_MASK != 0 {
            // An address the tag would clobber (not on x86-64 or AArch64 with 48-bit user space).
            self.overflowed.store(true, Ordering::Release);
            return;
        }
        let tagged = raw.map_addr(|a| a | tag << ADDR_BITS);
        for probe in 0..MAX_PROBES {
            let Some(slot) = self.slot(hash, probe) else { break };
            // The one writer made every store this load can see.
            let current = slot.load(Ordering::Relaxed);
            if current.is_null() {
                slot.store(tagged, Ordering::Release);
                return;
            }
            // SAFETY: the caller's contract.
            if let Some(existing) = unsafe { Self::matching(current, tag, user_key, false) } {
                // Groups are inserted in commit order, so this is a newer version; but a memtable filled
                // out of order (tests do) keeps the newest.
                // SAFETY: as above.
                if unsafe { seq_of(existing) < seq_of(node) } {
                    slot.store(tagged, Ordering::Release);
                }
                return;
            }
        }
        self.overflowed.store(true, Ordering::Release);
    }

    /// Starts loading the first slot a key of hash `hash` probes.
    pub fn prefetch(&self, hash: u64) {
        if let Some(slot) = self.slot(hash, 0) {
            prefetch(slot.as_ptr());
        }
    }

    /// The node of the newest version of `user_key` (hash `hash`) that the index holds.
    ///
    /// # Safety
    /// Every node in the index belongs to a list that is alive.
    pub unsafe fn find(&self, hash: u64, user_key: &[u8]) -> Probe {
        let tag = Self::tag(hash);
        for probe in 0..MAX_PROBES {
            let Some(slot) = self.slot(hash, probe) else { break };
            let current = slot.load(Ordering::Acquire);
            if current.is_null() {
                return Probe::Absent;
            }
            // SAFETY: the caller's contract.
            if let Some(node) = unsafe { Self::matching(current, tag, user_key, true) } {
                return Probe::Found(node);
            }
        }
        if self.overflowed.load(Ordering::Acquire) {
            Probe::Unknown
        } else {
            Probe::Absent
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn every_page_of_the_slots_is_mapped_when_the_index_is_made() {
        let index = KeyIndex::for_memtable_size(64 << 20);
        let (mapped, pages) = super::super::zeroed::mapped_pages(index.slots.as_ptr().cast(), index.bytes());
        assert_eq!(mapped, pages, "{} of {pages} pages of the slots are not mapped", pages - mapped);
    }
}
