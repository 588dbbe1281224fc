//! Writes a table from entries given in internal-key order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::StorageError;
use crate::format::coding::put_u32;
use crate::format::key;
use crate::io::{Storage, WritableFile};

use super::block::{Block, BlockBuilder};
use super::cache::BlockCache;
use super::filter;
use super::footer::{BlockHandle, Footer};
use super::{BlockCompression, Compression};

/// Appends are gathered into writes of about this size.
const WRITE_BUFFER: usize = 256 * 1024;
/// Compressed blocks are kept only when they save at least 1/8 of the raw size.
const MIN_SAVING_DIVISOR: usize = 8;
/// After this many data blocks in a row that did not compress enough, compression is only tried on every
/// [`PROBE_EVERY`]th data block until one compresses again: incompressible data (random or already
/// compressed values) then costs almost no compression work.
const GIVE_UP_AFTER: u32 = 8;
const PROBE_EVERY: u64 = 16;
/// Data blocks a table holds back to make its dictionary from ([`Compression::ZstdDictionary`]); their
/// bytes are written once it is made.
const DICTIONARY_SAMPLES: usize = 16;
/// Fewest data blocks a dictionary is made from: a table with fewer has none.
const MIN_DICTIONARY_SAMPLES: usize = 8;
/// Bytes beyond the dictionary's content for the header and entropy tables zstd puts before it.
const DICTIONARY_HEADER_ROOM: usize = 4096;

/// Data blocks held back until the table's dictionary is made: each one's bytes and last key.
struct Samples {
    dictionary_size: usize,
    blocks: Vec<(Vec<u8>, Vec<u8>)>,
    bytes: usize,
}

/// What a finished table holds.
#[derive(Debug, Clone)]
pub(crate) struct TableSummary {
    pub size: u64,
    pub entries: u64,
    /// Entries that are tombstones.
    pub deletions: u64,
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
    pub min_seq: u64,
    pub max_seq: u64,
}

/// A table being written asks the operating system to start writing its bytes every this many bytes
/// ([`WritableFile::start_writeback`]), so that a flush or a compaction does not leave tens of MiB dirty for
/// its final sync to push at once: a burst that would queue the WAL's small syncs, and so commits, behind it.
const WRITEBACK_EVERY: u64 = 1 << 20;

pub(crate) struct TableBuilder {
    file: Box<dyn WritableFile>,
    path: PathBuf,
    offset: u64,
    /// `offset` when the operating system was last asked to start writing.
    hinted: u64,
    pending: Vec<u8>,
    data: BlockBuilder,
    index: BlockBuilder,
    hashes: Vec<u64>,
    last_user_key: Vec<u8>,
    block_size: usize,
    compression: Compression,
    /// One zstd context for the whole table: creating one per block costs more than compressing it. It
    /// holds the table's dictionary once one is made.
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// Blocks held back to make a dictionary from, until it is made (or given up).
    samples: Option<Samples>,
    /// Where the dictionary was written, once it is.
    dictionary: Option<BlockHandle>,
    bits_per_key: u32,
    /// Data blocks written, and how many of the latest in a row did not compress.
    data_blocks: u64,
    incompressible_run: u32,
    entries: u64,
    deletions: u64,
    smallest: Vec<u8>,
    largest: Vec<u8>,
    min_seq: u64,
    max_seq: u64,
    /// Where each data block goes, decoded, as it is written, and the table's number (see
    /// [`TableBuilder::cache_blocks`]).
    cache: Option<(Arc<BlockCache>, u64)>,
}

