//! Reads a table through a read-only map, verifying every block it touches.

#![deny(clippy::indexing_slicing)]

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::StorageError;
use crate::format::coding::read_u32_at;
use crate::format::key::{self, ValueKind};
use crate::io::{MappedFile, Storage};
use crate::memtable::Lookup;

use super::block::Block;
use super::cache::BlockCache;
use super::filter;
use super::footer::{BlockHandle, Footer};
use super::slots::BlockSlots;
use super::{BlockCompression, BLOCK_TRAILER_LEN};
use zstd::zstd_safe::{DCtx, DDict};

thread_local! {
    /// One zstd context per thread, reused for every block it decompresses.
    static DECOMPRESSOR: std::cell::RefCell<Option<DCtx<'static>>> = std::cell::RefCell::new(DCtx::try_create());
}

/// Largest decompressed block accepted: a single value may be 256 MiB.
const MAX_RAW_BLOCK: usize = 512 * 1024 * 1024;

/// A table's decoded index: the index block (searched by key), its entries' block handles, and the zstd
/// dictionary its blocks were compressed with, if any (held, charged and evicted with the index, which
/// every read of a data block holds anyway).
#[derive(Debug)]
pub(crate) struct TableIndex {
    block: Block,
    handles: Vec<BlockHandle>,
    dictionary: Option<Dictionary>,
}

/// A table's zstd dictionary, digested for decompression.
pub(crate) struct Dictionary(DDict<'static>);

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary").field("bytes", &self.0.sizeof()).finish()
    }
}

impl TableIndex {
    /// Number of data blocks.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Index of the first data block whose last key is `>= target`; `len()` if none.
    pub fn find_block(&self, target: &[u8]) -> usize {
        self.block.seek(target)
    }

    /// Where data block `i` starts in the file.
    #[cfg(test)]
    pub fn block_offset(&self, i: usize) -> Option<u64> {
        self.handles.get(i).map(|h| h.offset)
    }

    /// Bytes of memory the index holds, for cache accounting.
    pub fn charge(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.block.charge()
            + self.handles.capacity() * std::mem::size_of::<BlockHandle>()
            + self.dictionary.as_ref().map_or(0, |d| d.0.sizeof())
    }

    fn dictionary(&self) -> Option<&DDict<'static>> {
        self.dictionary.as_ref().map(|d| &d.0)
    }
}

/// A value read in place: entry `pos` of a decoded block, which it keeps alive, or the value of a block of
/// one entry in the table's map (see [`TableReader::data_block`]).
#[derive(Debug)]
pub(crate) enum BlockValue<'a> {
    Cached { block: Block, pos: usize },
    Mapped(&'a [u8]),
}

impl AsRef<[u8]> for BlockValue<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            BlockValue::Cached { block, pos } => block.value(*pos),
            BlockValue::Mapped(value) => value,
        }
    }
}

/// A data block a point read searches: decoded, or a block of one entry read in place from the table's map.
enum DataBlock<'a> {
    Decoded(Block),
    InPlace { key: &'a [u8], value: &'a [u8] },
}

/// Whether a block read from the table goes into the cache: never, evicting other blocks as needed, or only
/// if its shard has room for it without evicting any (a block of one entry stored uncompressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Never,
    Always,
    IfRoom,
}

/// A data block neither its slot nor the cache held: where it is, and whether the cache may take it once
/// decoded (not if its shard was busy).
struct Miss {
    i: usize,
    handle: BlockHandle,
    cacheable: bool,
}

/// A table's bloom filter, as read from its filter block.
#[derive(Debug)]
pub(crate) struct Filter(Vec<u8>);

impl Filter {
    /// Bytes of memory the filter holds, for cache accounting.
    pub fn charge(&self) -> usize {
        std::mem::size_of::<Self>() + self.0.capacity()
    }
}

/// A table's index and filter held by its reader rather than looked up in the cache: charged to the cache
/// ([`BlockCache::try_pin`]) while it has room for them, or uncharged when the cache is disabled (tools that
/// read a table once, through a cache of size 0). With a cache, the reader's block slots too.
#[derive(Debug)]
struct Pinned {
    index: Arc<TableIndex>,
    filter: Arc<Filter>,
    /// The cached data blocks beside their handles (none without a cache, which holds no block).
    slots: Option<Arc<BlockSlots>>,
    /// Bytes charged to the cache, given back when the reader is dropped (0 if the cache is disabled).
    charge: usize,
}

/// An index or filter borrowed from the reader that pins it, or shared with the cache.
pub(crate) enum Held<'a, T> {
    Pinned(&'a T),
    Cached(Arc<T>),
}

