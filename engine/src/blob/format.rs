//! The blob file's on-disk constants and the codecs of its three fixed-size structures: the file header,
//! the blob header and the blob trailer, plus [`Layout`], where each chunk of a blob lies. Every constant is
//! quoted in `docs/format/blob.md`; change one and the spec (and its version) must change with it.

#![deny(clippy::indexing_slicing)]

use crate::format::coding::{put_u32, put_u64, read_u32_at, read_u64_at};

/// Magic number at the start of every blob file: ASCII `CAIRNBLB`.
pub const BLOB_MAGIC: [u8; 8] = *b"CAIRNBLB";
/// Version of the blob file format written by this build.
pub const BLOB_FORMAT_VERSION: u32 = 1;
/// Size of the header that starts a blob file: magic (8), version (4), reserved (4).
pub const BLOB_FILE_HEADER_LEN: usize = 16;
/// Size of a blob header: tag (4), chunk size (4), length (8), synced-through (8), crc (4).
pub const BLOB_HEADER_LEN: usize = 28;
/// Size of a blob trailer: tag (4), length (8), chunks crc (4), header crc (4), crc (4).
pub const BLOB_TRAILER_LEN: usize = 24;
/// Size of the CRC after each chunk.
pub const CHUNK_CRC_LEN: usize = 4;
/// The blob header's `len` of a blob streamed into a file of its own: its length is in its trailer, which
/// ends the file.
pub const STREAMED_LEN: u64 = u64::MAX;
/// The largest chunk size written or read.
pub const MAX_BLOB_CHUNK_SIZE: u32 = 64 << 20;
/// First 4 bytes of a blob header: ASCII `BLOB`.
pub(crate) const HEADER_TAG: [u8; 4] = *b"BLOB";
/// First 4 bytes of a blob trailer: ASCII `BEND`.
pub(crate) const TRAILER_TAG: [u8; 4] = *b"BEND";

/// The 16 bytes that start every blob file.
pub(crate) fn file_header() -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOB_FILE_HEADER_LEN);
    out.extend_from_slice(&BLOB_MAGIC);
    put_u32(&mut out, BLOB_FORMAT_VERSION);
    put_u32(&mut out, 0);
    out
}

/// Why a file header is not valid; `Ok` if it is. The offset is where the bad field starts.
pub(crate) fn check_file_header(bytes: &[u8]) -> Result<(), (u64, String)> {
    if bytes.get(..8) != Some(&BLOB_MAGIC[..]) {
        return Err((0, "bad magic: not a blob file".into()));
    }
    match read_u32_at(bytes, 8) {
        Some(0) => Err((8, "format version 0".into())),
        Some(v) if v > BLOB_FORMAT_VERSION => {
            Err((8, format!("format version {v}; this build reads up to {BLOB_FORMAT_VERSION}")))
        }
        Some(_) => Ok(()),
        None => Err((8, "file header cut short".into())),
    }
}

/// A decoded blob header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobHeader {
    /// Bytes per chunk, 1 ..= [`MAX_BLOB_CHUNK_SIZE`].
    pub chunk_size: u32,
    /// The blob's length, or [`STREAMED_LEN`].
    pub len: u64,
    /// How many bytes of the file had been synced when this header was appended.
    pub synced_through: u64,
    /// The header's CRC (also copied into the trailer).
    pub crc: u32,
}

impl BlobHeader {
    /// A header with its CRC computed.
    pub fn new(chunk_size: u32, len: u64, synced_through: u64) -> Self {
        let mut h = Self { chunk_size, len, synced_through, crc: 0 };
        h.crc = crc32fast::hash(h.covered().as_slice());
        h
    }

    fn covered(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BLOB_HEADER_LEN);
        out.extend_from_slice(&HEADER_TAG);
        put_u32(&mut out, self.chunk_size);
        put_u64(&mut out, self.len);
        put_u64(&mut out, self.synced_through);
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.covered();
        put_u32(&mut out, self.crc);
        out
    }

    /// Decodes the header at the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() < BLOB_HEADER_LEN {
            return Err("blob header cut short");
        }
        if bytes.get(..4) != Some(&HEADER_TAG[..]) {
            return Err("no blob header tag");
        }
        let crc = read_u32_at(bytes, 24).ok_or("blob header cut short")?;
        if crc32fast::hash(bytes.get(..24).ok_or("blob header cut short")?) != crc {
            return Err("blob header checksum mismatch");
        }
        let chunk_size = read_u32_at(bytes, 4).ok_or("blob header cut short")?;
        let len = read_u64_at(bytes, 8).ok_or("blob header cut short")?;
        let synced_through = read_u64_at(bytes, 16).ok_or("blob header cut short")?;
        if chunk_size == 0 || chunk_size > MAX_BLOB_CHUNK_SIZE {
            return Err("blob header has a chunk size of 0 or above the maximum");
        }
        Ok(Self { chunk_size, len, synced_through, crc })
    }
}

