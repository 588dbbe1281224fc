//! Data and index blocks: prefix-compressed sorted entries.
//!
//! ```text
//! entry* | entry_count u32 LE
//! entry = shared varint32 | unshared varint32 | value_len varint32 | key[shared..] | value
//! ```
//! `shared` is the number of leading bytes the key has in common with the previous key (0 for the first).
//! A block is decoded once, when it enters the cache, into full keys for binary search, plus a search
//! window per key (eight bytes after the prefix every user key of the block shares) so that a seek compares
//! integers and touches full keys only where windows tie; where many keys tie (an index block's separators
//! of one collection's records all start with the same eight bytes), a second window per key, after the
//! prefix those keys share; all of it, and the block's bytes, in one allocation (see [`Block`]).

#![deny(clippy::indexing_slicing)]

use std::cmp::Ordering;
use std::sync::Arc;

use crate::format::coding::{put_u32, put_varint32, read_u32_at, Cursor, DecodeError};
use crate::format::key;
use crate::iter::KeyValueRef;
use crate::prefetch::{prefetch, prefetch_bytes, LINE};

/// Builds one block.
#[derive(Debug, Default)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    last_key: Vec<u8>,
    count: u32,
}

impl BlockBuilder {
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = key.iter().zip(&self.last_key).take_while(|(a, b)| a == b).count();
        let suffix = key.get(shared..).unwrap_or_default();
        put_varint32(&mut self.buf, shared as u32);
        put_varint32(&mut self.buf, suffix.len() as u32);
        put_varint32(&mut self.buf, value.len() as u32);
        self.buf.extend_from_slice(suffix);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.count += 1;
    }

    /// Bytes the block will take once finished.
    pub fn size(&self) -> usize {
        self.buf.len() + 4
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Returns the encoded block and resets the builder.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        put_u32(&mut out, self.count);
        self.last_key.clear();
        self.count = 0;
        out
    }
}

#[derive(Debug, Clone, Copy)]
struct EntryPos {
    key_end: u32,
    value_start: u32,
    value_end: u32,
}

/// Bytes of one entry's positions in [`Block::words`]: key end, value start, value end (`u32` each).
const ENTRY_LEN: usize = 12;

/// A decoded block in one shared allocation of 8-byte words, so that a seek touches few cache lines and
/// pages (the reference count, the windows and the entries sit together):
///
/// ```text
/// meta [3 words] | windows [n words] | sample [s words] | inner [n words] | inner sample [s words]
///   | runs [n words] | entries [n x 12 bytes] | keys [keys_len bytes] | values' block bytes
/// ```
///
/// The meta words repeat the block's shape (the words' count, `n`, `tail_at`, `common`, `keys_len`), so that
/// the address of the words alone gives back the block ([`Block::into_raw`], [`Block::clone_raw`]): a block
/// slot holds a block in one word.
///
/// `s` is 0 for blocks of up to [`SAMPLE_EVERY`] entries. The inner windows, their sample and the runs are
/// there only if some run of at least [`LONG_RUN`] entries shares one window (see [`inner_windows`]).
///
/// An entry holds the end of its full key in `keys` and its value's range in the block's bytes (`data`);
/// none of this is on disk. Cloning a block shares the allocation.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    words: Arc<[u64]>,
    /// Number of entries.
    n: u32,
    /// Words before the entries: the windows and their sample, and the inner windows, their sample and the
    /// runs if any.
    tail_at: u32,
    /// Length of the prefix shared by every user key of the block (that of its first and last).
    common: u32,
    /// Bytes of the full keys.
    keys_len: u32,
}

// A block is held by every cache entry and cursor that uses it: four words.
const _: () = assert!(std::mem::size_of::<Block>() == 32);

/// Words before the windows: the words' count, then `n` and `tail_at`, then `common` and `keys_len`.
const META: usize = 3;

/// Bytes of entry positions [`Block::prefetch_from`] asks for: those of ten entries.
const SCAN_PREFETCH_POSITIONS: usize = 2 * LINE;
/// Bytes of keys [`Block::prefetch_from`] asks for: those of about ten entries of short keys.
const SCAN_PREFETCH_KEYS: usize = 4 * LINE;
/// Bytes of the block's entries (values and key suffixes) [`Block::prefetch_from`] asks for: about five
/// small values, or the start of a large one; the CPU's own prefetcher follows the run from there. Twice
/// as many did no better on `compare`'s range reads.
const SCAN_PREFETCH_VALUES: usize = 16 * LINE;

/// Bytes of search windows [`Block::prefetch_head`] asks for: all of a block's windows and sample if they
/// take no more (a data block of up to some 30 small pairs), or else the start of its sample.
const HEAD_PREFETCH: usize = 4 * LINE;

/// Bytes of a value [`Block::prefetch_value`] asks for: a small value, or the start of a large one.
const VALUE_PREFETCH: usize = 4 * LINE;

/// Stride of the sampled windows: every `SAMPLE_EVERY`th window, searched first so that a seek in a large
/// (index) block touches few cache lines of the full array. None for blocks of up to `SAMPLE_EVERY` entries.
const SAMPLE_EVERY: usize = 16;

/// Runs of entries with equal windows at least this long get inner windows: a search of a shorter run
/// compares at most three full keys.
const LONG_RUN: usize = 8;