impl<T> std::ops::Deref for Held<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Held::Pinned(t) => t,
            Held::Cached(t) => t,
        }
    }
}

pub(crate) struct TableReader {
    number: u64,
    path: PathBuf,
    map: Arc<dyn MappedFile>,
    /// Data blocks, from the index (kept so that it is known without the index).
    block_count: usize,
    footer: Footer,
    cache: Arc<BlockCache>,
    pinned: Option<Pinned>,
}

impl std::fmt::Debug for TableReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableReader").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Drop for TableReader {
    /// A closed table's index and filter leave the cache at once: they would only take room until evicted.
    fn drop(&mut self) {
        match &self.pinned {
            Some(p) if p.charge > 0 => self.cache.unpin(p.charge),
            Some(_) => {}
            None => self.cache.remove_meta(self.number, self.footer.index.offset, self.footer.filter.offset),
        }
    }
}

impl TableReader {
    /// Maps the table, verifies and decodes its footer, filter and index, and pins the index and filter
    /// (charged to the cache, if it has room for them; uncharged, if the cache is disabled) or puts them in
    /// the cache.
    pub fn open(storage: &dyn Storage, path: &Path, number: u64, cache: Arc<BlockCache>) -> Result<Self, StorageError> {
        let map = storage.map(path).map_err(|e| StorageError::io(path, e))?;
        let footer =
            Footer::decode_end(map.bytes()).map_err(|e| StorageError::corruption(path, e.offset as u64, e.reason))?;
        let filter = Arc::new(load_filter(map.bytes(), &footer, path)?);
        let index = Arc::new(load_index(map.bytes(), &footer, path)?);
        let block_count = index.len();
        let pinned = if !cache.enabled() {
            Some(Pinned { index, filter, slots: None, charge: 0 })
        } else {
            let slots = BlockSlots::new(block_count);
            let charge = index.charge() + filter.charge() + slots.charge();
            if cache.try_pin(charge) {
                Some(Pinned { index, filter, slots: Some(Arc::new(slots)), charge })
            } else {
                cache.insert_filter(number, footer.filter.offset, filter);
                cache.insert_index(number, footer.index.offset, index);
                None
            }
        };
        Ok(Self { number, path: path.to_path_buf(), map, block_count, footer, cache, pinned })
    }

    /// The table's file number.
    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn block_count(&self) -> usize {
        self.block_count
    }

    /// Whether the reader holds its index and filter itself.
    #[cfg(test)]
    pub fn is_pinned(&self) -> bool {
        self.pinned.is_some()
    }

    /// The blocks the reader's slots hold, each with whether the cache holds that very block under its key.
    #[cfg(test)]
    pub fn slot_blocks(&self) -> Vec<(Block, bool)> {
        let (Some(slots), Ok(index)) = (self.slots(), self.index()) else { return Vec::new() };
        (0..index.len())
            .filter_map(|i| {
                let block = slots.held(i)?;
                let offset = index.handles.get(i)?.offset;
                let cached =
                    self.cache.cached_block(self.number, offset).is_some_and(|c| c.identity() == block.identity());
                Some((block, cached))
            })
            .collect()
    }