/// A decoded blob trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trailer {
    /// The blob's length.
    pub len: u64,
    /// CRC-32 of the concatenated chunk CRCs (4 bytes LE each), in order.
    pub chunks_crc: u32,
    /// A copy of the blob header's CRC.
    pub header_crc: u32,
}

impl Trailer {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BLOB_TRAILER_LEN);
        out.extend_from_slice(&TRAILER_TAG);
        put_u64(&mut out, self.len);
        put_u32(&mut out, self.chunks_crc);
        put_u32(&mut out, self.header_crc);
        let crc = crc32fast::hash(&out);
        put_u32(&mut out, crc);
        out
    }

    /// Decodes the trailer at the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() < BLOB_TRAILER_LEN {
            return Err("blob trailer cut short");
        }
        if bytes.get(..4) != Some(&TRAILER_TAG[..]) {
            return Err("no blob trailer tag");
        }
        let crc = read_u32_at(bytes, 20).ok_or("blob trailer cut short")?;
        if crc32fast::hash(bytes.get(..20).ok_or("blob trailer cut short")?) != crc {
            return Err("blob trailer checksum mismatch");
        }
        Ok(Self {
            len: read_u64_at(bytes, 4).ok_or("blob trailer cut short")?,
            chunks_crc: read_u32_at(bytes, 12).ok_or("blob trailer cut short")?,
            header_crc: read_u32_at(bytes, 16).ok_or("blob trailer cut short")?,
        })
    }
}

/// Where the parts of a blob of `len` bytes lie when its header is at `offset`. Construction checks that
/// the whole blob fits in a `u64`, so no method overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub offset: u64,
    pub chunk_size: u64,
    pub len: u64,
    chunks: u64,
    end: u64,
}

impl Layout {
    pub fn new(offset: u64, chunk_size: u32, len: u64) -> Option<Self> {
        let chunk_size = u64::from(chunk_size);
        let chunks = len.checked_add(chunk_size - 1)?.checked_div(chunk_size)?;
        let end = offset
            .checked_add(BLOB_HEADER_LEN as u64)?
            .checked_add(len)?
            .checked_add(chunks.checked_mul(CHUNK_CRC_LEN as u64)?)?
            .checked_add(BLOB_TRAILER_LEN as u64)?;
        Some(Self { offset, chunk_size, len, chunks, end })
    }

    /// Number of chunks: `ceil(len / chunk_size)`.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// File offset of chunk `i`'s first byte.
    pub fn chunk_offset(&self, i: u64) -> u64 {
        self.offset + BLOB_HEADER_LEN as u64 + i * (self.chunk_size + CHUNK_CRC_LEN as u64)
    }

    /// Length of chunk `i`'s data (the last may be short).
    pub fn chunk_len(&self, i: u64) -> u64 {
        self.chunk_size.min(self.len - i * self.chunk_size)
    }

    /// File offset of the trailer.
    pub fn trailer_offset(&self) -> u64 {
        self.end - BLOB_TRAILER_LEN as u64
    }

    /// File offset just past the trailer.
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// `bytes[offset..offset + len]`, if the file is long enough.
pub(crate) fn slice(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    bytes.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_trailer_roundtrip() {
        let h = BlobHeader::new(4096, 10_000, 16);
        let bytes = h.encode();
        assert_eq!(bytes.len(), BLOB_HEADER_LEN);
        assert_eq!(BlobHeader::decode(&bytes), Ok(h));
        let t = Trailer { len: 10_000, chunks_crc: 7, header_crc: h.crc };
        assert_eq!(Trailer::decode(&t.encode()), Ok(t));
        for i in 0..BLOB_HEADER_LEN {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(BlobHeader::decode(&b).is_err(), "flip in byte {i}");
        }
        assert!(BlobHeader::decode(&BlobHeader::new(0, 1, 16).encode()).is_err(), "zero chunk size");
        assert!(BlobHeader::decode(&bytes[..27]).is_err());
    }

    #[test]
    fn layout_counts_chunks_and_refuses_overflow() {
        let l = Layout::new(16, 4, 9).unwrap();
        assert_eq!(l.chunks(), 3);
        assert_eq!((l.chunk_offset(0), l.chunk_offset(2), l.chunk_len(2)), (44, 60, 1));
        assert_eq!((l.trailer_offset(), l.end()), (65, 89));
        assert_eq!(Layout::new(16, 4, 0).unwrap().end(), 16 + 28 + 24);
        assert!(Layout::new(16, 1, u64::MAX - 10).is_none());
        assert!(Layout::new(u64::MAX - 40, 4, 0).is_none());
    }
}
