//! [`BlobWriter`]: a new blob, streamed in through [`std::io::Write`].
//!
//! A writer keeps its blob in memory, already framed as on disk (a header placeholder, each full chunk
//! followed by its CRC, then the current chunk's bytes), until the blob grows past
//! [`BlobOptions::small_blob_limit`](super::BlobOptions::small_blob_limit). A blob that finishes within it
//! is appended whole to the shared file ([`super::shared`]). One that grows past it moves to a file of its
//! own: what was buffered is written there, and from then on each chunk is appended as it fills, so the
//! writer holds at most one chunk.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::format::{
    BlobHeader, Trailer, BLOB_FILE_HEADER_LEN, BLOB_HEADER_LEN, BLOB_TRAILER_LEN, CHUNK_CRC_LEN, STREAMED_LEN,
};
use super::store::{BlobPin, Inner};
use super::BlobRef;
use crate::error::StorageError;
use crate::io::WritableFile;

/// A blob being written. Write its bytes with [`std::io::Write`], then call [`finish`](Self::finish).
/// Dropped without `finish`, the bytes it wrote stay behind as an incomplete blob (in a file of its own, if
/// it had grown past [`BlobOptions::small_blob_limit`](super::BlobOptions::small_blob_limit)) that garbage
/// collection reclaims with its file.
pub struct BlobWriter {
    store: Arc<Inner>,
    chunk_size: usize,
    /// In memory: the blob framed as on disk so far (header placeholder, full chunks with their CRCs, the
    /// current chunk). In a file of its own: the current chunk's bytes only.
    buf: Vec<u8>,
    /// Bytes of the current chunk (the end of `buf`).
    chunk_fill: usize,
    chunk_crc: crc32fast::Hasher,
    chunks_crc: crc32fast::Hasher,
    written: u64,
    own: Option<OwnFile>,
    failed: Option<String>,
}

/// The file of a writer's own, and what the writer has appended to it.
struct OwnFile {
    store: Arc<Inner>,
    number: u64,
    path: PathBuf,
    file: Box<dyn WritableFile>,
    len: Arc<AtomicU64>,
    header_crc: u32,
    pin: Option<BlobPin>,
    /// Bytes appended since the operating system was last asked to start writing them.
    unhinted: usize,
}

/// A blob in a file of its own asks the operating system to start writing its bytes every this many
/// bytes ([`WritableFile::start_writeback`](crate::io::WritableFile::start_writeback)), so that the sync
/// that ends it waits for the last few MiB rather than the whole blob.
const WRITEBACK_EVERY: usize = 8 << 20;

impl OwnFile {
    fn append(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.file.append(bytes).map_err(|e| StorageError::io(&self.path, e))?;
        self.len.fetch_add(bytes.len() as u64, Ordering::AcqRel);
        self.unhinted += bytes.len();
        if self.unhinted >= WRITEBACK_EVERY {
            self.unhinted = 0;
            // Only a hint: a file system that refuses it loses nothing, and the sync reports real errors.
            let _ = self.file.start_writeback();
        }
        Ok(())
    }
}

impl Drop for OwnFile {
    fn drop(&mut self) {
        self.store.deactivate(self.number);
    }
}

