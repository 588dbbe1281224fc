//! How a typed read turns a stored envelope into a record: parsed every time ([`Parse`]), or through the
//! store's cache of decoded records ([`RecordCache`]), which skips parsing a record read before.
//!
//! A cached record is found by the hash of its record key and must match the key itself and the first 33
//! bytes of what the read found: the commit sequence that wrote it, the envelope format, version and times.
//! The engine writes the commit sequence when the batch commits, so no two writes of one key share it, and
//! a record that changed since it was cached never matches: the cache cannot answer with a stale record, at
//! any snapshot.
//!
//! A record is kept on its second read while unchanged; its first read only marks it: a 64-bit word in a
//! fixed table (one per 256 bytes of budget), a mix of the key's hash and the commit sequence read. Records
//! read once, as most are by a scan or random gets, cost a mark and not a copy of the decoded record. The
//! budget counts each kept record's stored bytes (its decoded form takes more heap: 2.8 times for the
//! benchmark's `Job`) and 64 bytes per record.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::{DeserializeOwned, IgnoredAny};

use cairn_engine::ClockCache;

use crate::envelope::{self, Envelope};
use crate::error::StoreError;

/// Commit sequence (8), format (1), version, created and updated times (8 each).
const HEAD: usize = 33;
/// What a kept record is charged besides its key and stored bytes: its map slot and ring entry.
const ENTRY_CHARGE: usize = 64;

/// Turns a record's stored bytes into its envelope with the document as `D`.
pub(crate) trait Decode<D> {
    fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<Envelope<D>, StoreError>;

    /// Whether the reader wants the records at all; a count does not, and reads only those it must check.
    fn wants_records(&self) -> bool {
        true
    }
}

/// Parses every record.
pub(crate) struct Parse;

impl<D: DeserializeOwned> Decode<D> for Parse {
    fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<Envelope<D>, StoreError> {
        envelope::decode_as(key, bytes)
    }
}

/// Counts: wants no records. `execute` then reads only records it must check, and checks them as JSON
/// values, so this decoder is not called; were it, it would decode the document as nothing.
pub(crate) struct CountOnly;

impl Decode<IgnoredAny> for CountOnly {
    fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<Envelope<IgnoredAny>, StoreError> {
        envelope::decode_as(key, bytes)
    }

    fn wants_records(&self) -> bool {
        false
    }
}

/// A record kept decoded, with its key and the head of the bytes it was decoded from: entries are found by
/// the key's 64-bit hash, so the key decides.
struct Kept {
    key: Box<[u8]>,
    head: [u8; HEAD],
    record: Box<dyn Any + Send + Sync>,
}

/// The state of a store's cache of decoded records ([`Store::record_cache_stats`](crate::Store::record_cache_stats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordCacheStats {
    /// Bytes charged for what is cached: the stored size of each record kept decoded, plus a small charge
    /// per key.
    pub bytes: usize,
    /// Typed reads answered from the cache since the store opened.
    pub hits: u64,
    /// Typed reads that parsed the record (the cache on).
    pub misses: u64,
}

/// Decoded records of every typed collection of a store, up to a byte budget (see the module docs).
pub(crate) struct RecordCache {
    /// Keyed by the record key's xxh3 hash, hashed again by the map's own (seeded) hasher: record ids may
    /// come from users, and xxh3 is unseeded.
    kept: ClockCache<u64, Arc<Kept>>,
    /// The marks of first reads: slot `hash % len` holds a mix of the key's hash and the commit sequence
    /// read. One slot per 256 bytes of budget; a later mark takes the slot over.
    marks: Box<[AtomicU64]>,
}

impl std::fmt::Debug for RecordCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordCache").field("bytes", &self.kept.usage()).finish_non_exhaustive()
    }
}

/// A mark for a record key's hash and the commit sequence of the bytes read; never 0 (an empty slot) in
/// practice, and 0 only makes a read admit its record one read early.
fn mark(hash: u64, seq: u64) -> u64 {
    (hash ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)).rotate_left(23)
}

impl RecordCache {
    pub fn new(capacity: usize) -> Self {
        let slots = if capacity == 0 { 0 } else { (capacity / 256).next_power_of_two() };
        Self { kept: ClockCache::new(capacity), marks: (0..slots).map(|_| AtomicU64::new(0)).collect() }
    }

    pub fn stats(&self) -> RecordCacheStats {
        RecordCacheStats { bytes: self.kept.usage(), hits: self.kept.hits(), misses: self.kept.misses() }
    }

