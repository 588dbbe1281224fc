//! [`BlobReader`]: a range of a blob, read through [`std::io::Read`] from the mapped file, each chunk
//! verified before any of its bytes is handed out.

#![deny(clippy::indexing_slicing)]

use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use super::format::{slice, BlobHeader, Layout, Trailer, BLOB_TRAILER_LEN, STREAMED_LEN};
use super::BlobRef;
use crate::error::StorageError;
use crate::format::coding::read_u32_at;
use crate::io::MappedFile;

/// Bytes of a blob, from [`BlobStore::read`](super::BlobStore::read). Holds the file mapped (it keeps
/// working if the file is removed) and no buffer of its own. A checksum mismatch is an [`io::Error`] of kind
/// [`io::ErrorKind::InvalidData`] wrapping a [`StorageError::Corruption`] that names the file and the offset
/// of the chunk (get it with `error.get_ref()` and `downcast_ref::<StorageError>()`).
pub struct BlobReader {
    map: Arc<dyn MappedFile>,
    path: PathBuf,
    layout: Layout,
    trailer: Trailer,
    /// Next byte of the blob to hand out.
    pos: u64,
    /// End of the range.
    end: u64,
    /// The chunk verified last.
    verified: Option<u64>,
    /// While the whole blob is read in order from its start: the CRC of the chunk CRCs so far, and the next
    /// chunk expected.
    whole: Option<(crc32fast::Hasher, u64)>,
}

impl BlobReader {
    /// A reader of `range` of `blob`, whose file is `map`. Checks the blob's header and trailer.
    pub(crate) fn new(
        map: Arc<dyn MappedFile>,
        path: PathBuf,
        blob: &BlobRef,
        range: Range<u64>,
    ) -> Result<Self, StorageError> {
        let bytes = map.bytes();
        let corrupt = |offset: u64, reason: String| StorageError::corruption(&path, offset, reason);
        let file_len = bytes.len() as u64;
        let rest = slice(bytes, blob.offset, file_len.saturating_sub(blob.offset)).unwrap_or_default();
        let header = BlobHeader::decode(rest).map_err(|r| corrupt(blob.offset, r.to_owned()))?;
        if header.len != STREAMED_LEN && header.len != blob.len {
            return Err(corrupt(
                blob.offset,
                format!("blob header says {} bytes, the reference {}", header.len, blob.len),
            ));
        }
        let layout =
            Layout::new(blob.offset, header.chunk_size, blob.len).filter(|l| l.end() <= file_len).ok_or_else(|| {
                corrupt(blob.offset, format!("a blob of {} bytes runs past the end of the file", blob.len))
            })?;
        let at = layout.trailer_offset();
        let tail = slice(bytes, at, BLOB_TRAILER_LEN as u64).unwrap_or_default();
        let trailer = Trailer::decode(tail).map_err(|r| corrupt(at, r.to_owned()))?;
        if trailer.len != blob.len || trailer.header_crc != header.crc {
            return Err(corrupt(at, "the trailer does not match the blob's header".into()));
        }
        let whole = (range.start == 0 && range.end == blob.len).then(|| (crc32fast::Hasher::new(), 0));
        let reader = Self { map, path, layout, trailer, pos: range.start, end: range.end, verified: None, whole };
        if layout.chunks() == 0 {
            reader.check_chunks_crc(crc32fast::Hasher::new()).map_err(|e| into_corruption(e, &reader.path))?;
        }
        Ok(reader)
    }

    /// Bytes left in the range.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    fn corruption(&self, offset: u64, reason: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, StorageError::corruption(&self.path, offset, reason))
    }

    fn check_chunks_crc(&self, hasher: crc32fast::Hasher) -> io::Result<()> {
        if hasher.finalize() != self.trailer.chunks_crc {
            return Err(self.corruption(
                self.layout.trailer_offset(),
                "the trailer's checksum of the chunk checksums does not match".into(),
            ));
        }
        Ok(())
    }

    /// Verifies chunk `i` (once) and returns its data.
    fn chunk(&mut self, i: u64) -> io::Result<&[u8]> {
        let offset = self.layout.chunk_offset(i);
        let len = self.layout.chunk_len(i);
        let bytes = self.map.bytes();
        let data = slice(bytes, offset, len)
            .ok_or_else(|| self.corruption(offset, "chunk past the end of the file".into()))?;
        if self.verified != Some(i) {
            let stored = usize::try_from(offset + len).ok().and_then(|at| read_u32_at(bytes, at));
            let Some(stored) = stored else {
                return Err(self.corruption(offset, "chunk past the end of the file".into()));
            };
            if crc32fast::hash(data) != stored {
                return Err(self.corruption(offset, format!("chunk {i} checksum mismatch")));
            }
            if let Some((hasher, next)) = &mut self.whole {
                if *next == i {
                    hasher.update(&stored.to_le_bytes());
                    *next += 1;
                    if *next == self.layout.chunks() {
                        let hasher = hasher.clone();
                        self.check_chunks_crc(hasher)?;
                    }
                }
            }
            self.verified = Some(i);
        }
        let data = slice(self.map.bytes(), offset, len).unwrap_or_default();
        Ok(data)
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.end {
            return Ok(0);
        }
        let chunk_size = self.layout.chunk_size;
        let i = self.pos / chunk_size;
        let within = (self.pos - i * chunk_size) as usize;
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        let data = self.chunk(i)?;
        let avail = data.get(within..).unwrap_or_default();
        let n = want.min(avail.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobReader")
            .field("file", &self.path)
            .field("offset", &self.layout.offset)
            .field("pos", &self.pos)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

fn into_corruption(e: io::Error, path: &std::path::Path) -> StorageError {
    super::store::into_storage_error(e, path)
}
