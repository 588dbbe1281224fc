//! Blob files: large values (datasets, checkpoints, logs, up to many GiB) kept apart from the key-value
//! store, which holds only their references (key-value separation).
//!
//! A blob file (`NNNNNN.blob`, in a directory of its own) is a 16-byte header followed by blobs; each blob is
//! a header (length, chunk size, a checksum), its bytes in chunks each followed by its CRC-32, and a trailer
//! (the length again, a checksum over the chunk checksums), so that a blob whose writer died is recognised
//! as incomplete. Files are only ever appended to and removed whole. Blobs are written and read as streams:
//! memory does not grow with a blob's size. The format is specified in `docs/format/blob.md`.
//!
//! | file          | what                                                                   |
//! |---------------|------------------------------------------------------------------------|
//! | `format.rs`   | constants, the file header, blob header and trailer codecs, chunk layout |
//! | `options.rs`  | [`BlobOptions`]                                                        |
//! | `store.rs`    | [`BlobStore`]: files, pins, reads, removal                             |
//! | `shared.rs`   | the shared append file and its group sync                              |
//! | `writer.rs`   | [`BlobWriter`]                                                         |
//! | `reader.rs`   | [`BlobReader`]                                                         |
//! | `scan.rs`     | walking a file's blobs; incomplete or corrupt                          |
//! | `check.rs`    | [`BlobStore::check`]                                                   |

mod check;
mod format;
mod options;
mod reader;
mod scan;
mod shared;
mod store;
mod writer;

#[cfg(test)]
mod tests;

pub use check::BlobCheckReport;
pub use format::{BLOB_FORMAT_VERSION, BLOB_MAGIC, MAX_BLOB_CHUNK_SIZE};
pub use options::{BlobOptions, SMALL_BLOB_CHUNKS};
pub use reader::BlobReader;
pub use store::{BlobPin, BlobStore};
pub use writer::BlobWriter;

/// Where a blob is: the number of its file, the offset of its header in that file, and its length in bytes.
/// The layer above keeps it (encoded, [`BlobRef::ENCODED_LEN`] bytes) with the object's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobRef {
    /// The blob file's number (`NNNNNN.blob`).
    pub file: u64,
    /// Offset of the blob's header in the file.
    pub offset: u64,
    /// The blob's length in bytes.
    pub len: u64,
}

impl BlobRef {
    /// Length of [`encode`](Self::encode)'s output: `file`, `offset`, `len`, each a `u64` little-endian.
    pub const ENCODED_LEN: usize = 24;

    /// The reference as `file | offset | len`, each a `u64` little-endian.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        for (dst, v) in out.chunks_exact_mut(8).zip([self.file, self.offset, self.len]) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes [`encode`](Self::encode)'s output; `None` unless `bytes` is exactly
    /// [`ENCODED_LEN`](Self::ENCODED_LEN) long.
    pub fn decode(bytes: &[u8]) -> Option<BlobRef> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        let mut words = bytes.chunks_exact(8).map(|w| w.try_into().ok().map(u64::from_le_bytes));
        Some(BlobRef { file: words.next()??, offset: words.next()??, len: words.next()?? })
    }
}

/// A blob file, as [`BlobStore::files`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobFileInfo {
    /// The file's number.
    pub number: u64,
    /// Its length on disk.
    pub len: u64,
    /// Whether it is still being appended to (the shared file, or a streaming writer's own); such a file
    /// cannot be removed.
    pub active: bool,
}
