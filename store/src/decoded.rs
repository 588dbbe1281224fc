//! How a typed read turns a stored envelope into a record: parsed every time ([`Parse`]), or through the
//! store's cache of decoded records ([`RecordCache`]), which skips parsing a record read before.
//!
//! A cached record is found by the hash of its record key and must match the key itself and the first 33
//! bytes of what the read found: the commit sequence that wrote it, the envelope format, version and times.
//! The engine writes the commit sequence when the batch commits, so no two writes of one key share it, and
//! a record that changed since it was cached never matches: the cache cannot answer with a stale record, at
//! any snapshot.
//!
//! A record is kept on its third read while unchanged; its first two reads only mark it: a 64-bit word in a
//! fixed table (one per 256 bytes of budget), a mix of the key's hash and the commit sequence read, whose two
//! low bits count the reads. Records read once or twice, as most are by scans or random gets over more
//! records than the cache holds, cost a mark and not a copy of the decoded record. Keeping records from
//! their second read cost random gets over such a collection 12% of their time (the benchmark's get by id:
//! each kept record's estimate and copy, and dropping the one it evicted), for records seldom read again.
//!
//! The budget counts what a kept record holds in memory, not its stored size (a decoded record takes more:
//! 2.8 times for the benchmark's `Job`, whose 671 stored bytes decode to 1,869 bytes of heap in 23
//! allocations). That is estimated when the record is kept, from the shape of its JSON document
//! ([`decoded_heap`]): the record's inline size plus one allocation per string, per array and per map
//! (with its keys), rounded up as the allocator does; plus the `Arc` holding it, the key and 64 bytes per
//! record. A benchmark job is charged 2,736 bytes: 1.46 times the 1,869 it holds, 4 times its 671 stored
//! bytes.
//!
//! A kept record is an `Arc`: owned reads ([`Cached`]) clone the record out of it, shared reads
//! ([`Shared`]) hand out the `Arc` itself.
//!
//! A kept record also notes the newest sequence at which a read found it to be its key's newest version.
//! A later read at a sequence past that asks the engine whether the key was written in between
//! ([`cairn_engine::Snapshot::written_after`]): while the writes since are all in memtables, that is a probe
//! of the memtables' key index, and a kept record still current is answered without reading it
//! ([`Decode::recall`]). Once a flush or an ingest has written a later sequence to a table, the engine
//! cannot tell without a read, and the record is read and matched by its head as above. When the recall
//! found nothing kept under the key at all, the decode of the bytes read after it does not look again.

use std::any::Any;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;

use cairn_engine::{ClockCache, Probed, StorageError};

use crate::envelope::{self, Envelope};
use crate::error::StoreError;

/// Reads of the same bytes that keep a record: the third (see the module docs).
const READS_TO_KEEP: u64 = 3;
/// The low bits of a mark that count the reads of its bytes so far.
const READS_MASK: u64 = 3;
/// Commit sequence (8), format (1), version, created and updated times (8 each).
const HEAD: usize = 33;
/// What a kept record is charged besides its key and stored bytes: its map slot and ring entry.
const ENTRY_CHARGE: usize = 64;

/// Heap a `len`-byte allocation takes: glibc's chunk, the request plus an 8-byte header rounded up to 16,
/// at least 32.
fn alloc(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len + 8).next_multiple_of(16).max(32)
    }
}

/// Inline size assumed of an array element or a map key or value: a `String`, a `Vec` or an `i64` plus
/// padding. Documents decoded as `serde_json::Value` take 32.
const SLOT: usize = 24;
/// Entries in a node of a `BTreeMap`, the map serde's users mostly decode objects into.
const MAP_NODE_ENTRIES: usize = 11;

/// An estimate of the heap a JSON document holds once decoded, from its shape: one allocation per string
/// (its bytes), per array (a slot per element) and per nested object, with its keys and a key and a value
/// slot per entry (a `BTreeMap` node per 11 entries past 11). A nested object may be a struct, held inline
/// with no keys, or a map, whose first node is sized for 11 entries however few it holds: the estimate
/// lies between. The top-level object is taken for a struct. Numbers, booleans and nulls take no heap of
/// their own. `None` if `doc` is not JSON (a number is taken as any run of number characters, not checked
/// further).
///
/// One pass over the bytes, without a parser: it runs on each record the cache keeps, right after the
/// record was parsed into its type, and a pass of `serde_json`'s parser took a fifth as long as that parse
/// (for the benchmark's `Job`), this scan a twentieth.
pub(crate) fn decoded_heap(doc: &[u8]) -> Option<usize> {
    let mut scan = Scan { doc, pos: 0 };
    let heap = scan.value(0)?;
    scan.skip_space();
    (scan.pos == doc.len()).then_some(heap)
}