    /// The table's index: pinned, from the cache, or read and verified again.
    pub fn index(&self) -> Result<Held<'_, TableIndex>, StorageError> {
        if let Some(p) = &self.pinned {
            return Ok(Held::Pinned(&p.index));
        }
        if let Some(i) = self.cache.get_index(self.number, self.footer.index.offset) {
            return Ok(Held::Cached(i));
        }
        let index = Arc::new(load_index(self.map.bytes(), &self.footer, &self.path)?);
        if index.len() != self.block_count {
            return Err(StorageError::corruption(&self.path, self.footer.index.offset, "index changed since open"));
        }
        self.cache.insert_index(self.number, self.footer.index.offset, index.clone());
        Ok(Held::Cached(index))
    }

    #[cfg(test)]
    pub fn filter_charge(&self) -> Result<usize, StorageError> {
        Ok(self.filter()?.charge())
    }

    #[cfg(test)]
    pub fn index_offset(&self) -> u64 {
        self.footer.index.offset
    }

    /// The table's filter: pinned, from the cache, or read and verified again.
    fn filter(&self) -> Result<Held<'_, Filter>, StorageError> {
        if let Some(p) = &self.pinned {
            return Ok(Held::Pinned(&p.filter));
        }
        if let Some(f) = self.cache.get_filter(self.number, self.footer.filter.offset) {
            return Ok(Held::Cached(f));
        }
        let filter = Arc::new(load_filter(self.map.bytes(), &self.footer, &self.path)?);
        self.cache.insert_filter(self.number, self.footer.filter.offset, filter.clone());
        Ok(Held::Cached(filter))
    }

    pub fn may_contain(&self, user_key_hash: u64) -> Result<bool, StorageError> {
        Ok(filter::may_contain(&self.filter()?.0, user_key_hash))
    }

    /// The reader's block slots, if it keeps them.
    fn slots(&self) -> Option<&Arc<BlockSlots>> {
        self.pinned.as_ref().and_then(|p| p.slots.as_ref())
    }

    /// Data block `i` of `index`, from its slot, from the cache, or read and verified; cached after the read
    /// if `fill_cache`, except a block of one entry stored uncompressed whose shard has no room for it (see
    /// [`TableReader::data_block`]).
    fn block_filling(&self, index: &TableIndex, i: usize, fill_cache: bool) -> Result<Block, StorageError> {
        match self.held_block(index, i, false)? {
            Ok(block) => Ok(block),
            Err(miss) => {
                let raw = read_block(self.map.bytes(), miss.handle, &self.footer, index.dictionary(), &self.path)?;
                let fill = match &raw {
                    _ if !fill_cache => Fill::Never,
                    Cow::Borrowed(bytes) if Block::holds_one_entry(bytes) => Fill::IfRoom,
                    _ => Fill::Always,
                };
                self.decode_missed(miss, &raw, fill)
            }
        }
    }

    /// Data block `i` of `index` from its slot or from the cache, or else what reading it takes. With
    /// `in_place`, a block known to be of one entry stored uncompressed ([`BlockSlots::in_place`]) is not
    /// looked up in the cache: its slot would hold it if it were cached.
    fn held_block(&self, index: &TableIndex, i: usize, in_place: bool) -> Result<Result<Block, Miss>, StorageError> {
        let slots = self.slots();
        if let Some(block) = slots.and_then(|s| s.get(i)) {
            self.cache.count_slot_hit();
            return Ok(Ok(block));
        }
        let handle = index.handles.get(i).copied().ok_or_else(|| {
            StorageError::corruption(&self.path, self.footer.index.offset, format!("no index entry {i}"))
        })?;
        if in_place && slots.is_some_and(|s| s.in_place(i)) {
            return Ok(Err(Miss { i, handle, cacheable: true }));
        }
        // A shard held by a thread that was preempted would keep this read waiting for a time slice: the
        // read decodes the block itself instead, and leaves it out of the cache.
        let cached = self.cache.get_unless_busy(self.number, handle.offset, slots.map(|s| (s, i)));
        if let Ok(Some((b, released))) = cached {
            // A block a flush cached, or one cached for an earlier reader of the table, has no release for
            // this reader's slot: its entry is replaced by one that has.
            if let Some(slots) = slots.filter(|_| !released) {
                self.cache.insert_unless_busy(self.number, handle.offset, b.clone(), Some((slots.clone(), i)));
            }
            return Ok(Ok(b));
        }
        Ok(Err(Miss { i, handle, cacheable: cached.is_ok() }))
    }

    /// Decodes the bytes `raw` of a block the slots and the cache did not hold, and caches the block as
    /// `fill` says if the cache may take it.
    fn decode_missed(&self, miss: Miss, raw: &[u8], fill: Fill) -> Result<Block, StorageError> {
        let block = Block::decode(raw).map_err(|e| {
            StorageError::corruption(&self.path, miss.handle.offset, format!("data block: {}", e.reason))
        })?;
        if miss.cacheable {
            let slot = self.slots().map(|s| (s.clone(), miss.i));
            let offset = miss.handle.offset;
            match fill {
                Fill::Never => {}
                Fill::Always => self.cache.insert_unless_busy(self.number, offset, block.clone(), slot),
                Fill::IfRoom => self.cache.insert_if_room_unless_busy(self.number, offset, block.clone(), slot),
            }
        }
        Ok(block)
    }

    /// Data block `i` of `index` for a point read. A block of one entry stored uncompressed (a value about
    /// the block size or larger) is decoded and cached only while its cache shard has room for it without
    /// evicting anything; otherwise it is read in place from the map, its checksum verified on every read:
    /// the page cache holds its bytes already, and a full cache would evict other blocks for a copy of one
    /// value. Any other block is taken from its slot or the cache, or read, decoded and cached.
    fn data_block(&self, index: &TableIndex, i: usize) -> Result<DataBlock<'_>, StorageError> {
        let miss = match self.held_block(index, i, true)? {
            Ok(block) => return Ok(DataBlock::Decoded(block)),
            Err(miss) => miss,
        };
        let raw = read_block(self.map.bytes(), miss.handle, &self.footer, index.dictionary(), &self.path)?;
        if let Cow::Borrowed(bytes) = raw {
            let single = Block::single_entry(bytes).map_err(|e| {
                StorageError::corruption(&self.path, miss.handle.offset, format!("data block: {}", e.reason))
            })?;
            if let Some((key, value)) = single {
                if let Some(slots) = self.slots() {
                    slots.set_in_place(i);
                }
                if !(miss.cacheable && self.cache.has_room_unless_busy(self.number, miss.handle.offset, bytes.len())) {
                    return Ok(DataBlock::InPlace { key, value });
                }
                return self.decode_missed(miss, bytes, Fill::IfRoom).map(DataBlock::Decoded);
            }
        }
        self.decode_missed(miss, &raw, Fill::Always).map(DataBlock::Decoded)
    }

    /// Data block `i`, from the cache or read and verified; cached after the read if `fill_cache`.
    pub fn read_block(&self, i: usize, fill_cache: bool) -> Result<Block, StorageError> {
        self.block_filling(&*self.index()?, i, fill_cache)
    }

    /// The newest version of `user_key` with sequence `<= seq` in this table, its value in place: in the
    /// cached block, or in the table's map (see [`TableReader::data_block`]).
    pub fn get(&self, user_key: &[u8], seq: u64, hash: u64) -> Result<Lookup<BlockValue<'_>>, StorageError> {
        if !self.may_contain(hash)? {
            return Ok(Lookup::Absent);
        }
        let target = key::internal_key(user_key, key::seek_trailer(seq));
        let index = self.index()?;
        let i = index.find_block(&target);
        if i >= index.len() {
            return Ok(Lookup::Absent);
        }
        // The first entry at or after `target`, if it is `user_key`'s: its kind, sequence and value.
        let (kind, seq, value) = match self.data_block(&index, i)? {
            DataBlock::InPlace { key: entry, value } => {
                let (ukey, trailer) = key::split(entry);
                if ukey != user_key || key::compare(entry, &target) == std::cmp::Ordering::Less {
                    return Ok(Lookup::Absent);
                }
                (key::trailer_kind(trailer), key::trailer_seq(trailer), BlockValue::Mapped(value))
            }
            DataBlock::Decoded(block) => {
                let pos = block.seek(&target);
                if pos >= block.len() {
                    return Ok(Lookup::Absent);
                }
                block.prefetch_value(pos);
                let (ukey, trailer) = key::split(block.key(pos));
                if ukey != user_key {
                    return Ok(Lookup::Absent);
                }
                (key::trailer_kind(trailer), key::trailer_seq(trailer), BlockValue::Cached { block, pos })
            }
        };
        Ok(match kind {
            Some(ValueKind::Put) => Lookup::Found(value, seq),
            Some(ValueKind::Delete) => Lookup::Deleted(seq),
            None => {
                let at = index.handles.get(i).map_or(self.footer.index.offset, |h| h.offset);
                return Err(StorageError::corruption(&self.path, at, "unknown entry kind"));
            }
        })
    }

    /// Starts loading the first lines of the cached block a seek to `target` reads, if its slot holds it,
    /// without waiting for them (the pinned index's search and the slot's word are read, both mostly in the
    /// CPU's caches; the block's lines are not). Nothing for a table without slots: its index may not be
    /// pinned, and looking it up is a seek's own work.
    pub fn prepare_seek(&self, target: &[u8]) {
        let Some(slots) = self.slots() else { return };
        if let Ok(index) = self.index() {
            slots.prefetch(index.find_block(target));
        }
    }

    /// Reads and checks every block; returns the number of entries seen. Used by `check`.
    pub fn verify(&self) -> Result<u64, StorageError> {
        let mut entries = 0u64;
        let mut last: Option<Vec<u8>> = None;
        let index = self.index()?;
        for i in 0..index.len() {
            let block = self.block_filling(&index, i, false)?;
            if let (Some(prev), Some(first)) = (&last, (block.len() > 0).then(|| block.key(0))) {
                if key::compare(prev, first) != std::cmp::Ordering::Less {
                    let at = index.handles.get(i).map_or(0, |h| h.offset);
                    return Err(StorageError::corruption(&self.path, at, "blocks out of order"));
                }
            }
            entries += block.len() as u64;
            last = block.len().checked_sub(1).map(|l| block.key(l).to_vec());
        }
        if entries != self.footer.entry_count {
            return Err(StorageError::corruption(&self.path, 0, "entry count differs from the footer"));
        }
        Ok(entries)
    }
}