impl TableBuilder {
    pub fn create(
        storage: &dyn Storage,
        path: &Path,
        block_size: usize,
        compression: Compression,
        bits_per_key: u32,
    ) -> Result<Self, StorageError> {
        let file = storage.create(path).map_err(|e| StorageError::io(path, e))?;
        let compressor = match compression {
            Compression::Zstd { level } | Compression::ZstdDictionary { level, .. } => {
                Some(zstd::bulk::Compressor::new(level).map_err(|e| StorageError::io(path, e))?)
            }
            Compression::None => None,
        };
        let samples = match compression {
            Compression::ZstdDictionary { dictionary_size, .. } => {
                Some(Samples { dictionary_size, blocks: Vec::with_capacity(DICTIONARY_SAMPLES), bytes: 0 })
            }
            _ => None,
        };
        Ok(Self {
            compressor,
            samples,
            dictionary: None,
            file,
            path: path.to_path_buf(),
            offset: 0,
            hinted: 0,
            pending: Vec::with_capacity(WRITE_BUFFER + block_size),
            data: BlockBuilder::default(),
            index: BlockBuilder::default(),
            hashes: Vec::new(),
            last_user_key: Vec::new(),
            block_size,
            compression,
            bits_per_key,
            data_blocks: 0,
            incompressible_run: 0,
            entries: 0,
            deletions: 0,
            smallest: Vec::new(),
            largest: Vec::new(),
            min_seq: u64::MAX,
            max_seq: 0,
            cache: None,
        })
    }

    /// Puts each data block into `cache`, decoded, as it is written, under table `number`: the first reads
    /// of the table then find their blocks without reading, checking and decompressing them (a flush's,
    /// which are the newest data). The cache's budget bounds them as it does any block.
    pub fn cache_blocks(&mut self, cache: Arc<BlockCache>, number: u64) {
        self.cache = Some((cache, number));
    }

    /// Adds an entry; keys must arrive in strictly ascending internal-key order.
    pub fn add(&mut self, ikey: &[u8], value: &[u8]) -> Result<(), StorageError> {
        if self.entries > 0 && key::compare(&self.largest, ikey) != std::cmp::Ordering::Less {
            let show = |k: &[u8]| {
                let (u, t) = key::split(k);
                format!("{}@{}", String::from_utf8_lossy(u), key::trailer_seq(t))
            };
            let reason = format!("table input keys out of order: {} then {}", show(&self.largest), show(ikey));
            return Err(StorageError::corruption(&self.path, self.estimated_size(), reason));
        }
        let (ukey, trailer) = key::split(ikey);
        if self.entries == 0 {
            self.smallest = ikey.to_vec();
        }
        if self.entries == 0 || ukey != self.last_user_key.as_slice() {
            self.hashes.push(key::key_hash(ukey));
            self.last_user_key.clear();
            self.last_user_key.extend_from_slice(ukey);
        }
        let seq = key::trailer_seq(trailer);
        self.min_seq = self.min_seq.min(seq);
        self.max_seq = self.max_seq.max(seq);
        self.entries += 1;
        if key::trailer_kind(trailer) == Some(key::ValueKind::Delete) {
            self.deletions += 1;
        }
        self.largest.clear();
        self.largest.extend_from_slice(ikey);
        self.data.add(ikey, value);
        if self.data.size() >= self.block_size {
            self.finish_data_block()?;
        }
        Ok(())
    }

    /// Bytes written so far plus the blocks held back and the open block.
    pub fn estimated_size(&self) -> u64 {
        let held = self.samples.as_ref().map_or(0, |s| s.bytes);
        self.offset + self.pending.len() as u64 + held as u64 + self.data.size() as u64
    }

    fn finish_data_block(&mut self) -> Result<(), StorageError> {
        if self.data.is_empty() {
            return Ok(());
        }
        let last_key = self.data.last_key().to_vec();
        let raw = self.data.finish();
        if let Some(samples) = &mut self.samples {
            samples.bytes += raw.len();
            samples.blocks.push((raw, last_key));
            if samples.blocks.len() >= DICTIONARY_SAMPLES {
                self.settle_dictionary()?;
            }
            return Ok(());
        }
        self.write_data_block(raw, &last_key)
    }

    /// Makes the dictionary from the blocks held back, keeps it if they compress at least an eighth smaller
    /// with it than without, writes it if kept, and then writes those blocks.
    fn settle_dictionary(&mut self) -> Result<(), StorageError> {
        let Some(samples) = self.samples.take() else { return Ok(()) };
        if let Some((dictionary, compressor)) = self.make_dictionary(&samples) {
            let (handle, _) = self.write_block(&dictionary, Compression::None)?;
            self.dictionary = Some(handle);
            self.compressor = Some(compressor);
        }
        for (raw, last_key) in samples.blocks {
            self.write_data_block(raw, &last_key)?;
        }
        Ok(())
    }