/// Nesting deeper than this is not JSON to [`decoded_heap`], as it is not to `serde_json`'s parser.
const MAX_DEPTH: usize = 128;

/// [`decoded_heap`]'s position in the document.
struct Scan<'a> {
    doc: &'a [u8],
    pos: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.doc.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Takes `byte` after any whitespace.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_space();
        (self.peek() == Some(byte)).then(|| self.pos += 1)
    }

    /// The heap of the value at the position, at `depth` (0 for the document itself).
    fn value(&mut self, depth: usize) -> Option<usize> {
        self.skip_space();
        match self.peek()? {
            b'"' => self.string().map(alloc),
            b'[' => self.array(depth),
            b'{' => self.object(depth),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => {
                let len = self
                    .doc
                    .get(self.pos..)?
                    .iter()
                    .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .count();
                self.pos += len;
                Some(0)
            }
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<usize> {
        let end = self.pos + word.len();
        (self.doc.get(self.pos..end)? == word).then(|| self.pos = end).map(|()| 0)
    }

    /// The length once unescaped of the string whose opening quote is at the position; moves past its
    /// closing quote.
    fn string(&mut self) -> Option<usize> {
        self.pos += 1;
        let mut len = 0;
        loop {
            let run = self.doc.get(self.pos..)?.iter().take_while(|&&b| b != b'"' && b != b'\\' && b >= 0x20).count();
            self.pos += run;
            len += run;
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(len);
                }
                b'\\' => {
                    let escaped = *self.doc.get(self.pos + 1)?;
                    self.pos += 2;
                    len += match escaped {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 1,
                        b'u' => self.code_point()?,
                        _ => return None,
                    };
                }
                _ => return None,
            }
        }
    }

    /// The UTF-8 length of the code point of a `\u` escape whose `u` was just taken (a surrogate pair is
    /// two escapes).
    fn code_point(&mut self) -> Option<usize> {
        let high = self.hex4()?;
        match high {
            0..=0x7f => Some(1),
            0x80..=0x7ff => Some(2),
            0xd800..=0xdbff => {
                (self.doc.get(self.pos..self.pos + 2)? == b"\\u").then_some(())?;
                self.pos += 2;
                matches!(self.hex4()?, 0xdc00..=0xdfff).then_some(4)
            }
            0xdc00..=0xdfff => None,
            _ => Some(3),
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = std::str::from_utf8(self.doc.get(self.pos..self.pos + 4)?).ok()?;
        let v = u32::from_str_radix(digits, 16).ok().filter(|_| digits.bytes().all(|b| b.is_ascii_hexdigit()))?;
        self.pos += 4;
        Some(v)
    }

    fn array(&mut self, depth: usize) -> Option<usize> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let (mut n, mut heap) = (0usize, 0usize);
        self.skip_space();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Some(0);
        }
        loop {
            heap += self.value(depth + 1)?;
            n += 1;
            self.skip_space();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(heap + alloc(n * SLOT));
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<usize> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let (mut n, mut heap) = (0usize, 0usize);
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Some(0);
        }
        loop {
            self.skip_space();
            if self.peek() != Some(b'"') {
                return None;
            }
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.value(depth + 1)?;
            n += 1;
            // A struct's field names are not held; a map's keys are.
            heap += value + if depth == 0 { 0 } else { alloc(key) };
            self.skip_space();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    break;
                }
                _ => return None,
            }
        }
        if depth > 0 {
            heap += if n <= MAP_NODE_ENTRIES {
                alloc(n * 2 * SLOT + 16)
            } else {
                n.div_ceil(MAP_NODE_ENTRIES) * alloc(MAP_NODE_ENTRIES * 2 * SLOT + 16)
            };
        }
        Some(heap)
    }
}

/// What the engine says of a key's writes after a sequence ([`cairn_engine::Snapshot::written_after`]).
pub(crate) type WrittenAfter = Result<Option<bool>, StorageError>;

/// A record answered without a read ([`Decode::recall`]), if one is.
pub(crate) type Recalled<D> = Result<Option<Envelope<D>>, StoreError>;

/// Turns a record's stored bytes into its envelope with the document as `D`.
pub(crate) trait Decode<D> {
    /// The record in `bytes`, which a read at sequence `at` found to be `key`'s newest version.
    fn decode(&self, key: &[u8], bytes: &[u8], at: u64) -> Result<Envelope<D>, StoreError>;

    /// `key`'s record as of sequence `at` without reading it, if this decoder keeps it and can tell it is
    /// still current: `written_after(s)` says whether the key was written after sequence `s` up to `at`
    /// (`None` if only a read can tell). `None` to read the record.
    fn recall(&self, _key: &[u8], _at: u64, _written_after: impl FnOnce(u64) -> WrittenAfter) -> Recalled<D> {
        Ok(None)
    }

