//! Sorted tables: immutable files of checksummed, optionally zstd-compressed blocks with an index, a bloom
//! filter and a footer. See `docs/format/table.md`.

mod block;
mod builder;
mod cache;
mod filter;
mod footer;
mod iter;
mod reader;

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
}

/// Length of the trailer after each block: compression type (1) and crc32 (4).
pub(crate) const BLOCK_TRAILER_LEN: usize = 5;
/// Length of the fixed footer at the end of a table.
pub(crate) const FOOTER_LEN: usize = 56;

#[cfg(test)]
mod tests;
