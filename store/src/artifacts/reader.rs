//! Reading an object: its segments' blobs in order, over a byte range, every chunk checked before its
//! bytes are handed out.

use std::io::Read;

use cairn_engine::{BlobPin, BlobReader, BlobStore};

use super::model::Segment;

/// The bytes of an object (or of a range of it), streamed from its blobs. A corrupt chunk is an
/// `io::Error` wrapping the engine's `StorageError::Corruption`, naming the blob file and offset; no bytes
/// of it are returned.
pub struct ObjectReader {
    blobs: BlobStore,
    /// What is left to read: a segment and the range within it, in order.
    pending: std::collections::VecDeque<(Segment, u64, u64)>,
    current: Option<BlobReader>,
    len: u64,
    /// The files read stay on disk until the reader is dropped, even if garbage collection moves the
    /// object's bytes meanwhile.
    _pins: Vec<BlobPin>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader").field("len", &self.len).field("segments", &self.pending.len()).finish()
    }
}

impl ObjectReader {
    /// A reader of bytes `start..end` of the concatenation of `segments`, with their files pinned. `None` if
    /// a file is gone (garbage collection moved the bytes after the record was read: read it again).
    pub(crate) fn new(blobs: &BlobStore, segments: &[Segment], start: u64, end: u64) -> Option<ObjectReader> {
        let mut pending = std::collections::VecDeque::new();
        let mut at = 0u64;
        for s in segments {
            let (lo, hi) = (at, at + s.2);
            at = hi;
            if hi <= start || lo >= end {
                continue;
            }
            pending.push_back((*s, start.max(lo) - lo, end.min(hi) - lo));
        }
        let mut files: Vec<u64> = pending.iter().map(|(s, _, _)| s.0).collect();
        files.sort_unstable();
        files.dedup();
        let pins: Vec<BlobPin> = files.iter().map(|f| blobs.pin(*f)).collect();
        if !files.iter().all(|f| blobs.has_file(*f)) {
            return None;
        }
        Some(ObjectReader { blobs: blobs.clone(), pending, current: None, len: end.saturating_sub(start), _pins: pins })
    }

    /// The number of bytes this reader yields in all.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it yields no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(current) = self.current.as_mut() {
                let n = current.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                self.current = None;
            }
            let Some((segment, from, to)) = self.pending.pop_front() else { return Ok(0) };
            let reader = self.blobs.read(&segment.blob(), from..to).map_err(std::io::Error::other)?;
            self.current = Some(reader);
        }
    }
}