    /// A document a query has already parsed as a JSON tree (to check it against its filters), as `D`.
    fn decode_tree(&self, key: &[u8], doc: Value) -> Result<D, StoreError>;

    /// Whether the reader wants the records at all; a count does not, and reads only those it must check.
    fn wants_records(&self) -> bool {
        true
    }

    /// Whether `D` is a JSON tree. A query that checks its records parses a tree for such a decoder, checks
    /// it and hands it over ([`Decode::decode_tree`]); for others it reads only the values it checks and
    /// decodes the records that match ([`Decode::decode`]).
    fn decodes_trees(&self) -> bool {
        false
    }
}

/// Parses every record.
pub(crate) struct Parse;

impl<D: DeserializeOwned + 'static> Decode<D> for Parse {
    fn decode(&self, key: &[u8], bytes: &[u8], _at: u64) -> Result<Envelope<D>, StoreError> {
        envelope::decode_as(key, bytes)
    }

    fn decode_tree(&self, key: &[u8], doc: Value) -> Result<D, StoreError> {
        envelope::tree_as(key, doc)
    }

    fn decodes_trees(&self) -> bool {
        envelope::is_tree::<D>()
    }
}

/// Decodes through `D`'s decoder, and a record that is sound but whose document is not a `D` as `None`
/// (a typed claim passes over such records, as it passes over those its change declines).
pub(crate) struct OrSkip<'a, Dec>(pub &'a Dec);

impl<D: DeserializeOwned, Dec: Decode<D>> Decode<Option<D>> for OrSkip<'_, Dec> {
    fn decode(&self, key: &[u8], bytes: &[u8], at: u64) -> Result<Envelope<Option<D>>, StoreError> {
        match self.0.decode(key, bytes, at) {
            Ok(e) => Ok(e.map(Some)),
            // An envelope that does not decode, or a document that is not JSON, is an error still.
            Err(not_d) => Ok(envelope::decode_as::<IgnoredAny>(key, bytes).map_err(|_| not_d)?.map(|_| None)),
        }
    }

    /// A tree is JSON already: one that is not a `D` is `None`.
    fn decode_tree(&self, key: &[u8], doc: Value) -> Result<Option<D>, StoreError> {
        Ok(self.0.decode_tree(key, doc).ok())
    }

    /// A record kept as a `D` is one.
    fn recall(&self, key: &[u8], at: u64, written_after: impl FnOnce(u64) -> WrittenAfter) -> Recalled<Option<D>> {
        Ok(self.0.recall(key, at, written_after)?.map(|e| e.map(Some)))
    }

    fn decodes_trees(&self) -> bool {
        self.0.decodes_trees()
    }
}

/// Counts: wants no records. `execute` then reads only records it must check, and decodes those that
/// match as nothing: their envelope's head, the document left as it is (the check has parsed it).
pub(crate) struct CountOnly;

impl Decode<IgnoredAny> for CountOnly {
    fn decode(&self, key: &[u8], bytes: &[u8], _at: u64) -> Result<Envelope<IgnoredAny>, StoreError> {
        Ok(envelope::decode_raw(key, bytes)?.map(|_| IgnoredAny))
    }

    fn decode_tree(&self, _key: &[u8], _doc: Value) -> Result<IgnoredAny, StoreError> {
        Ok(IgnoredAny)
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
    /// The newest sequence at which a read found these bytes to be the key's newest version.
    current_at: AtomicU64,
}

impl Kept {
    /// Whether this is the record under `key` decoded as a `D` (two types may read one collection).
    fn is_of<D: 'static>(&self, key: &[u8]) -> bool {
        *self.key == *key && self.record.is::<Envelope<Arc<D>>>()
    }
}

/// The commit sequence at the start of a record's head.
fn commit_seq(head: &[u8; HEAD]) -> u64 {
    let mut seq = [0; 8];
    seq.copy_from_slice(&head[..8]);
    u64::from_le_bytes(seq)
}

/// The state of a store's cache of decoded records ([`Store::record_cache_stats`](crate::Store::record_cache_stats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordCacheStats {
    /// Bytes charged for what is cached: an estimate of the memory each record kept decoded holds (see
    /// [`StoreOptions::record_cache_size`](crate::StoreOptions::record_cache_size)), plus 64 bytes per
    /// record.
    pub bytes: usize,
    /// Typed reads answered from the cache since the store opened.
    pub hits: u64,
    /// Typed reads not answered from the cache (the cache on): they parsed the record, or found none.
    pub misses: u64,
}

