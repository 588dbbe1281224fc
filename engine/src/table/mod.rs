//! Sorted tables: immutable files of checksummed, optionally zstd-compressed blocks with an index, a bloom
//! filter and a footer. See `docs/format/table.md`.

mod block;
mod builder;
mod cache;
mod filter;
mod footer;
mod iter;
mod reader;
mod slots;

pub(crate) use builder::{TableBuilder, TableSummary};
pub(crate) use cache::BlockCache;
pub(crate) use iter::TableIter;
pub(crate) use reader::{BlockValue, TableReader};

/// Block compression for tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Blocks are stored as written.
    None,
    /// Blocks are compressed with zstd at `level`, and stored compressed only if that saves at least an
    /// eighth of their size.
    Zstd {
        /// zstd compression level (1 is fast; 3 is zstd's default). Negative levels keep literals raw, not
        /// Huffman-coded: larger blocks that decompress faster.
        level: i32,
    },
    /// As [`Compression::Zstd`], against a dictionary of up to `dictionary_size` bytes that each table makes
    /// from its first blocks and stores in itself (`docs/format/table.md`, "Dictionary"). Blocks of similar
    /// records (JSON documents with the same fields) share more bytes with each other than within one
    /// block: the dictionary gives zstd those bytes and its entropy tables, so the blocks compress smaller
    /// (a collection of jobs took 41% less disk). A table whose first blocks do not compress at least an
    /// eighth smaller with the dictionary than without, or that has too few of them, is written as with
    /// [`Compression::Zstd`].
    ZstdDictionary {
        /// zstd compression level, as for [`Compression::Zstd`].
        level: i32,
        /// Largest dictionary made, in bytes, 256 to 1 MiB (a block's worth suits blocks of 4-8 KiB).
        dictionary_size: usize,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd { level: 1 }
    }
}

/// Compression of one block on disk. Values are written to disk and never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum BlockCompression {
    /// Stored as is.
    None = 0,
    /// `raw_len u32 LE` followed by one zstd frame.
    Zstd = 1,
    /// As `Zstd`, the frame made with the table's dictionary.
    ZstdDictionary = 2,
}

/// Length of the trailer after each block: compression type (1) and crc32 (4).
pub(crate) const BLOCK_TRAILER_LEN: usize = 5;

#[cfg(test)]
mod tests;
