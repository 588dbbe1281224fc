//! [`BlobOptions`]: how a [`BlobStore`](super::BlobStore) writes, set by a builder whose every setter states its
//! default.

use super::format::{BLOB_HEADER_LEN, BLOB_TRAILER_LEN, CHUNK_CRC_LEN, MAX_BLOB_CHUNK_SIZE};

/// A writer keeps a blob in memory until it grows past this many chunks; smaller blobs are appended whole to
/// the shared file, larger ones streamed to a file of their own.
pub const SMALL_BLOB_CHUNKS: u64 = 16;

/// How a [`BlobStore`](super::BlobStore) writes blob files.
///
/// ```
/// let options = cairn_engine::BlobOptions::default().chunk_size(1 << 20).file_size(1 << 30);
/// assert_eq!(options.small_blob_limit(), 16 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobOptions {
    pub(crate) file_size: u64,
    pub(crate) chunk_size: u32,
    pub(crate) sync: bool,
}

impl Default for BlobOptions {
    fn default() -> Self {
        Self { file_size: 256 << 20, chunk_size: 64 << 10, sync: true }
    }
}

impl BlobOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Small blobs are appended to one shared file; once it is at least this long the next small blob starts
    /// a new one. Larger files mean fewer files but coarser garbage collection (a file is removed whole).
    /// Default = 256 MiB.
    pub fn file_size(mut self, bytes: u64) -> Self {
        self.file_size = bytes;
        self
    }

    /// The length at which the shared file of small blobs is closed ([`file_size`](Self::file_size)).
    pub fn shared_file_size(&self) -> u64 {
        self.file_size
    }

    /// Bytes per checksummed chunk, 1 to 64 MiB. A range read verifies whole chunks, so smaller chunks make
    /// small range reads cheaper; each costs 4 bytes of CRC. A writer buffers at most one chunk of a large
    /// blob, and up to 16 chunks of a small one. Default = 64 KiB.
    pub fn chunk_size(mut self, bytes: u32) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// Whether [`BlobWriter::finish`](super::BlobWriter::finish) syncs the blob (`fdatasync`, shared by
    /// writers finishing together) before it returns. Off, a finished blob survives a process crash but
    /// not a power cut. File headers and new file names are synced either way. Default = `true`.
    pub fn sync(mut self, yes: bool) -> Self {
        self.sync = yes;
        self
    }

    /// A blob up to this many bytes is kept in memory by its writer and appended whole to the shared file;
    /// a larger one goes to a file of its own: [`SMALL_BLOB_CHUNKS`] chunks.
    pub fn small_blob_limit(&self) -> u64 {
        u64::from(self.chunk_size) * SMALL_BLOB_CHUNKS
    }

    /// The most memory a [`BlobWriter`](super::BlobWriter) holds, in bytes
    /// ([`BlobWriter::buffer_capacity`](super::BlobWriter::buffer_capacity) never exceeds it): a small blob
    /// of [`small_blob_limit`](Self::small_blob_limit) bytes framed as on disk.
    pub fn writer_buffer_bound(&self) -> usize {
        let limit = self.small_blob_limit() as usize;
        BLOB_HEADER_LEN + limit + SMALL_BLOB_CHUNKS as usize * CHUNK_CRC_LEN + BLOB_TRAILER_LEN
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.chunk_size == 0 || self.chunk_size > MAX_BLOB_CHUNK_SIZE {
            return Err(format!("blob chunk_size {} is not in 1..={MAX_BLOB_CHUNK_SIZE}", self.chunk_size));
        }
        Ok(())
    }
}