/// The inner windows and runs of a block whose keys (user keys, ascending) have `windows`: both empty if no
/// run of equal windows is [`LONG_RUN`] long or longer. Otherwise one of each per entry; for an entry of a
/// long run, its inner window is the window after the prefix the run's user keys share, and its run word
/// holds the run's end (low 32 bits) and that prefix's length (the next 16); both are 0 for other entries
/// and for a run whose shared prefix is longer than 16 bits can say.
fn inner_windows<'k>(windows: &[u64], user_key: impl Fn(usize) -> &'k [u8]) -> (Vec<u64>, Vec<u64>) {
    let n = windows.len();
    let (mut inner, mut runs) = (Vec::new(), Vec::new());
    let mut lo = 0;
    while lo < n {
        let w = windows.get(lo).copied().unwrap_or_default();
        let hi = lo + windows.get(lo..).unwrap_or_default().iter().take_while(|&&x| x == w).count();
        if hi - lo >= LONG_RUN {
            let (first, last) = (user_key(lo), user_key(hi - 1));
            let depth = first.iter().zip(last).take_while(|(a, b)| a == b).count();
            if let Ok(depth) = u16::try_from(depth) {
                if inner.is_empty() {
                    (inner, runs) = (vec![0; n], vec![0; n]);
                }
                for i in lo..hi {
                    if let (Some(x), Some(r)) = (inner.get_mut(i), runs.get_mut(i)) {
                        *x = key::window(user_key(i), usize::from(depth));
                        *r = hi as u64 | u64::from(depth) << 32;
                    }
                }
            }
        }
        lo = hi;
    }
    (inner, runs)
}

/// Every `SAMPLE_EVERY`th word of `full`, or none if it has no more than `SAMPLE_EVERY`
/// ([`Block::sample_len`] words).
fn sampled(full: &[u64]) -> Vec<u64> {
    full.iter().step_by(SAMPLE_EVERY).take(Block::sample_len(full.len())).copied().collect()
}

/// The first index in `lo..hi` whose word of `full` is `>= w` (or `hi`), where `full` is non-decreasing over
/// `lo..hi` and `sample[k] = full[k * SAMPLE_EVERY]`: the sampled words in the range are searched first, so
/// that a long range costs a search of a small, often cached array and then one or two lines of `full`.
fn sampled_partition(full: &[u64], sample: &[u64], lo: usize, hi: usize, w: u64) -> usize {
    let (first, end) = (lo.div_ceil(SAMPLE_EVERY), hi.div_ceil(SAMPLE_EVERY).min(sample.len()));
    let k = first + sample.get(first..end).unwrap_or_default().partition_point(|&x| x < w);
    // The answer lies after the last sampled word below `w`, and at or before the first one that is not.
    let from = if k > first { (k - 1) * SAMPLE_EVERY } else { lo };
    let to = if k < end { k * SAMPLE_EVERY } else { hi };
    from + full.get(from..to).unwrap_or_default().partition_point(|&x| x < w)
}

/// The end of the run of words equal to `w` in `full` that starts at `lo` and ends by `hi`, found by
/// galloping: most runs are short.
fn run_end(full: &[u64], lo: usize, hi: usize, w: u64) -> usize {
    let run = full.get(lo..hi).unwrap_or_default();
    let mut step = 1;
    while run.get(step - 1).is_some_and(|&x| x == w) {
        step *= 2;
    }
    let known = step / 2;
    let upto = step.min(run.len());
    lo + known + run.get(known..upto).unwrap_or_default().partition_point(|&x| x == w)
}