/// Decoded records of every typed collection of a store, up to a byte budget (see the module docs).
pub(crate) struct RecordCache {
    /// Keyed by the record key's xxh3 hash, hashed again by the map's own (seeded) hasher: record ids may
    /// come from users, and xxh3 is unseeded.
    kept: ClockCache<u64, Arc<Kept>>,
    /// The marks of reads not yet kept: slot `hash % len` holds a mix of the key's hash and the commit
    /// sequence read, and the count of its reads. One slot per 256 bytes of budget; a later mark takes the
    /// slot over.
    marks: Box<[AtomicU64]>,
}

impl std::fmt::Debug for RecordCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordCache").field("bytes", &self.kept.usage()).finish_non_exhaustive()
    }
}

/// A mark for a record key's hash and the commit sequence of the bytes read, its low bits ([`READS_MASK`])
/// left for the count of reads. An empty slot (0) counts none, whatever the mark.
fn mark(hash: u64, seq: u64) -> u64 {
    (hash ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)).rotate_left(23) & !READS_MASK
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
        Cached { cache: self, recalled_absent: Cell::new(None), _type: std::marker::PhantomData }
    }

    /// [`Decode`] for records of type `D` through this cache, each shared as an `Arc<D>`.
    pub fn shared<D>(&self) -> Shared<'_, D> {
        Shared(self.typed())
    }

    /// The mark slot of `hash` (none while the cache is off).
    fn mark_slot(&self, hash: u64) -> Option<&AtomicU64> {
        self.marks.get((hash % (self.marks.len() as u64).max(1)) as usize)
    }

    /// Counts a read of these bytes under `hash` in its mark; returns whether this is the
    /// [`READS_TO_KEEP`]th read counted (or a later one), which admits the record. The count is a load and a
    /// store, not one atomic step: a read counted by two threads at once may count once.
    fn read_enough(&self, hash: u64, head: &[u8; HEAD]) -> bool {
        let want = mark(hash, commit_seq(head));
        let Some(slot) = self.mark_slot(hash) else { return false };
        let old = slot.load(Ordering::Relaxed);
        let reads = if old & !READS_MASK == want { (old & READS_MASK) + 1 } else { 1 };
        slot.store(want | reads.min(READS_MASK), Ordering::Relaxed);
        reads >= READS_TO_KEEP
    }
}

/// Reads records of type `D` through a [`RecordCache`], each an owned `D` (cloned out of the cache on a hit).
pub(crate) struct Cached<'a, D> {
    cache: &'a RecordCache,
    /// The hash of the key the last recall found nothing kept under: the decode of its read that follows
    /// need not look again.
    recalled_absent: Cell<Option<u64>>,
    _type: std::marker::PhantomData<fn() -> D>,
}

/// Reads records of type `D` through a [`RecordCache`], each an `Arc<D>`: a hit shares the kept record
/// instead of cloning it. Kept records are the same as [`Cached`]'s.
pub(crate) struct Shared<'a, D>(Cached<'a, D>);

/// What [`Cached::find`] found: the record as the cache keeps it, or parsed and not kept.
enum Found<D> {
    Kept(Envelope<Arc<D>>),
    Parsed(Envelope<D>),
}

impl<D: DeserializeOwned + Send + Sync + 'static> Cached<'_, D> {
    /// The record in `bytes` under `key`: from the cache if it keeps these very bytes' record as a `D`,
    /// else parsed, and kept if read before.
    fn find(&self, key: &[u8], bytes: &[u8], at: u64) -> Result<Found<D>, StoreError> {
        let cache = self.cache;
        let Some(head) = bytes.get(..HEAD).and_then(|h| <[u8; HEAD]>::try_from(h).ok()) else {
            return envelope::decode_as(key, bytes).map(Found::Parsed);
        };
        if !cache.kept.enabled() {
            return envelope::decode_as(key, bytes).map(Found::Parsed);
        }
        let hash = xxhash_rust::xxh3::xxh3_64(key);
        // Kept from these very bytes of this key, as this type (unless a recall just now found nothing).
        let usable = |k: &Arc<Kept>| k.head == head && k.is_of::<D>(key);
        let kept = match self.recalled_absent.take() {
            Some(h) if h == hash => None,
            _ => cache.kept.get_if(hash, &hash, usable),
        };
        if let Some(kept) = &kept {
            if let Some(record) = kept.record.downcast_ref::<Envelope<Arc<D>>>() {
                kept.current_at.fetch_max(at, Ordering::Relaxed);
                return Ok(Found::Kept(record.clone()));
            }
        }
        // The mark's word is a random line: asked for now, its miss overlaps the parse.
        if let Some(slot) = cache.mark_slot(hash) {
            cairn_engine::prefetch(slot.as_ptr());
        }
        let record = envelope::decode_as::<D>(key, bytes)?;
        if !cache.read_enough(hash, &head) {
            return Ok(Found::Parsed(record));
        }
        let doc = bytes.get(HEAD..).unwrap_or_default();
        // Not JSON cannot be, as it just decoded; were it, its stored size times three.
        let heap = decoded_heap(doc).unwrap_or(doc.len() * 3);
        // The record's `Arc` allocation holds two counts and the `D`.
        let charge = ENTRY_CHARGE
            + alloc(key.len())
            + alloc(std::mem::size_of::<Kept>())
            + alloc(std::mem::size_of::<Envelope<Arc<D>>>())
            + alloc(16 + std::mem::size_of::<D>())
            + heap;
        let record = record.map(Arc::new);
        let kept = Kept { key: key.into(), head, record: Box::new(record.clone()), current_at: AtomicU64::new(at) };
        cache.kept.insert(hash, hash, Arc::new(kept), charge);
        Ok(Found::Kept(record))
    }

