//! Block handles and the table footer.
//!
//! ```text
//! footer (56 bytes) = index_offset u64 | index_size u64 | filter_offset u64 | filter_size u64
//!                   | entry_count u64 | format_version u32 | crc32 u32 (of the 44 bytes before it)
//!                   | magic "CAIRNSST"
//! ```

#![deny(clippy::indexing_slicing)]

use crate::format::coding::{put_u32, put_u64, read_u32_at, read_u64_at, Cursor, DecodeError};
use crate::format::{TABLE_FORMAT_VERSION, TABLE_MAGIC};

use super::FOOTER_LEN;

/// Where a block sits in its file: offset of its first byte and length of its payload (not counting the
/// 5-byte trailer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockHandle {
    pub offset: u64,
    pub size: u64,
}

impl BlockHandle {
    pub const ENCODED_LEN: usize = 16;

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.offset);
        put_u64(out, self.size);
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(bytes);
        let h = Self { offset: c.u64("handle offset")?, size: c.u64("handle size")? };
        if !c.is_empty() {
            return Err(DecodeError::new(c.pos(), "bytes after a block handle"));
        }
        Ok(h)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub index: BlockHandle,
    pub filter: BlockHandle,
    pub entry_count: u64,
    pub version: u32,
}

impl Footer {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FOOTER_LEN);
        self.index.encode(&mut out);
        self.filter.encode(&mut out);
        put_u64(&mut out, self.entry_count);
        put_u32(&mut out, self.version);
        let crc = crc32fast::hash(&out);
        put_u32(&mut out, crc);
        out.extend_from_slice(&TABLE_MAGIC);
        out
    }

    /// Decodes the last [`FOOTER_LEN`] bytes of a table; offsets in errors are relative to the footer.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != FOOTER_LEN {
            return Err(DecodeError::new(0, "footer has the wrong length"));
        }
        if bytes.get(48..56) != Some(&TABLE_MAGIC[..]) {
            return Err(DecodeError::new(48, "bad magic number"));
        }
        let crc = read_u32_at(bytes, 44).ok_or(DecodeError::new(44, "footer checksum"))?;
        if crc32fast::hash(bytes.get(..44).unwrap_or_default()) != crc {
            return Err(DecodeError::new(0, "footer checksum mismatch"));
        }
        let version = read_u32_at(bytes, 40).ok_or(DecodeError::new(40, "format version"))?;
        if version == 0 || version > TABLE_FORMAT_VERSION {
            return Err(DecodeError::new(40, "unsupported table format version"));
        }
        let u64_at = |o: usize| read_u64_at(bytes, o).ok_or(DecodeError::new(o, "footer field"));
        Ok(Self {
            index: BlockHandle { offset: u64_at(0)?, size: u64_at(8)? },
            filter: BlockHandle { offset: u64_at(16)?, size: u64_at(24)? },
            entry_count: u64_at(32)?,
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_every_bit_flip_detected() {
        let f = Footer {
            index: BlockHandle { offset: 100, size: 20 },
            filter: BlockHandle { offset: 80, size: 15 },
            entry_count: 7,
            version: TABLE_FORMAT_VERSION,
        };
        let bytes = f.encode();
        assert_eq!(bytes.len(), FOOTER_LEN);
        assert_eq!(Footer::decode(&bytes).unwrap(), f);
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(Footer::decode(&b).is_err(), "bit {i}");
        }
    }
}