impl Block {
    /// Decodes a block (copying its bytes, wherever they are: a table's map, or a decompression's output);
    /// every key must be an internal key, in strictly ascending internal-key order.
    pub fn decode(data: &[u8]) -> Result<Block, DecodeError> {
        let body_len = data.len().checked_sub(4).ok_or(DecodeError::new(0, "block shorter than its count"))?;
        let count = read_u32_at(data, body_len).ok_or(DecodeError::new(body_len, "block count"))? as usize;
        if count == 0 || count > body_len {
            return Err(DecodeError::new(body_len, "implausible entry count"));
        }
        let body = data.get(..body_len).unwrap_or_default();
        let mut cursor = Cursor::new(body);
        let mut keys: Vec<u8> = Vec::with_capacity(count * 32);
        let mut entries: Vec<EntryPos> = Vec::with_capacity(count);
        let mut prev_start = 0usize;
        for _ in 0..count {
            let at = cursor.pos();
            let shared = cursor.varint32("entry shared length")? as usize;
            let unshared = cursor.varint32("entry key length")? as usize;
            let value_len = cursor.varint32("entry value length")? as usize;
            let prev_len = keys.len() - prev_start;
            if shared > prev_len {
                return Err(DecodeError::new(at, "shared prefix longer than the previous key"));
            }
            let suffix = cursor.bytes(unshared, "entry key")?;
            let value_start = cursor.pos();
            cursor.bytes(value_len, "entry value")?;
            let start = keys.len();
            keys.extend_from_within(prev_start..prev_start + shared);
            keys.extend_from_slice(suffix);
            let this = keys.get(start..).unwrap_or_default();
            if this.len() < key::TRAILER_LEN {
                return Err(DecodeError::new(at, "key shorter than its trailer"));
            }
            if key::trailer_kind(key::split(this).1).is_none() {
                return Err(DecodeError::new(at, "unknown entry kind"));
            }
            if !entries.is_empty() {
                let prev = keys.get(prev_start..start).unwrap_or_default();
                if key::compare(prev, this) != Ordering::Less {
                    return Err(DecodeError::new(at, "keys out of order"));
                }
            }
            entries.push(EntryPos {
                key_end: keys.len() as u32,
                value_start: value_start as u32,
                value_end: (value_start + value_len) as u32,
            });
            prev_start = start;
        }
        if !cursor.is_empty() {
            return Err(DecodeError::new(cursor.pos(), "bytes after the last entry"));
        }
        let keys_len = u32::try_from(keys.len()).map_err(|_| DecodeError::new(0, "block keys too long"))?;
        let key_of = |i: usize| {
            let start = i.checked_sub(1).and_then(|p| entries.get(p)).map_or(0, |e| e.key_end as usize);
            let end = entries.get(i).map_or(start, |e| e.key_end as usize);
            keys.get(start..end).unwrap_or_default()
        };
        let first = key::user_key(key_of(0));
        let last = key::user_key(key_of(count - 1));
        let common = first.iter().zip(last).take_while(|(a, b)| a == b).count();
        let windows: Vec<u64> = (0..count).map(|i| key::window(key::user_key(key_of(i)), common)).collect();
        let sample = sampled(&windows);
        let (inner, runs) = inner_windows(&windows, |i| key::user_key(key_of(i)));
        let inner_sample = sampled(&inner);
        // The allocation is written once, in place: the search words, then the entries' positions, the keys
        // and the block's bytes (a miss decodes a block, so each copy of it shows in a read that misses).
        let tail_at: usize =
            META + [&windows, &sample, &inner, &inner_sample, &runs].iter().map(|p| p.len()).sum::<usize>();
        let tail_len = count * ENTRY_LEN + keys.len() + data.len();
        let len = tail_at + tail_len.div_ceil(8);
        let too_long = || DecodeError::new(0, "block too long");
        let (count32, tail_at32) =
            (u32::try_from(count).map_err(|_| too_long())?, u32::try_from(tail_at).map_err(|_| too_long())?);
        let meta =
            [len as u64, u64::from(count32) | u64::from(tail_at32) << 32, common as u64 | u64::from(keys_len) << 32];
        let head = [&meta[..], &windows, &sample, &inner, &inner_sample, &runs];
        let mut words = Arc::<[u64]>::new_uninit_slice(len);
        let slots = Arc::get_mut(&mut words).ok_or(DecodeError::new(0, "a new allocation is shared"))?;
        let (head_slots, tail_slots) = slots.split_at_mut(tail_at);
        for (slot, word) in head_slots.iter_mut().zip(head.into_iter().flatten()) {
            slot.write(*word);
        }
        // The tail's bytes are copied in below; its last word is zeroed first for the padding after them.
        if let Some(last) = tail_slots.last_mut() {
            last.write(0);
        }
        let tail = tail_slots.as_mut_ptr().cast::<u8>();
        let positions = entries.iter().flat_map(|e| [e.key_end, e.value_start, e.value_end]);
        for (i, v) in positions.enumerate() {
            // SAFETY: `count * ENTRY_LEN` bytes of positions, four per value, lie inside the tail, whose
            // `tail_len` bytes are all allocated.
            unsafe { std::ptr::copy_nonoverlapping(v.to_le_bytes().as_ptr(), tail.add(i * 4), 4) };
        }
        let keys_at = count * ENTRY_LEN;
        // SAFETY: the keys and then the block's bytes follow the positions, ending at `tail_len`; the sources
        // are separate allocations.
        unsafe {
            std::ptr::copy_nonoverlapping(keys.as_ptr(), tail.add(keys_at), keys.len());
            std::ptr::copy_nonoverlapping(data.as_ptr(), tail.add(keys_at + keys.len()), data.len());
        }
        // SAFETY: the head's words were written above, one per slot (`tail_at` is their count), and every byte
        // of the tail's words: the positions, keys and block bytes, then the last word's zeroed padding.
        let words = unsafe { words.assume_init() };
        Ok(Block { words, n: count32, tail_at: tail_at32, common: common as u32, keys_len })
    }