    /// A dictionary made from `samples` and a compressor holding it, if it pays for itself.
    fn make_dictionary(&mut self, samples: &Samples) -> Option<(Vec<u8>, zstd::bulk::Compressor<'static>)> {
        let level = match self.compression {
            Compression::ZstdDictionary { level, .. } => level,
            _ => return None,
        };
        if samples.blocks.len() < MIN_DICTIONARY_SAMPLES {
            return None;
        }
        let raws: Vec<&[u8]> = samples.blocks.iter().map(|(raw, _)| raw.as_slice()).collect();
        let dictionary = dictionary_from(&raws, samples.dictionary_size, level)?;
        let mut with = zstd::bulk::Compressor::with_dictionary(level, &dictionary).ok()?;
        let plain = self.compressor.as_mut()?;
        // What each block would take on disk: compressed only where that saves enough (see `write_block`).
        let size = |c: &mut zstd::bulk::Compressor<'static>| -> usize {
            raws.iter()
                .map(|raw| c.compress(raw).ok().filter(|z| saves_enough(z, raw)).map_or(raw.len(), |z| z.len() + 4))
                .sum()
        };
        // The dictionary's own bytes are not counted: a table is mostly many times the samples' size, so a
        // dictionary that saves an eighth on them saves it on the table's blocks too.
        let (without, with_it) = (size(plain), size(&mut with));
        (with_it <= without - without / MIN_SAVING_DIVISOR).then_some((dictionary, with))
    }

    /// Writes a data block, caches it if asked to, and indexes it under `last_key`.
    fn write_data_block(&mut self, raw: Vec<u8>, last_key: &[u8]) -> Result<(), StorageError> {
        let probe = self.incompressible_run < GIVE_UP_AFTER || self.data_blocks.is_multiple_of(PROBE_EVERY);
        let compression = if probe { self.compression } else { Compression::None };
        let (handle, compressed) = self.write_block(&raw, compression)?;
        // A block of one entry stored uncompressed is cached only if that evicts nothing, as reads cache it
        // (see `TableReader::data_block`).
        let one_large_value = !compressed && Block::holds_one_entry(&raw);
        let cache = self.cache.as_ref().filter(|(cache, number)| {
            !one_large_value || cache.has_room_unless_busy(*number, handle.offset, raw.len())
        });
        if let Some((cache, number)) = cache {
            // The bytes a read would decode after checking and decompressing them. A block that did not
            // decode (a builder's bug) is left out: a read would then report it, naming the file.
            let decoded = Block::decode(&raw);
            debug_assert!(decoded.is_ok(), "a data block just built does not decode");
            match decoded {
                Ok(block) if one_large_value => cache.insert_if_room_unless_busy(*number, handle.offset, block, None),
                Ok(block) => cache.insert_unless_busy(*number, handle.offset, block, None),
                Err(_) => {}
            }
        }
        self.data_blocks += 1;
        if compressed {
            self.incompressible_run = 0;
        } else if probe {
            self.incompressible_run = self.incompressible_run.saturating_add(1);
        }
        let mut encoded = Vec::with_capacity(BlockHandle::ENCODED_LEN);
        handle.encode(&mut encoded);
        self.index.add(last_key, &encoded);
        Ok(())
    }

    /// Writes a block, compressed if that saves enough; returns its handle and whether it was compressed.
    fn write_block(&mut self, raw: &[u8], compression: Compression) -> Result<(BlockHandle, bool), StorageError> {
        let compressed = match (compression, &mut self.compressor) {
            (Compression::Zstd { .. } | Compression::ZstdDictionary { .. }, Some(c)) => {
                c.compress(raw).ok().filter(|c| saves_enough(c, raw))
            }
            _ => None,
        };
        let start = self.pending.len();
        let was_compressed = compressed.is_some();
        let kind = match compressed {
            Some(c) => {
                put_u32(&mut self.pending, raw.len() as u32);
                self.pending.extend_from_slice(&c);
                if self.dictionary.is_some() {
                    BlockCompression::ZstdDictionary
                } else {
                    BlockCompression::Zstd
                }
            }
            None => {
                self.pending.extend_from_slice(raw);
                BlockCompression::None
            }
        };
        let size = (self.pending.len() - start) as u64;
        self.pending.push(kind as u8);
        let crc = crc32fast::hash(self.pending.get(start..).unwrap_or_default());
        put_u32(&mut self.pending, crc);
        let handle = BlockHandle { offset: self.offset + start as u64, size };
        if self.pending.len() >= WRITE_BUFFER {
            self.flush_pending()?;
        }
        Ok((handle, was_compressed))
    }

    fn flush_pending(&mut self) -> Result<(), StorageError> {
        self.file.append(&self.pending).map_err(|e| StorageError::io(&self.path, e))?;
        self.offset += self.pending.len() as u64;
        self.pending.clear();
        if self.offset - self.hinted >= WRITEBACK_EVERY {
            self.hinted = self.offset;
            // Only a hint: a file system that refuses it loses nothing, and the sync reports real errors.
            let _ = self.file.start_writeback();
        }
        Ok(())
    }

    /// Writes the filter, index and footer, and syncs the file.
    pub fn finish(mut self) -> Result<TableSummary, StorageError> {
        self.finish_data_block()?;
        self.settle_dictionary()?;
        let filter_bytes = filter::build(&self.hashes, self.bits_per_key);
        let (filter, _) = self.write_block(&filter_bytes, Compression::None)?;
        let index_raw = self.index.finish();
        let (index, _) = self.write_block(&index_raw, self.compression)?;
        let footer = Footer { index, filter, dictionary: self.dictionary, entry_count: self.entries };
        self.pending.extend_from_slice(&footer.encode());
        self.flush_pending()?;
        self.file.sync().map_err(|e| StorageError::io(&self.path, e))?;
        Ok(TableSummary {
            size: self.offset,
            entries: self.entries,
            deletions: self.deletions,
            smallest: self.smallest,
            largest: self.largest,
            min_seq: if self.entries == 0 { 0 } else { self.min_seq },
            max_seq: self.max_seq,
        })
    }
}