    /// [`Decode`] for records of type `D` through this cache.
    pub fn typed<D>(&self) -> Cached<'_, D> {
        Cached { cache: self, _type: std::marker::PhantomData }
    }

    /// Marks a first read of these bytes under `hash`; returns whether the same bytes were marked before
    /// (and not since displaced), which admits the record.
    fn seen_before(&self, hash: u64, head: &[u8; HEAD]) -> bool {
        let seq = head.first_chunk::<8>().map_or(0, |b| u64::from_le_bytes(*b));
        let want = mark(hash, seq);
        let len = self.marks.len() as u64;
        let Some(slot) = self.marks.get((hash % len.max(1)) as usize) else { return false };
        slot.swap(want, Ordering::Relaxed) == want
    }
}

/// Reads records of type `D` through a [`RecordCache`].
pub(crate) struct Cached<'a, D> {
    cache: &'a RecordCache,
    _type: std::marker::PhantomData<fn() -> D>,
}

impl<D: DeserializeOwned + Clone + Send + Sync + 'static> Decode<D> for Cached<'_, D> {
    fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<Envelope<D>, StoreError> {
        let cache = self.cache;
        let Some(head) = bytes.get(..HEAD).and_then(|h| <[u8; HEAD]>::try_from(h).ok()) else {
            return envelope::decode_as(key, bytes);
        };
        if !cache.kept.enabled() {
            return envelope::decode_as(key, bytes);
        }
        let hash = xxhash_rust::xxh3::xxh3_64(key);
        // Kept from these very bytes of this key, as this type (two types may read one collection).
        let usable = |k: &Arc<Kept>| k.head == head && *k.key == *key && k.record.is::<Envelope<D>>();
        let kept = cache.kept.get_if(hash, &hash, usable);
        if let Some(record) = kept.as_ref().and_then(|k| k.record.downcast_ref::<Envelope<D>>()) {
            return Ok(record.clone());
        }
        let record: Envelope<D> = envelope::decode_as(key, bytes)?;
        if cache.seen_before(hash, &head) {
            let charge = ENTRY_CHARGE + key.len() + bytes.len();
            let kept = Kept { key: key.into(), head, record: Box::new(record.clone()) };
            cache.kept.insert(hash, hash, Arc::new(kept), charge);
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Deserialize)]
    struct Doc {
        n: i64,
    }

    #[derive(Debug, Clone, PartialEq, Deserialize)]
    struct Other {
        n: f64,
    }

    fn stored(seq: u64, version: u64, doc: &str) -> Vec<u8> {
        let mut bytes = seq.to_le_bytes().to_vec();
        bytes.extend(envelope::encode_head(version, 10, 20));
        bytes.extend(doc.as_bytes());
        bytes
    }

    #[test]
    fn caches_on_the_second_read_and_never_answers_for_changed_bytes() {
        let cache = RecordCache::new(1 << 20);
        let v1 = stored(5, 1, r#"{"n":1}"#);
        for _ in 0..3 {
            assert_eq!(cache.typed::<Doc>().decode(b"k", &v1).unwrap().doc, Doc { n: 1 });
        }
        // The first read marked the key, the second kept the record.
        assert_eq!(cache.stats(), RecordCacheStats { bytes: ENTRY_CHARGE + 1 + v1.len(), hits: 1, misses: 2 });
        // A new commit of the same key: a different head, so parsed, even with an equal version.
        let v2 = stored(6, 1, r#"{"n":2}"#);
        assert_eq!(cache.typed::<Doc>().decode(b"k", &v2).unwrap().doc, Doc { n: 2 });
        assert_eq!(cache.typed::<Doc>().decode(b"k", &v2).unwrap().doc, Doc { n: 2 });
        // Reading the older bytes again (an older snapshot) parses them again.
        assert_eq!(cache.typed::<Doc>().decode(b"k", &v1).unwrap().doc, Doc { n: 1 });
        // None of those three reads was answered from the cache: the entry found was of other bytes.
        assert_eq!(cache.stats().hits, 1);
        // Another type over the same bytes gets its own decoding.
        assert_eq!(cache.typed::<Other>().decode(b"k", &v1).unwrap().doc, Other { n: 1.0 });
    }

    #[test]
    fn bad_bytes_are_errors_and_cache_nothing() {
        let cache = RecordCache::new(1 << 20);
        let bad = stored(5, 1, r#"{"n":"x"}"#);
        for _ in 0..2 {
            assert!(matches!(cache.typed::<Doc>().decode(b"k", &bad), Err(StoreError::Undecodable { .. })));
        }
        assert!(cache.typed::<Doc>().decode(b"k", &bad[..20]).is_err());
        assert_eq!(cache.stats().bytes, 0);
        let off = RecordCache::new(0);
        let ok = stored(5, 1, r#"{"n":3}"#);
        for _ in 0..2 {
            assert_eq!(off.typed::<Doc>().decode(b"k", &ok).unwrap().doc, Doc { n: 3 });
        }
        assert_eq!(off.stats(), RecordCacheStats::default());
    }
}