/// Reads, verifies and decodes the table's index block, and its dictionary if it has one.
fn load_index(file: &[u8], footer: &Footer, path: &Path) -> Result<TableIndex, StorageError> {
    let dictionary = match footer.dictionary {
        Some(handle) => {
            let bytes = read_block(file, handle, footer, None, path)?;
            let ddict = DDict::try_create(&bytes)
                .ok_or_else(|| StorageError::corruption(path, handle.offset, "zstd dictionary does not load"))?;
            Some(Dictionary(ddict))
        }
        None => None,
    };
    let raw = read_block(file, footer.index, footer, dictionary.as_ref().map(|d| &d.0), path)?;
    let block = Block::decode(&raw)
        .map_err(|e| StorageError::corruption(path, footer.index.offset, format!("index block: {}", e.reason)))?;
    let handles = (0..block.len())
        .map(|i| {
            BlockHandle::decode(block.value(i)).map_err(|e| {
                StorageError::corruption(path, footer.index.offset, format!("index entry {i}: {}", e.reason))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TableIndex { block, handles, dictionary })
}

/// Reads and verifies the table's filter block.
fn load_filter(file: &[u8], footer: &Footer, path: &Path) -> Result<Filter, StorageError> {
    read_block(file, footer.filter, footer, None, path).map(|bytes| Filter(bytes.into_owned()))
}

/// Reads, verifies and (if compressed) decompresses the block at `handle`, which must end before the table's
/// `footer`: a block stored uncompressed is borrowed from `file`. A block compressed with the table's
/// dictionary needs `dictionary`.
fn read_block<'a>(
    file: &'a [u8],
    handle: BlockHandle,
    footer: &Footer,
    dictionary: Option<&DDict<'static>>,
    path: &Path,
) -> Result<Cow<'a, [u8]>, StorageError> {
    let bad = |reason: &str| StorageError::corruption(path, handle.offset, reason.to_owned());
    let start = usize::try_from(handle.offset).map_err(|_| bad("block offset out of range"))?;
    let size = usize::try_from(handle.size).map_err(|_| bad("block size out of range"))?;
    let end = start
        .checked_add(size)
        .and_then(|e| e.checked_add(BLOCK_TRAILER_LEN))
        .filter(|e| *e <= file.len().saturating_sub(footer.len()))
        .ok_or_else(|| bad("block extends past the end of the table"))?;
    let with_type = file.get(start..start + size + 1).ok_or_else(|| bad("block out of range"))?;
    let crc = read_u32_at(file, start + size + 1).ok_or_else(|| bad("block trailer out of range"))?;
    debug_assert_eq!(start + size + BLOCK_TRAILER_LEN, end);
    if crc32fast::hash(with_type) != crc {
        return Err(bad("block checksum mismatch"));
    }
    let payload = file.get(start..start + size).unwrap_or_default();
    let dictionary = match with_type.last().copied() {
        Some(t) if t == BlockCompression::None as u8 => return Ok(Cow::Borrowed(payload)),
        Some(t) if t == BlockCompression::Zstd as u8 => None,
        Some(t) if t == BlockCompression::ZstdDictionary as u8 => {
            Some(dictionary.ok_or_else(|| bad("block compressed with a dictionary the table does not have"))?)
        }
        _ => return Err(bad("unknown block compression type")),
    };
    let raw_len = read_u32_at(payload, 0).ok_or_else(|| bad("compressed block too short"))? as usize;
    if raw_len > MAX_RAW_BLOCK {
        return Err(bad("implausible decompressed block size"));
    }
    let frame = payload.get(4..).unwrap_or_default();
    let mut out = Vec::with_capacity(raw_len);
    DECOMPRESSOR
        .with(|cell| {
            let mut context = cell.borrow_mut();
            if context.is_none() {
                *context = DCtx::try_create();
            }
            let Some(dctx) = context.as_mut() else { return Err("no decompression context") };
            let done = match dictionary {
                Some(d) => dctx.decompress_using_ddict(&mut out, frame, d),
                None => dctx.decompress(&mut out, frame),
            };
            done.map_err(zstd::zstd_safe::get_error_name)
        })
        .map_err(|e| bad(&format!("zstd: {e}")))?;
    if out.len() != raw_len {
        return Err(bad("decompressed block has the wrong size"));
    }
    Ok(Cow::Owned(out))
}
