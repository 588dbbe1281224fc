//! Walking a blob file's structure: the file header, then each blob's header and trailer (not its chunks),
//! telling a blob whose writer died or whose bytes a power cut damaged before they were synced
//! (*incomplete*) from damage to bytes that had been synced (*corrupt*). See `docs/format/blob.md`,
//! "Reading rules".

#![deny(clippy::indexing_slicing)]

use super::format::{
    check_file_header, slice, BlobHeader, Layout, Trailer, BLOB_FILE_HEADER_LEN, BLOB_HEADER_LEN, BLOB_TRAILER_LEN,
    HEADER_TAG, STREAMED_LEN,
};

/// A blob whose header and trailer are intact (its chunks are not checked here).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScannedBlob {
    pub header: BlobHeader,
    pub layout: Layout,
    pub trailer: Trailer,
}

/// Bytes from `offset` that are not an intact blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub offset: u64,
    pub reason: String,
    /// Proven to have been synced (an intact blob header's `synced_through` lies past it): corruption.
    /// Otherwise the bytes may be an append a crash cut short or garbled: an incomplete blob.
    pub corrupt: bool,
}

/// What [`scan`] found in a file.
#[derive(Debug, Default)]
pub(crate) struct FileScan {
    pub blobs: Vec<ScannedBlob>,
    pub damage: Vec<Damage>,
    /// The largest `synced_through` of an intact blob header: the file's bytes before it had been synced.
    pub synced_through: u64,
}

impl FileScan {
    /// Whether bytes at `offset` are proven to have been synced.
    pub fn proven(&self, offset: u64) -> bool {
        offset < self.synced_through
    }
}

/// Walks the structure of a blob file whose bytes are `bytes`.
pub(crate) fn scan(bytes: &[u8]) -> FileScan {
    let mut out = FileScan::default();
    let len = bytes.len() as u64;
    if len <= BLOB_FILE_HEADER_LEN as u64 {
        // The header is synced before anything else is appended; a file this short may be one whose header
        // never reached the disk (its name did, through another file's directory sync).
        if len < BLOB_FILE_HEADER_LEN as u64 || check_file_header(bytes).is_err() {
            let reason = if len == 0 { "empty file" } else { "file header cut short or never synced" };
            out.damage.push(Damage { offset: 0, reason: reason.into(), corrupt: false });
        }
        return out;
    }
    if let Err((offset, reason)) = check_file_header(bytes) {
        out.damage.push(Damage { offset, reason, corrupt: true });
        return out;
    }
    let mut at = BLOB_FILE_HEADER_LEN as u64;
    while at < len {
        match blob_at(bytes, at) {
            Ok(blob) => {
                out.synced_through = out.synced_through.max(blob.header.synced_through);
                at = blob.layout.end();
                out.blobs.push(blob);
            }
            Err((reason, resume)) => {
                out.damage.push(Damage { offset: at, reason, corrupt: false });
                at = resume.unwrap_or_else(|| next_header(bytes, at + 1));
            }
        }
    }
    let proven = out.synced_through;
    for d in &mut out.damage {
        d.corrupt = d.offset < proven;
    }
    out
}

/// The intact blob whose header is at `at`, or why there is none and where to go on: at a known offset
/// (the header is intact, so the blob's extent is known) or, if `None`, at the next intact header.
pub(crate) fn blob_at(bytes: &[u8], at: u64) -> Result<ScannedBlob, (String, Option<u64>)> {
    let file_len = bytes.len() as u64;
    let rest = slice(bytes, at, file_len - at.min(file_len)).unwrap_or_default();
    let header = BlobHeader::decode(rest).map_err(|r| (r.to_owned(), None))?;
    if header.synced_through > at {
        return Err(("blob header claims bytes after it were synced".into(), None));
    }
    let eof = Some(file_len);
    let len = if header.len == STREAMED_LEN {
        // A streamed blob is the last in its file: its trailer is the file's last bytes.
        let min_end = at + (BLOB_HEADER_LEN + BLOB_TRAILER_LEN) as u64;
        if file_len < min_end {
            return Err(("streamed blob without its trailer: incomplete".into(), eof));
        }
        let tail = slice(bytes, file_len - BLOB_TRAILER_LEN as u64, BLOB_TRAILER_LEN as u64).unwrap_or_default();
        match Trailer::decode(tail) {
            Ok(t) if t.header_crc == header.crc => t.len,
            _ => return Err(("streamed blob without its trailer at the end of the file: incomplete".into(), eof)),
        }
    } else {
        header.len
    };
    let layout = Layout::new(at, header.chunk_size, len).ok_or(("blob length overflows".to_owned(), eof))?;
    if layout.end() > file_len {
        return Err((format!("blob of {len} bytes runs past the end of the file: incomplete"), eof));
    }
    if header.len == STREAMED_LEN && layout.end() != file_len {
        return Err(("streamed blob's length does not reach its trailer".into(), eof));
    }
    let resume = Some(layout.end());
    let tail = slice(bytes, layout.trailer_offset(), BLOB_TRAILER_LEN as u64).unwrap_or_default();
    let trailer =
        Trailer::decode(tail).map_err(|r| (format!("{r} (trailer at {})", layout.trailer_offset()), resume))?;
    if trailer.len != len || trailer.header_crc != header.crc {
        return Err((format!("trailer at {} belongs to another blob", layout.trailer_offset()), resume));
    }
    Ok(ScannedBlob { header, layout, trailer })
}

/// The first offset at or after `from` holding an intact blob header, or the end of the file.
fn next_header(bytes: &[u8], from: u64) -> u64 {
    let len = bytes.len() as u64;
    let mut at = from;
    while at + BLOB_HEADER_LEN as u64 <= len {
        let window = slice(bytes, at, len - at).unwrap_or_default();
        let Some(pos) = window.windows(HEADER_TAG.len()).position(|w| w == HEADER_TAG) else {
            return len;
        };
        let candidate = at + pos as u64;
        let rest = slice(bytes, candidate, len - candidate).unwrap_or_default();
        if BlobHeader::decode(rest).is_ok_and(|h| h.synced_through <= candidate) {
            return candidate;
        }
        at = candidate + 1;
    }
    len
}