    /// The internal key and value of a block of one entry, read in place from its bytes `data`, or `None`
    /// for a block of more entries. Checks what [`Block::decode`] checks of such a block: a `data` that
    /// decode refuses is refused here too.
    pub fn single_entry(data: &[u8]) -> Result<Option<KeyValueRef<'_>>, DecodeError> {
        let body_len = data.len().checked_sub(4).ok_or(DecodeError::new(0, "block shorter than its count"))?;
        let count = read_u32_at(data, body_len).ok_or(DecodeError::new(body_len, "block count"))? as usize;
        if count == 0 || count > body_len {
            return Err(DecodeError::new(body_len, "implausible entry count"));
        }
        if count > 1 {
            return Ok(None);
        }
        let mut cursor = Cursor::new(data.get(..body_len).unwrap_or_default());
        if cursor.varint32("entry shared length")? != 0 {
            return Err(DecodeError::new(0, "shared prefix longer than the previous key"));
        }
        let unshared = cursor.varint32("entry key length")? as usize;
        let value_len = cursor.varint32("entry value length")? as usize;
        let key = cursor.bytes(unshared, "entry key")?;
        let value = cursor.bytes(value_len, "entry value")?;
        if key.len() < key::TRAILER_LEN {
            return Err(DecodeError::new(0, "key shorter than its trailer"));
        }
        if key::trailer_kind(key::split(key).1).is_none() {
            return Err(DecodeError::new(0, "unknown entry kind"));
        }
        if !cursor.is_empty() {
            return Err(DecodeError::new(cursor.pos(), "bytes after the last entry"));
        }
        Ok(Some((key, value)))
    }

    /// Whether the well-formed block `data` holds one entry: a value about the block size or larger, which
    /// the cache takes only if it has room for it (see `TableReader::data_block`) when stored uncompressed.
    pub fn holds_one_entry(data: &[u8]) -> bool {
        matches!(Block::single_entry(data), Ok(Some(_)))
    }

    /// Gives up this holder's share of the words for their address (a [`Block::identity`]), from which
    /// [`Block::from_raw`] takes it back and [`Block::clone_raw`] makes more holders.
    pub fn into_raw(self) -> usize {
        Arc::into_raw(self.words).cast::<u64>().expose_provenance()
    }

    /// Asks for the lines a seek of the block at `raw` reads first, before the block is taken from its
    /// address: the reference count and the meta words, then what [`Block::prefetch_head`] asks for if the
    /// block's entry count `n` is known, or else the first [`HEAD_PREFETCH`] bytes.
    pub fn prefetch_raw(raw: usize, n: Option<usize>) {
        // An `Arc`'s two counts come before its value.
        const COUNTS: usize = 16;
        let lines = |from: usize, to: usize| {
            for line in from / LINE..=to.saturating_sub(1) / LINE {
                prefetch(std::ptr::without_provenance::<u8>(line * LINE));
            }
        };
        lines(raw.saturating_sub(COUNTS), raw + META * 8);
        let (from, to) = n.map_or((0, HEAD_PREFETCH), Self::head_bytes);
        lines(raw + from, raw + to.min(from + HEAD_PREFETCH));
    }

    /// The bytes of the words a seek of a block of `n` entries searches first: its windows and their sample
    /// (with the meta words) if they take no more than [`HEAD_PREFETCH`], or else the sample.
    fn head_bytes(n: usize) -> (usize, usize) {
        let s = Self::sample_len(n);
        let first = if (META + n + s) * 8 <= HEAD_PREFETCH { 0 } else { META + n };
        (first * 8, (META + n + s) * 8)
    }

    /// A new holder of the block whose words are at `raw`.
    ///
    /// # Safety
    ///
    /// `raw` came from [`Block::into_raw`], and that holder's share has not been taken back yet (by
    /// [`Block::from_raw`]), nor can be while this runs.
    pub unsafe fn clone_raw(raw: usize) -> Block {
        // SAFETY: the caller keeps the share `raw` stands for alive, so the words are allocated, and so is
        // the allocation's count, which the first meta word holds.
        unsafe {
            let words = std::ptr::with_exposed_provenance::<u64>(raw);
            let fat = std::ptr::slice_from_raw_parts(words, *words as usize);
            Arc::increment_strong_count(fat);
            Self::from_words(Arc::from_raw(fat))
        }
    }

    /// Takes back the share [`Block::into_raw`] gave up for `raw`.
    ///
    /// # Safety
    ///
    /// `raw` came from [`Block::into_raw`], and its share is taken back once.
    pub unsafe fn from_raw(raw: usize) -> Block {
        // SAFETY: as for `clone_raw`; the share `raw` stood for becomes the returned block's.
        unsafe {
            let words = std::ptr::with_exposed_provenance::<u64>(raw);
            Self::from_words(Arc::from_raw(std::ptr::slice_from_raw_parts(words, *words as usize)))
        }
    }

    /// The block whose words (meta words first) are `words`.
    fn from_words(words: Arc<[u64]>) -> Block {
        let word = |i: usize| words.get(i).copied().unwrap_or_default();
        let (shape, keys) = (word(1), word(2));
        Block {
            n: shape as u32,
            tail_at: (shape >> 32) as u32,
            common: keys as u32,
            keys_len: (keys >> 32) as u32,
            words,
        }
    }

    /// The window of every entry: non-decreasing.
    fn windows(&self) -> &[u64] {
        self.words.get(META..META + self.n as usize).unwrap_or_default()
    }

    /// Words of the sample of `n` words: none for up to [`SAMPLE_EVERY`], every `SAMPLE_EVERY`th otherwise.
    fn sample_len(n: usize) -> usize {
        if n > SAMPLE_EVERY {
            n.div_ceil(SAMPLE_EVERY)
        } else {
            0
        }
    }

    fn sample(&self) -> &[u64] {
        let n = self.n as usize;
        self.words.get(META + n..META + n + Self::sample_len(n)).unwrap_or_default()
    }

    /// Whether the block has inner windows (see [`inner_windows`]).
    fn deep(&self) -> bool {
        let n = self.n as usize;
        self.tail_at as usize > META + n + Self::sample_len(n)
    }

    /// The inner windows, their sample and the runs: empty, or as [`inner_windows`] and [`sampled`] made
    /// them.
    fn inner(&self) -> (&[u64], &[u64], &[u64]) {
        if !self.deep() {
            return (&[], &[], &[]);
        }
        let (n, s) = (self.n as usize, Self::sample_len(self.n as usize));
        let at = |start: usize, len: usize| self.words.get(META + start..META + start + len).unwrap_or_default();
        (at(n + s, n), at(2 * n + s, s), at(2 * n + 2 * s, n))
    }

    /// The end of the run of equal windows entry `i` begins or belongs to, and the length of the prefix its
    /// user keys share, if the run has inner windows.
    fn run(&self, i: usize) -> Option<(usize, usize)> {
        let word = self.inner().2.get(i).copied()?;
        let depth = (word >> 32) as usize & 0xffff;
        (depth > 0).then_some(((word & 0xffff_ffff) as usize, depth))
    }

    /// Every word of the allocation as bytes, in little-endian order.
    fn all_bytes(&self) -> &[u8] {
        // SAFETY: a `u64` slice is a valid `u8` slice of eight times its length, with no stricter alignment;
        // the bytes were stored as little-endian words, and every target Cairn builds for is little-endian
        // (checked at compile time below).
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.words.len() * 8) }
    }

    /// The entries, keys and block bytes, as bytes in little-endian order of the words that hold them.
    fn tail(&self) -> &[u8] {
        self.all_bytes().get(self.tail_at as usize * 8..).unwrap_or_default()
    }

    fn entry(&self, i: usize) -> Option<EntryPos> {
        let at = i.checked_mul(ENTRY_LEN)?;
        let tail = self.tail();
        Some(EntryPos {
            key_end: read_u32_at(tail, at)?,
            value_start: read_u32_at(tail, at + 4)?,
            value_end: read_u32_at(tail, at + 8)?,
        })
    }

    fn keys(&self) -> &[u8] {
        let start = self.n as usize * ENTRY_LEN;
        self.tail().get(start..start + self.keys_len as usize).unwrap_or_default()
    }

    fn data(&self) -> &[u8] {
        self.tail().get(self.n as usize * ENTRY_LEN + self.keys_len as usize..).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.n as usize
    }

    /// How many holders share the block's words (the cache, slots, cursors, values read in place).
    #[cfg(test)]
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.words)
    }

    /// The address of the block's words: the same for every clone of one decoded block, and not shared with
    /// any other block while this one is alive.
    pub fn identity(&self) -> usize {
        self.words.as_ptr().addr()
    }

    /// Bytes of memory the decoded block holds, for cache accounting.
    pub fn charge(&self) -> usize {
        std::mem::size_of::<Self>() + 16 + self.words.len() * std::mem::size_of::<u64>()
    }

    pub fn key(&self, i: usize) -> &[u8] {
        let start = match i.checked_sub(1) {
            Some(p) => self.entry(p).map_or(0, |e| e.key_end as usize),
            None => 0,
        };
        let end = self.entry(i).map_or(start, |e| e.key_end as usize);
        self.keys().get(start..end).unwrap_or_default()
    }

    pub fn value(&self, i: usize) -> &[u8] {
        self.entry(i).and_then(|e| self.data().get(e.value_start as usize..e.value_end as usize)).unwrap_or_default()
    }

    /// Starts loading what a scan from entry `i` reads next: the positions, keys and values of `i` and of
    /// the entries after it, up to [`SCAN_PREFETCH_POSITIONS`], [`SCAN_PREFETCH_KEYS`] and
    /// [`SCAN_PREFETCH_VALUES`] bytes of each. A seek has touched the search windows and a few keys; the lines a scan then reads lie
    /// in three other runs of the allocation, whose misses this lets overlap.
    pub fn prefetch_from(&self, i: usize) {
        let Some(e) = self.entry(i) else { return };
        let key_start = i.checked_sub(1).and_then(|p| self.entry(p)).map_or(0, |p| p.key_end as usize);
        let tail = self.tail();
        prefetch_bytes(tail.get(i * ENTRY_LEN..).unwrap_or_default(), SCAN_PREFETCH_POSITIONS);
        prefetch_bytes(self.keys().get(key_start..).unwrap_or_default(), SCAN_PREFETCH_KEYS);
        prefetch_bytes(self.data().get(e.value_start as usize..).unwrap_or_default(), SCAN_PREFETCH_VALUES);
    }

    /// Starts loading what a seek searches first, up to [`HEAD_PREFETCH`] bytes: the windows and their
    /// sample if that is all of them, or else the sample. The block cache calls it on the block it found
    /// before taking a reference, so these lines arrive together with the reference count's.
    pub fn prefetch_head(&self) {
        let (from, to) = Self::head_bytes(self.n as usize);
        prefetch_bytes(self.all_bytes().get(from..to).unwrap_or_default(), HEAD_PREFETCH);
    }

    /// Starts loading the first [`VALUE_PREFETCH`] bytes of entry `i`'s value, which a point read that found
    /// the entry reads next, while it checks the key.
    pub fn prefetch_value(&self, i: usize) {
        if let Some(e) = self.entry(i) {
            prefetch_bytes(
                self.data().get(e.value_start as usize..e.value_end as usize).unwrap_or_default(),
                VALUE_PREFETCH,
            );
        }
    }

    /// Index of the first entry `>= target`, or `len()` if none.
    pub fn seek(&self, target: &[u8]) -> usize {
        let user = key::user_key(target);
        let common = self.common as usize;
        if common > 0 {
            let shared = self.key(0).get(..common).unwrap_or_default();
            // Every user key of the block starts with `shared`: a target that does not is before or after all.
            match user.get(..common).unwrap_or(user).cmp(shared) {
                Ordering::Less => return 0,
                Ordering::Greater => return self.len(),
                Ordering::Equal => {}
            }
        }
        let (windows, n) = (self.windows(), self.len());
        let w = key::window(user, common);
        let mut lo = sampled_partition(windows, self.sample(), 0, n, w);
        let mut hi;
        // The run of the target's window, if the block has one, starts at `lo`.
        match if windows.get(lo) == Some(&w) { self.run(lo) } else { None } {
            Some((end, depth)) => {
                // A long run: every user key of it starts with the run's first `depth` bytes, so a target that
                // does not is before or after the whole run. Otherwise the inner windows narrow the run.
                let shared = key::user_key(self.key(lo)).get(..depth).unwrap_or_default();
                match user.get(..depth).unwrap_or(user).cmp(shared) {
                    Ordering::Less => return lo,
                    Ordering::Greater => return end,
                    Ordering::Equal => {}
                }
                let (inner, inner_sample, _) = self.inner();
                let w = key::window(user, depth);
                lo = sampled_partition(inner, inner_sample, lo, end, w);
                hi = run_end(inner, lo, end, w);
            }
            None => hi = run_end(windows, lo, n, w),
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key::compare(self.key(mid), target) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

// `Block::tail` reads little-endian words as bytes in place.
#[cfg(not(target_endian = "little"))]
compile_error!("the decoded block layout assumes a little-endian target");

/// A position in a shared decoded block.
#[derive(Debug, Clone)]
pub(crate) struct BlockIter {
    block: Block,
    /// Current entry; `len()` (forward) or `usize::MAX` (reverse) once exhausted.
    pos: usize,
}

impl BlockIter {
    pub fn new(block: Block) -> Self {
        Self { block, pos: 0 }
    }

    pub fn valid(&self) -> bool {
        self.pos < self.block.len()
    }

    pub fn key(&self) -> &[u8] {
        self.block.key(self.pos)
    }

    pub fn value(&self) -> &[u8] {
        self.block.value(self.pos)
    }

    pub fn seek_to_first(&mut self) {
        self.pos = 0;
        self.block.prefetch_from(0);
    }

    pub fn seek_to_last(&mut self) {
        self.pos = self.block.len().checked_sub(1).unwrap_or(usize::MAX);
    }

    /// First entry `>= target`.
    pub fn seek(&mut self, target: &[u8]) {
        self.pos = self.block.seek(target);
        self.block.prefetch_from(self.pos);
    }

    /// Last entry `<= target`.
    pub fn seek_for_prev(&mut self, target: &[u8]) {
        let i = self.block.seek(target);
        self.pos = if i < self.block.len() && key::compare(self.block.key(i), target) == Ordering::Equal {
            i
        } else {
            i.checked_sub(1).unwrap_or(usize::MAX)
        };
    }

    pub fn next(&mut self) {
        self.pos = self.pos.saturating_add(1).min(self.block.len());
    }

    pub fn prev(&mut self) {
        self.pos = self.pos.checked_sub(1).unwrap_or(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::key::{internal_key, make_trailer, ValueKind};

    fn ik(k: &str, seq: u64) -> Vec<u8> {
        internal_key(k.as_bytes(), make_trailer(seq, ValueKind::Put))
    }

    fn build(keys: &[Vec<u8>]) -> Block {
        let mut b = BlockBuilder::default();
        for (i, k) in keys.iter().enumerate() {
            b.add(k, format!("v{i}").as_bytes());
        }
        Block::decode(&b.finish()).unwrap()
    }

    #[test]
    fn roundtrip_and_seek() {
        let keys = vec![ik("apple", 2), ik("apple", 1), ik("apricot", 9), ik("banana", 3)];
        let block = build(&keys);
        assert_eq!(block.len(), 4);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(block.key(i), &k[..]);
            assert_eq!(block.value(i), format!("v{i}").as_bytes());
        }
        let mut it = BlockIter::new(block);
        it.seek(&internal_key(b"apricot", key::seek_trailer(100)));
        assert_eq!(it.key(), &keys[2][..]);
        it.seek_for_prev(&internal_key(b"apricot", 0));
        assert_eq!(it.key(), &keys[2][..]);
        it.seek_for_prev(&internal_key(b"ab", 0));
        assert!(!it.valid());
        it.seek(&internal_key(b"c", 0));
        assert!(!it.valid());
        it.seek_to_last();
        it.prev();
        assert_eq!(it.key(), &keys[2][..]);
    }

    /// The allocation `decode` writes in place holds, after the search words, each entry's positions, the full
    /// keys and the block's bytes exactly, then fewer than eight bytes of zeros: for blocks of every length
    /// modulo eight, with and without inner windows.
    #[test]
    fn the_decoded_tail_holds_positions_keys_and_bytes_then_zeros() {
        for n in 1..40usize {
            // Between a first and a last key that share nothing, keys that share their first eight bytes and
            // more: a run of equal windows, which gets inner windows from 8 keys on.
            let inner = (0..n.saturating_sub(2)).map(|i| format!("b-shared-prefix/{i:03}"));
            let names: Vec<String> =
                ["a".to_owned()].into_iter().chain(inner).chain(["z".to_owned()]).take(n).collect();
            let keys: Vec<Vec<u8>> = names.iter().map(|k| ik(k, 1)).collect();
            let mut b = BlockBuilder::default();
            for (i, k) in keys.iter().enumerate() {
                b.add(k, &vec![b'a' + (i % 26) as u8; i % 11]);
            }
            let raw = b.finish();
            let block = Block::decode(&raw).unwrap();
            assert_eq!(block.deep(), n >= 10, "{n} entries");
            assert_eq!(block.keys(), keys.concat().as_slice());
            let (bytes, padding) = block.data().split_at(raw.len());
            assert_eq!(bytes, raw.as_slice());
            assert!(padding.len() < 8 && padding.iter().all(|b| *b == 0), "{n} entries: {padding:?}");
            for (i, k) in keys.iter().enumerate() {
                let e = block.entry(i).unwrap();
                let key_start = i.checked_sub(1).map_or(0, |p| block.entry(p).unwrap().key_end as usize);
                assert_eq!(&block.keys()[key_start..e.key_end as usize], k.as_slice());
                assert_eq!(
                    &raw[e.value_start as usize..e.value_end as usize],
                    &vec![b'a' + (i % 26) as u8; i % 11][..]
                );
            }
        }
    }

    /// A block given up for its address and taken back from it (or cloned from it) is the same block: the
    /// same words, shape and answers, with and without inner windows, and the address keeps its share.
    #[test]
    fn a_block_comes_back_whole_from_its_address() {
        for n in [1usize, 3, 17, 40] {
            let keys: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    internal_key(
                        &grouped((i / 20) as u8, format!("{i:04}").as_bytes()),
                        make_trailer(1, ValueKind::Put),
                    )
                })
                .collect();
            let block = build(&keys);
            let shape = |b: &Block| (b.identity(), b.n, b.tail_at, b.common, b.keys_len, b.words.len());
            let expect = shape(&block);
            let raw = block.clone().into_raw();
            assert_eq!(raw, block.identity());
            assert_eq!(block.holders(), 2, "the address keeps its share");
            Block::prefetch_raw(raw, None);
            Block::prefetch_raw(raw, Some(n));
            // SAFETY: `raw` came from `into_raw` above and its share is taken back only below.
            let clone = unsafe { Block::clone_raw(raw) };
            assert_eq!((shape(&clone), block.holders()), (expect, 3));
            drop(clone);
            // SAFETY: as above; this takes the share back, once.
            let back = unsafe { Block::from_raw(raw) };
            assert_eq!((shape(&back), back.deep()), (expect, n >= 20));
            for (i, k) in keys.iter().enumerate() {
                assert_eq!((back.seek(k), back.key(i), back.value(i)), (i, &k[..], format!("v{i}").as_bytes()));
            }
            drop(back);
            assert_eq!(block.holders(), 1);
        }
    }

    proptest::proptest! {
        /// The window search agrees with a plain binary search, for keys that share prefixes of any length,
        /// keys shorter than the window, many versions of one key, and targets inside and outside the block.
        #[test]
        fn seek_matches_a_linear_search(
            mut users in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..12), 1..60),
            prefix in proptest::collection::vec(0u8..3, 0..10),
            targets in proptest::collection::vec((proptest::collection::vec(0u8..4, 0..14), 0u64..4), 1..40),
        ) {
            users.sort();
            users.dedup();
            let mut keys = Vec::new();
            for u in &users {
                let full: Vec<u8> = prefix.iter().chain(u).copied().collect();
                for seq in (1..=3).rev() {
                    keys.push(internal_key(&full, make_trailer(seq, ValueKind::Put)));
                }
            }
            let block = build(&keys);
            for (t, seq) in targets {
                for user in [t.clone(), prefix.iter().chain(&t).copied().collect()] {
                    let target = internal_key(&user, key::seek_trailer(seq));
                    let expect = keys.iter().position(|k| key::compare(k, &target) != Ordering::Less);
                    proptest::prop_assert_eq!(block.seek(&target), expect.unwrap_or(keys.len()));
                }
            }
        }
    }

    /// User keys in groups that share long prefixes: `group` picks one of three prefixes, the same nine
    /// filler bytes follow, then `tail`; so runs of equal windows are long, and inner windows are built.
    fn grouped(group: u8, tail: &[u8]) -> Vec<u8> {
        let mut k = vec![b'r', group];
        k.extend_from_slice(b"/records/");
        k.extend_from_slice(tail);
        k
    }

    proptest::proptest! {
        /// The same, for blocks whose long runs of equal windows get inner windows: targets inside a run,
        /// before and after it, sharing part of its prefix, and shorter than it.
        #[test]
        fn seek_through_inner_windows_matches_a_linear_search(
            users in proptest::collection::btree_set((0u8..3, proptest::collection::vec(0u8..4, 0..10)), 1..80),
            targets in proptest::collection::vec(
                (0u8..4, proptest::collection::vec(0u8..4, 0..11), 0usize..14, 0u64..4), 1..40),
        ) {
            let mut full: Vec<Vec<u8>> = users.iter().map(|(g, t)| grouped(*g, t)).collect();
            full.sort();
            let mut keys = Vec::new();
            for u in &full {
                for seq in (1..=2).rev() {
                    keys.push(internal_key(u, make_trailer(seq, ValueKind::Put)));
                }
            }
            let block = build(&keys);
            for (g, t, cut, seq) in targets {
                let whole = grouped(g, &t);
                for user in [whole.clone(), whole.get(..cut).unwrap_or(&whole).to_vec()] {
                    let target = internal_key(&user, key::seek_trailer(seq));
                    let expect = keys.iter().position(|k| key::compare(k, &target) != Ordering::Less);
                    proptest::prop_assert_eq!(block.seek(&target), expect.unwrap_or(keys.len()));
                }
            }
        }
    }

    #[test]
    fn long_runs_of_equal_windows_get_inner_windows() {
        let keys: Vec<Vec<u8>> = (0..40u32)
            .map(|i| {
                internal_key(&grouped(i as u8 / 20, format!("job-{i:06}").as_bytes()), make_trailer(1, ValueKind::Put))
            })
            .collect();
        let block = build(&keys);
        // Two runs of 20 (one per group), each sharing `r`, its group and `/records/job-0000`.
        assert_eq!(block.inner().0.len(), 40);
        assert_eq!(block.run(0), Some((20, b"r\0/records/job-0000".len())));
        assert_eq!(block.run(39), Some((40, b"r\x01/records/job-0000".len())));
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(block.seek(k), i);
            assert_eq!(block.key(i), &k[..]);
            assert_eq!(block.value(i), format!("v{i}").as_bytes());
        }
        // Short runs get none.
        let block = build(&keys[..LONG_RUN - 1]);
        assert!(block.inner().0.is_empty());
        assert_eq!(block.run(0), None);
        // Nor does a run whose shared prefix is too long to note (a block read from disk may hold such
        // keys); it is searched with full keys, beside a run that has them.
        let long = vec![7u8; 70_000];
        let mut keys: Vec<Vec<u8>> = (0..10)
            .map(|i| internal_key(&grouped(0, format!("{i:03}").as_bytes()), make_trailer(1, ValueKind::Put)))
            .collect();
        keys.extend((1..=10).rev().map(|seq| internal_key(&grouped(1, &long), make_trailer(seq, ValueKind::Put))));
        let block = build(&keys);
        assert_eq!(block.inner().0.len(), 20);
        assert_eq!(block.run(10), None);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(block.seek(k), i);
        }
        assert_eq!(block.seek(&internal_key(&grouped(1, &long), key::seek_trailer(5))), 15);
    }

    #[test]
    fn every_truncation_and_most_flips_are_rejected_without_panic() {
        let block = {
            let mut b = BlockBuilder::default();
            b.add(&ik("k1", 1), b"value-1");
            b.add(&ik("k2", 1), b"value-2");
            b.finish()
        };
        for cut in 0..block.len() {
            let mut data = block[..cut].to_vec();
            data.extend_from_slice(&2u32.to_le_bytes());
            let _ = Block::decode(&data);
        }
        for i in 0..block.len() {
            for bit in 0..8 {
                let mut data = block.clone();
                data[i] ^= 1 << bit;
                if let Ok(b) = Block::decode(&data) {
                    // Whatever decodes still holds ordered internal keys.
                    for j in 1..b.len() {
                        assert_eq!(key::compare(b.key(j - 1), b.key(j)), Ordering::Less);
                    }
                }
            }
        }
        assert!(Block::decode(&[0, 0, 0, 0]).is_err());
    }

    /// A block of one entry read in place gives what its decoding gives, and refuses what decoding refuses,
    /// under every truncation and every flipped bit; a block of two entries is not read in place.
    #[test]
    fn a_single_entry_is_read_in_place_as_decoding_reads_it() {
        let single = {
            let mut b = BlockBuilder::default();
            b.add(&ik("large", 7), &[0xab; 300]);
            b.finish()
        };
        let agrees = |data: &[u8]| match (Block::single_entry(data), Block::decode(data)) {
            (Ok(Some((k, v))), Ok(b)) => {
                assert_eq!(b.len(), 1);
                assert_eq!((k, v), (b.key(0), b.value(0)));
            }
            (Ok(None), Ok(b)) => assert!(b.len() > 1),
            // A count above one leaves the block to decoding, which refuses it.
            (Ok(None), Err(_)) | (Err(_), Err(_)) => {}
            (in_place, decoded) => panic!("in place {in_place:?}, decoded {:?}", decoded.map(|b| b.len())),
        };
        assert_eq!(Block::single_entry(&single).unwrap(), Some((&ik("large", 7)[..], &[0xab; 300][..])));
        for cut in 0..single.len() {
            agrees(&single[..cut]);
        }
        for i in 0..single.len() {
            for bit in 0..8 {
                let mut data = single.clone();
                data[i] ^= 1 << bit;
                agrees(&data);
            }
        }
        let mut b = BlockBuilder::default();
        b.add(&ik("k1", 1), b"value-1");
        b.add(&ik("k2", 1), b"value-2");
        assert_eq!(Block::single_entry(&b.finish()).unwrap(), None);
    }
}