    /// The record kept under `key` as a `D`, if it is `key`'s newest version at `at`: it was at a sequence
    /// at or past `at`, or it was at an earlier one and `written_after` shows no write since.
    fn recall_kept(&self, key: &[u8], at: u64, written_after: impl FnOnce(u64) -> WrittenAfter) -> Recalled<Arc<D>> {
        let cache = self.cache;
        if !cache.kept.enabled() {
            return Ok(None);
        }
        let hash = xxhash_rust::xxh3::xxh3_64(key);
        // Current at `at` if it was at a sequence at or past it, or if no write came since. Counted only if it
        // answers: otherwise the read that follows finds the record, or not, and counts.
        let mut failed = None;
        let current = |k: &Arc<Kept>| {
            let current_at = k.current_at.load(Ordering::Relaxed);
            if current_at >= at {
                return true;
            }
            match written_after(current_at) {
                Ok(Some(false)) => {
                    k.current_at.fetch_max(at, Ordering::Relaxed);
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        };
        let usable = |k: &Arc<Kept>| k.is_of::<D>(key) && commit_seq(&k.head) <= at && current(k);
        let probed = cache.kept.probe_held_if(hash, &hash, usable);
        // Nothing kept counts as a miss: the decode of the read that follows does not look again.
        self.recalled_absent.set(matches!(probed, Probed::Absent).then_some(hash));
        let kept = match probed {
            Probed::Hit(kept) => Some(kept),
            Probed::Declined | Probed::Absent => None,
        };
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok(kept.and_then(|k| k.record.downcast_ref::<Envelope<Arc<D>>>().cloned()))
    }
}

impl<D: DeserializeOwned + Clone + Send + Sync + 'static> Decode<D> for Cached<'_, D> {
    fn decode(&self, key: &[u8], bytes: &[u8], at: u64) -> Result<Envelope<D>, StoreError> {
        Ok(match self.find(key, bytes, at)? {
            Found::Kept(record) => record.map(|doc| D::clone(&doc)),
            Found::Parsed(record) => record,
        })
    }

    fn decode_tree(&self, key: &[u8], doc: Value) -> Result<D, StoreError> {
        envelope::tree_as(key, doc)
    }

    fn recall(&self, key: &[u8], at: u64, written_after: impl FnOnce(u64) -> WrittenAfter) -> Recalled<D> {
        Ok(self.recall_kept(key, at, written_after)?.map(|record| record.map(|doc| D::clone(&doc))))
    }

    fn decodes_trees(&self) -> bool {
        envelope::is_tree::<D>()
    }
}

impl<D: DeserializeOwned + Send + Sync + 'static> Decode<Arc<D>> for Shared<'_, D> {
    fn decode(&self, key: &[u8], bytes: &[u8], at: u64) -> Result<Envelope<Arc<D>>, StoreError> {
        Ok(match self.0.find(key, bytes, at)? {
            Found::Kept(record) => record,
            Found::Parsed(record) => record.map(Arc::new),
        })
    }

    fn decode_tree(&self, key: &[u8], doc: Value) -> Result<Arc<D>, StoreError> {
        envelope::tree_as(key, doc).map(Arc::new)
    }

    fn recall(&self, key: &[u8], at: u64, written_after: impl FnOnce(u64) -> WrittenAfter) -> Recalled<Arc<D>> {
        self.0.recall_kept(key, at, written_after)
    }

    fn decodes_trees(&self) -> bool {
        envelope::is_tree::<D>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;

    /// [`decoded_heap`] by `serde_json`'s parser, as the reference for the scan.
    fn parsed_heap(doc: &[u8]) -> Option<usize> {
        let mut de = serde_json::Deserializer::from_slice(doc);
        let heap = Heap { depth: 0 }.deserialize(&mut de).ok()?;
        de.end().ok().map(|()| heap)
    }

    #[derive(Clone, Copy)]
    struct Heap {
        depth: usize,
    }

    impl<'de> DeserializeSeed<'de> for Heap {
        type Value = usize;

        fn deserialize<De: serde::Deserializer<'de>>(self, de: De) -> Result<usize, De::Error> {
            de.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Heap {
        type Value = usize;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
            Ok(0)
        }

        fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
            Ok(0)
        }

        fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
            Ok(0)
        }

        fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
            Ok(0)
        }

        fn visit_unit<E>(self) -> Result<usize, E> {
            Ok(0)
        }

        fn visit_str<E>(self, v: &str) -> Result<usize, E> {
            Ok(alloc(v.len()))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let inner = Heap { depth: self.depth + 1 };
            let (mut n, mut heap) = (0usize, 0usize);
            while let Some(h) = seq.next_element_seed(inner)? {
                n += 1;
                heap += h;
            }
            Ok(heap + alloc(n * SLOT))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
            let inner = Heap { depth: self.depth + 1 };
            let (mut n, mut heap) = (0usize, 0usize);
            while let Some(key) = map.next_key_seed(inner)? {
                let value = map.next_value_seed(inner)?;
                n += 1;
                heap += value + if self.depth == 0 { 0 } else { key };
            }
            if self.depth > 0 && n > 0 {
                heap += if n <= MAP_NODE_ENTRIES {
                    alloc(n * 2 * SLOT + 16)
                } else {
                    n.div_ceil(MAP_NODE_ENTRIES) * alloc(MAP_NODE_ENTRIES * 2 * SLOT + 16)
                };
            }
            Ok(heap)
        }
    }