impl BlobWriter {
    pub(crate) fn new(store: Arc<Inner>) -> Self {
        let chunk_size = store.options.chunk_size as usize;
        Self {
            store,
            chunk_size,
            buf: vec![0; BLOB_HEADER_LEN],
            chunk_fill: 0,
            chunk_crc: crc32fast::Hasher::new(),
            chunks_crc: crc32fast::Hasher::new(),
            written: 0,
            own: None,
            failed: None,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes of memory the writer's buffer holds (its capacity); never more than
    /// [`BlobOptions::writer_buffer_bound`](super::BlobOptions::writer_buffer_bound), and at most one chunk
    /// (plus its CRC) once the blob has moved to a file of its own.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether the blob has grown past the small-blob limit and is streamed to a file of its own.
    pub fn is_streaming(&self) -> bool {
        self.own.is_some()
    }

    /// Ends the blob: writes its last chunk and trailer and, if [`BlobOptions::sync`](super::BlobOptions::sync)
    /// is on, syncs it (writers finishing together share one sync). Returns the blob's reference and a pin
    /// on its file, so the file cannot be removed before the caller has recorded the reference.
    pub fn finish(mut self) -> Result<(BlobRef, BlobPin), StorageError> {
        if let Some(cause) = &self.failed {
            return Err(StorageError::io(
                &self.store.dir,
                io::Error::other(format!("the blob writer failed: {cause}")),
            ));
        }
        if self.chunk_fill > 0 {
            self.close_chunk()?;
        }
        let chunks_crc = self.chunks_crc.clone().finalize();
        let chunk_size = self.store.options.chunk_size;
        match self.own.take() {
            None => {
                self.reserve(BLOB_TRAILER_LEN);
                self.buf.resize(self.buf.len() + BLOB_TRAILER_LEN, 0);
                self.store.append_small(&mut self.buf, chunk_size, self.written, chunks_crc)
            }
            Some(mut own) => {
                let trailer = Trailer { len: self.written, chunks_crc, header_crc: own.header_crc };
                own.append(&trailer.encode())?;
                if self.store.options.sync {
                    own.file.sync().map_err(|e| StorageError::io(&own.path, e))?;
                }
                let blob = BlobRef { file: own.number, offset: BLOB_FILE_HEADER_LEN as u64, len: self.written };
                let pin = own.pin.take().unwrap_or_else(|| self.store.pin(own.number));
                Ok((blob, pin))
            }
        }
    }

    /// Grows the in-memory buffer for `extra` more bytes, never past the bound.
    fn reserve(&mut self, extra: usize) {
        let needed = self.buf.len() + extra;
        if needed > self.buf.capacity() {
            let bound = self.store.options.writer_buffer_bound().max(needed);
            let target = (self.buf.capacity() * 2).max(needed).min(bound);
            self.buf.reserve_exact(target - self.buf.len());
        }
    }

    /// Ends the current chunk: its CRC follows its bytes; in a file of its own, both are appended.
    fn close_chunk(&mut self) -> Result<(), StorageError> {
        let crc = std::mem::take(&mut self.chunk_crc).finalize().to_le_bytes();
        self.chunks_crc.update(&crc);
        self.reserve(CHUNK_CRC_LEN);
        self.buf.extend_from_slice(&crc);
        self.chunk_fill = 0;
        if let Some(own) = &mut self.own {
            own.append(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Moves the blob to a file of its own: the file header (synced, with the file's name), a streamed blob
    /// header, then every full chunk buffered so far; the current chunk stays in memory.
    fn spill(&mut self) -> Result<(), StorageError> {
        let super::store::NewFile { number, path, file, len } = self.store.new_file()?;
        let pin = self.store.pin(number);
        let header = BlobHeader::new(self.store.options.chunk_size, STREAMED_LEN, BLOB_FILE_HEADER_LEN as u64);
        let mut own = OwnFile {
            store: self.store.clone(),
            number,
            path,
            file,
            len,
            header_crc: header.crc,
            pin: Some(pin),
            unhinted: 0,
        };
        let full = self.buf.len() - self.chunk_fill;
        let framed = self.buf.get(BLOB_HEADER_LEN..full).unwrap_or_default();
        let mut first = Vec::with_capacity(BLOB_HEADER_LEN + self.chunk_size.min(framed.len()));
        first.extend_from_slice(&header.encode());
        own.append(&first)?;
        own.append(framed)?;
        let mut chunk = Vec::with_capacity(self.chunk_size + CHUNK_CRC_LEN);
        chunk.extend_from_slice(self.buf.get(full..).unwrap_or_default());
        self.buf = chunk;
        self.own = Some(own);
        Ok(())
    }

    fn write_inner(&mut self, data: &[u8]) -> Result<(), StorageError> {
        let limit = self.store.options.small_blob_limit();
        let mut rest = data;
        while !rest.is_empty() {
            if self.own.is_none() && self.written + rest.len() as u64 > limit {
                self.spill()?;
            }
            let n = (self.chunk_size - self.chunk_fill).min(rest.len());
            let (now, later) = rest.split_at(n);
            if self.own.is_none() {
                self.reserve(n);
            }
            self.buf.extend_from_slice(now);
            self.chunk_crc.update(now);
            self.chunk_fill += n;
            self.written += n as u64;
            rest = later;
            if self.chunk_fill == self.chunk_size {
                self.close_chunk()?;
            }
        }
        Ok(())
    }
}

impl Write for BlobWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(cause) = &self.failed {
            return Err(io::Error::other(format!("the blob writer failed: {cause}")));
        }
        match self.write_inner(data) {
            Ok(()) => Ok(data.len()),
            Err(e) => {
                self.failed = Some(e.to_string());
                Err(io::Error::other(e))
            }
        }
    }

    /// Does nothing: bytes reach the file as chunks fill, and are made durable by [`BlobWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobWriter")
            .field("written", &self.written)
            .field("file", &self.own.as_ref().map(|o| o.number))
            .finish_non_exhaustive()
    }
}
