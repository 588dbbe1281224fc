//! [`BlobStore::check`](super::BlobStore::check): every byte of every blob file read and every checksum
//! verified, damage told apart as corruption (in bytes proven synced) or an incomplete blob.

#![deny(clippy::indexing_slicing)]

use super::format::slice;
use super::scan::{scan, ScannedBlob};
use super::store::Inner;
use super::BlobFileInfo;
use crate::db::Finding;
use crate::format::coding::read_u32_at;

/// What [`BlobStore::check`](super::BlobStore::check) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobCheckReport {
    /// Blob files read.
    pub files: u64,
    /// Blobs found intact: header, every chunk and trailer.
    pub blobs: u64,
    /// Bytes read: the files' lengths (for a file being appended to, what had been appended when it was read).
    pub bytes: u64,
    /// Corruption: damage in bytes that had been synced (an intact blob header written later records that
    /// the file was synced past it), each naming the file and the offset of the damaged header, chunk or
    /// trailer. Also files that could not be read.
    pub problems: Vec<Finding>,
    /// Incomplete blobs: a writer that died before finishing, or an append a power cut cut short or garbled
    /// before it was synced (which the bytes alone cannot tell from damage to the last blobs of a file that
    /// nothing written later vouches for). Not a problem for this layer; the layer above knows whether a
    /// reference points at one. Tails of files still being appended to are not listed.
    pub incomplete: Vec<Finding>,
}

impl BlobCheckReport {
    /// No problems (incomplete blobs are not problems).
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

pub(crate) fn check_store(inner: &Inner, files: &[BlobFileInfo]) -> BlobCheckReport {
    let mut report = BlobCheckReport::default();
    for info in files {
        let path = inner.path(info.number);
        let (map, limit) = match inner.fresh_map(info.number) {
            Ok(m) => m,
            Err(_) if !inner.has_file(info.number) => continue, // removed meanwhile
            Err(e) => {
                report.problems.push(Finding::from_storage(&e, "read blob file"));
                continue;
            }
        };
        let all = map.bytes();
        let bytes = all.get(..limit).unwrap_or(all);
        report.files += 1;
        report.bytes += bytes.len() as u64;
        let scanned = scan(bytes);
        for d in &scanned.damage {
            if d.corrupt {
                report.problems.push(Finding::new(Some(&path), Some(d.offset), format!("corruption: {}", d.reason)));
            } else if !info.active {
                report.incomplete.push(Finding::new(Some(&path), Some(d.offset), format!("incomplete: {}", d.reason)));
            }
        }
        for blob in &scanned.blobs {
            match verify_chunks(bytes, blob) {
                Ok(()) => report.blobs += 1,
                Err((offset, reason)) if scanned.proven(offset) => {
                    report.problems.push(Finding::new(Some(&path), Some(offset), format!("corruption: {reason}")));
                }
                Err((offset, reason)) => {
                    let message =
                        format!("incomplete (damaged before it was synced, or nothing vouches for it): {reason}");
                    report.incomplete.push(Finding::new(Some(&path), Some(offset), message));
                }
            }
        }
    }
    report
}

/// Verifies every chunk of `blob` and the trailer's checksum of the chunk checksums; the offset and reason of
/// the first mismatch.
pub(crate) fn verify_chunks(bytes: &[u8], blob: &ScannedBlob) -> Result<(), (u64, String)> {
    let layout = &blob.layout;
    let mut all = crc32fast::Hasher::new();
    for i in 0..layout.chunks() {
        let offset = layout.chunk_offset(i);
        let len = layout.chunk_len(i);
        let data = slice(bytes, offset, len);
        let stored = usize::try_from(offset + len).ok().and_then(|at| read_u32_at(bytes, at));
        let (Some(data), Some(stored)) = (data, stored) else {
            return Err((offset, format!("chunk {i} of the blob at {} past the end of the file", layout.offset)));
        };
        if crc32fast::hash(data) != stored {
            return Err((offset, format!("chunk {i} of the blob at {}: checksum mismatch", layout.offset)));
        }
        all.update(&stored.to_le_bytes());
    }
    if all.finalize() != blob.trailer.chunks_crc {
        let reason = format!("the trailer of the blob at {}: checksum of the chunk checksums mismatch", layout.offset);
        return Err((layout.trailer_offset(), reason));
    }
    Ok(())
}