/// Whether `compressed` (stored after its 4-byte raw length) saves at least 1/[`MIN_SAVING_DIVISOR`] of
/// `raw`.
fn saves_enough(compressed: &[u8], raw: &[u8]) -> bool {
    compressed.len() + 4 <= raw.len() - raw.len() / MIN_SAVING_DIVISOR
}

/// A zstd dictionary of at most `size` bytes for blocks like `samples`: their last `size` bytes as its
/// content, with the entropy tables (literals, match lengths, offsets) that zstd derives from compressing
/// the samples at `level` against that content. `None` if zstd refuses (samples with nothing to gain).
///
/// Records written together repeat each other's field names and common values, which the latest block
/// holds as well as any: a dictionary so made compressed 8 KiB blocks of jobs within 5% of one trained by
/// zstd's COVER search, in 0.2 ms instead of 9-12 ms (`docs/benchmarks.md`, "Table dictionaries").
fn dictionary_from(samples: &[&[u8]], size: usize, level: i32) -> Option<Vec<u8>> {
    let flat = samples.concat();
    let sizes: Vec<usize> = samples.iter().map(|s| s.len()).collect();
    let content = flat.get(flat.len().saturating_sub(size)..)?;
    // Room for the header zstd puts before the content, which it truncates from the front to fit.
    let mut out = vec![0u8; size + DICTIONARY_HEADER_ROOM];
    let params = zstd_sys::ZDICT_params_t { compressionLevel: level, notificationLevel: 0, dictID: 0 };
    // SAFETY: every pointer is to a live buffer of the length passed with it: `out` (written, not read),
    // `content`, and `flat`, whose length is the sum of `sizes`, `sizes.len()` of them. `content` lies
    // inside `flat`; zstd reads it before writing `out`, a separate allocation.
    let written = unsafe {
        zstd_sys::ZDICT_finalizeDictionary(
            out.as_mut_ptr().cast(),
            out.len(),
            content.as_ptr().cast(),
            content.len(),
            flat.as_ptr().cast(),
            sizes.as_ptr(),
            u32::try_from(sizes.len()).ok()?,
            params,
        )
    };
    // SAFETY: `ZDICT_isError` only inspects the value.
    if unsafe { zstd_sys::ZDICT_isError(written) } != 0 || written > out.len() {
        return None;
    }
    out.truncate(written);
    Some(out)
}