    #[test]
    fn the_scan_estimates_what_the_parser_does() {
        let docs: &[&[u8]] = &[
            br#"{"a":1,"b":"x","c":[1,2,3],"d":{"e":"f","g":[{"h":null}]},"i":true,"j":false,"k":-1.5e3}"#,
            br#" { "s" : "tab\there \"quoted\" \\ \/ \u00e9\u4e2d\ud83d\ude00" , "m" : { "\u0041" : [ ] , "n" : { } } } "#,
            br#"["top","level",["array",{"k":"v"}]]"#,
            br#""a string alone""#,
            b"42",
            br#"{"big":{"k00":0,"k01":1,"k02":2,"k03":3,"k04":4,"k05":5,"k06":6,"k07":7,"k08":8,"k09":9,"k10":"a","k11":"b"}}"#,
            "{\"raw\":\"\u{e9}\u{4e2d}\u{1f600}\"}".as_bytes(),
        ];
        for doc in docs {
            let want = parsed_heap(doc);
            assert!(want.is_some(), "{}", String::from_utf8_lossy(doc));
            assert_eq!(decoded_heap(doc), want, "{}", String::from_utf8_lossy(doc));
        }
        let job = serde_json::to_vec(&serde_json::json!({
            "id": "job-00000001", "owner": "user1", "command": ["python", "train.py"],
            "env": {"NCCL_DEBUG": "WARN", "OMP_NUM_THREADS": "8"}, "resources": {"cpus": 8, "gpus": null}
        }))
        .unwrap();
        assert_eq!(decoded_heap(&job), parsed_heap(&job));
        // Deeper than the parser's recursion limit, as the parser refuses it.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(parsed_heap(deep.as_bytes()), None);
        assert_eq!(decoded_heap(deep.as_bytes()), None);
        let bad: &[&[u8]] = &[
            br#"{"a":1"#,
            br#"{"a" 1}"#,
            br#"{a:1}"#,
            br#"["x",]"#,
            br#"{"a":"\q"}"#,
            br#"{"a":"\ud800"}"#,
            br#"{"a":"\u12"}"#,
            b"{\"a\":\"\x01\"}",
            br#"[1] 2"#,
            br#"nul"#,
        ];
        for doc in bad {
            assert_eq!(parsed_heap(doc), None, "{}", String::from_utf8_lossy(doc));
            assert_eq!(decoded_heap(doc), None, "{}", String::from_utf8_lossy(doc));
        }
    }

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
    fn caches_on_the_third_read_and_never_answers_for_changed_bytes() {
        let cache = RecordCache::new(1 << 20);
        let v1 = stored(5, 1, r#"{"n":1}"#);
        for reads in 1..=2 {
            assert_eq!(cache.typed::<Doc>().decode(b"k", &v1, 50).unwrap().doc, Doc { n: 1 });
            assert_eq!(cache.stats(), RecordCacheStats { bytes: 0, hits: 0, misses: reads }, "read {reads}");
        }
        for _ in 0..2 {
            assert_eq!(cache.typed::<Doc>().decode(b"k", &v1, 50).unwrap().doc, Doc { n: 1 });
        }
        // The first two reads marked the key, the third kept the record, the fourth found it.
        let charge = ENTRY_CHARGE
            + alloc(1)
            + alloc(std::mem::size_of::<Kept>())
            + alloc(std::mem::size_of::<Envelope<Arc<Doc>>>())
            + alloc(16 + std::mem::size_of::<Doc>());
        assert_eq!(cache.stats(), RecordCacheStats { bytes: charge, hits: 1, misses: 3 });
        // A new commit of the same key: a different head, so parsed, even with an equal version. Its third
        // read keeps it in the first one's place.
        let v2 = stored(6, 1, r#"{"n":2}"#);
        for _ in 0..READS_TO_KEEP {
            assert_eq!(cache.typed::<Doc>().decode(b"k", &v2, 50).unwrap().doc, Doc { n: 2 });
        }
        // Reading the older bytes again (an older snapshot) parses them again.
        assert_eq!(cache.typed::<Doc>().decode(b"k", &v1, 50).unwrap().doc, Doc { n: 1 });
        // None of those four reads was answered from the cache: the entry found was of other bytes.
        assert_eq!(cache.stats().hits, 1);
        // Another type over the same bytes gets its own decoding.
        assert_eq!(cache.typed::<Other>().decode(b"k", &v1, 50).unwrap().doc, Other { n: 1.0 });
    }

    /// A kept record is recalled without its bytes only while the engine says its key was not written
    /// since a read found it current, and never for a read at a sequence before the record was written.
    #[test]
    fn recalls_a_kept_record_only_while_no_write_may_have_changed_it() {
        use std::cell::Cell;
        let cache = RecordCache::new(1 << 20);
        let typed = cache.typed::<Doc>();
        let unasked = |_: u64| -> WrittenAfter { panic!("needs no engine") };
        fn answer(said: Option<bool>, asked: &Cell<Option<u64>>) -> impl FnOnce(u64) -> WrittenAfter + '_ {
            move |after| {
                asked.set(Some(after));
                Ok(said)
            }
        }
        let asked = Cell::new(None);
        let v1 = stored(5, 1, r#"{"n":1}"#);
        for _ in 0..2 {
            typed.decode(b"k", &v1, 8).unwrap();
            assert_eq!(typed.recall(b"k", 8, unasked).unwrap(), None, "read twice at most: only marked, not kept");
        }
        typed.decode(b"k", &v1, 10).unwrap();

        // Current at 10: a read at 10 or before (down to its write at 5) needs no engine.
        for at in [5, 9, 10] {
            assert_eq!(typed.recall(b"k", at, unasked).unwrap().map(|r| r.doc), Some(Doc { n: 1 }), "at {at}");
        }
        assert_eq!(typed.recall(b"k", 4, unasked).unwrap(), None, "before it was written");
        // Past 10, the engine is asked about writes after 10. A record not recalled counts as nothing (the
        // read that follows counts); one recalled is a hit.
        let counted = cache.stats();
        for said in [Some(true), None] {
            assert_eq!(typed.recall(b"k", 12, answer(said, &asked)).unwrap(), None);
            assert_eq!(asked.take(), Some(10));
        }
        assert_eq!(cache.stats(), counted);
        let recalled = typed.recall(b"k", 12, answer(Some(false), &asked)).unwrap().unwrap();
        assert_eq!(cache.stats().hits, counted.hits + 1);
        assert_eq!((recalled.doc, recalled.seq, recalled.version), (Doc { n: 1 }, 5, 1));
        assert_eq!(asked.take(), Some(10));
        // Now current at 12.
        assert!(typed.recall(b"k", 12, unasked).unwrap().is_some());
        assert_eq!(typed.recall(b"k", 20, answer(Some(false), &asked)).unwrap().map(|r| r.doc), Some(Doc { n: 1 }));
        assert_eq!(asked.take(), Some(12));
        // A read that finds the same bytes later moves it on too.
        typed.decode(b"k", &v1, 30).unwrap();
        assert!(cache.shared::<Doc>().recall(b"k", 30, unasked).unwrap().is_some());

        // Another type, another key, a parse-only reader or a cache turned off keep nothing to recall.
        assert_eq!(cache.typed::<Other>().recall(b"k", 30, unasked).unwrap(), None);
        assert_eq!(typed.recall(b"j", 30, unasked).unwrap(), None);
        assert_eq!(Decode::<Doc>::recall(&Parse, b"k", 30, unasked).unwrap(), None);
        let off = RecordCache::new(0);
        for _ in 0..READS_TO_KEEP {
            off.typed::<Doc>().decode(b"k", &v1, 10).unwrap();
        }
        assert_eq!(off.typed::<Doc>().recall(b"k", 10, unasked).unwrap(), None);
    }

    /// A recall that finds nothing kept under its key counts the miss, and the decode of the read that
    /// follows does not look again (nor count again); a decode of another key still looks.
    #[test]
    fn a_recall_that_finds_nothing_spares_the_decode_after_it_a_second_look() {
        let cache = RecordCache::new(1 << 20);
        let typed = cache.typed::<Doc>();
        let unasked = |_: u64| -> WrittenAfter { panic!("needs no engine") };
        let v = stored(5, 1, r#"{"n":1}"#);
        for _ in 0..READS_TO_KEEP {
            typed.decode(b"k", &v, 10).unwrap();
        }
        let before = cache.stats();
        assert!(typed.recall(b"j", 10, unasked).unwrap().is_none());
        assert_eq!(cache.stats().misses, before.misses + 1, "the recall counts the miss");
        assert_eq!(typed.decode(b"j", &v, 10).unwrap().doc, Doc { n: 1 });
        assert_eq!(cache.stats().misses, before.misses + 1, "the decode after it does not look again");
        // After a recall of `j` found nothing, a decode of `k` still finds `k` kept.
        assert!(typed.recall(b"j", 10, unasked).unwrap().is_none());
        assert_eq!(typed.decode(b"k", &v, 10).unwrap().doc, Doc { n: 1 });
        assert_eq!((cache.stats().hits, cache.stats().misses), (before.hits + 1, before.misses + 2));
    }

    #[test]
    fn the_heap_estimate_counts_strings_arrays_and_maps_not_field_names() {
        // Numbers and field names of the top-level object hold nothing of their own.
        assert_eq!(decoded_heap(br#"{"a_long_field_name":1,"b":true,"c":null}"#), Some(0));
        // A 20-byte string: one 32-byte chunk. An empty one: none.
        assert_eq!(decoded_heap(br#"{"s":"aaaaaaaaaaaaaaaaaaaa","e":""}"#), Some(32));
        // Two strings (32 each) and the array of their two slots (48 + 8 -> 64).
        assert_eq!(decoded_heap(br#"{"v":["x","y"]}"#), Some(32 + 32 + 64));
        // A nested object: its keys, a key and a value slot per entry, plus its values.
        assert_eq!(decoded_heap(br#"{"m":{"k":1,"l":"z"}}"#), Some(32 + 32 + 32 + alloc(2 * 2 * SLOT + 16)));
        // Past 11 entries, a node of 11 per 11 entries.
        let big: String = (0..12).map(|i| format!("\"k{i:02}\":0")).collect::<Vec<_>>().join(",");
        let node = alloc(11 * 2 * SLOT + 16);
        assert_eq!(decoded_heap(format!(r#"{{"m":{{{big}}}}}"#).as_bytes()), Some(12 * 32 + 2 * node));
        assert_eq!(decoded_heap(b"not json"), None);
    }

    /// Regression: the budget was charged each record's stored bytes, a third of what a record like the
    /// benchmark's job holds decoded, so the cache held about three times its budget.
    #[test]
    fn a_kept_record_is_charged_more_than_its_stored_bytes() {
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        struct Job {
            name: String,
            owner: String,
            command: Vec<String>,
            labels: std::collections::BTreeMap<String, String>,
        }
        let doc = r#"{"name":"train-model-1","owner":"user1","command":["python","train.py","--epochs","90"],
            "labels":{"team":"team-1","tier":"batch"}}"#;
        let v = stored(5, 1, doc);
        let cache = RecordCache::new(1 << 20);
        for _ in 0..READS_TO_KEEP {
            cache.typed::<Job>().decode(b"job-1", &v, 50).unwrap();
        }
        let bytes = cache.stats().bytes;
        // 11 allocations of at least 32 bytes, a BTreeMap leaf node of over 500, the record inline.
        assert!(bytes > ENTRY_CHARGE + 5 + 2 * v.len(), "charged {bytes} for {} stored bytes", v.len());
    }

    #[test]
    fn bad_bytes_are_errors_and_cache_nothing() {
        let cache = RecordCache::new(1 << 20);
        let bad = stored(5, 1, r#"{"n":"x"}"#);
        for _ in 0..READS_TO_KEEP {
            assert!(matches!(cache.typed::<Doc>().decode(b"k", &bad, 50), Err(StoreError::Undecodable { .. })));
        }
        assert!(cache.typed::<Doc>().decode(b"k", &bad[..20], 50).is_err());
        assert_eq!(cache.stats().bytes, 0);
        let off = RecordCache::new(0);
        let ok = stored(5, 1, r#"{"n":3}"#);
        for _ in 0..READS_TO_KEEP {
            assert_eq!(off.typed::<Doc>().decode(b"k", &ok, 50).unwrap().doc, Doc { n: 3 });
        }
        assert_eq!(off.stats(), RecordCacheStats::default());
    }
}
