//! Block handles and the table footer.
//!
//! ```text
//! footer, version 1 (56 bytes) = index_offset u64 | index_size u64 | filter_offset u64 | filter_size u64
//!                              | entry_count u64 | format_version u32 | crc32 u32 (of the bytes before it)
//!                              | magic "CAIRNSST"
//! footer, version 2 (72 bytes) = dictionary_offset u64 | dictionary_size u64 | (the version 1 fields)
//! ```
//!
//! The version sits 16 bytes before the end in both, so a reader finds it before it knows the footer's
//! length. A table is written at version 2 only if it has a compression dictionary.

#![deny(clippy::indexing_slicing)]

use crate::format::coding::{put_u32, put_u64, read_u32_at, read_u64_at, Cursor, DecodeError};
use crate::format::{TABLE_FORMAT_VERSION, TABLE_MAGIC};

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

/// Length of a table's footer in format version 1, and in version 2 (which adds the dictionary's handle).
pub(crate) const FOOTER_LEN_V1: usize = 56;
pub(crate) const FOOTER_LEN_V2: usize = 72;
/// Where the format version sits, counted back from the end of the file.
const VERSION_FROM_END: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub index: BlockHandle,
    pub filter: BlockHandle,
    /// The zstd dictionary the table's blocks were compressed with, if any.
    pub dictionary: Option<BlockHandle>,
    pub entry_count: u64,
}

impl Footer {
    /// The format version this footer is written at.
    pub fn version(&self) -> u32 {
        if self.dictionary.is_some() {
            TABLE_FORMAT_VERSION
        } else {
            1
        }
    }

    pub fn len(&self) -> usize {
        if self.dictionary.is_some() {
            FOOTER_LEN_V2
        } else {
            FOOTER_LEN_V1
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        if let Some(d) = self.dictionary {
            d.encode(&mut out);
        }
        self.index.encode(&mut out);
        self.filter.encode(&mut out);
        put_u64(&mut out, self.entry_count);
        put_u32(&mut out, self.version());
        let crc = crc32fast::hash(&out);
        put_u32(&mut out, crc);
        out.extend_from_slice(&TABLE_MAGIC);
        out
    }

    /// Decodes the footer at the end of `file` (it starts [`Footer::len`] bytes before the end). Offsets in
    /// errors are relative to the file.
    pub fn decode_end(file: &[u8]) -> Result<Self, DecodeError> {
        let len = file.len();
        let magic_at = len.checked_sub(TABLE_MAGIC.len()).ok_or(DecodeError::new(0, "file shorter than a footer"))?;
        if file.get(magic_at..) != Some(&TABLE_MAGIC[..]) {
            return Err(DecodeError::new(magic_at, "bad magic number"));
        }
        let short = DecodeError::new(0, "file shorter than a footer");
        let version_at = len.checked_sub(VERSION_FROM_END).ok_or(short.clone())?;
        let version = read_u32_at(file, version_at).ok_or(short)?;
        let footer_len = match version {
            1 => FOOTER_LEN_V1,
            TABLE_FORMAT_VERSION => FOOTER_LEN_V2,
            _ => return Err(DecodeError::new(version_at, "unsupported table format version")),
        };
        let at = len.checked_sub(footer_len).ok_or(DecodeError::new(0, "file shorter than its footer"))?;
        let bytes = file.get(at..).unwrap_or_default();
        let crc_at = footer_len - 12;
        let crc = read_u32_at(bytes, crc_at).ok_or(DecodeError::new(at + crc_at, "footer checksum"))?;
        if crc32fast::hash(bytes.get(..crc_at).unwrap_or_default()) != crc {
            return Err(DecodeError::new(at, "footer checksum mismatch"));
        }
        let u64_at = |o: usize| read_u64_at(bytes, o).ok_or(DecodeError::new(at + o, "footer field"));
        let handle_at = |o: usize| Ok::<_, DecodeError>(BlockHandle { offset: u64_at(o)?, size: u64_at(o + 8)? });
        let (dictionary, rest) = if footer_len == FOOTER_LEN_V2 { (Some(handle_at(0)?), 16) } else { (None, 0) };
        Ok(Self { dictionary, index: handle_at(rest)?, filter: handle_at(rest + 16)?, entry_count: u64_at(rest + 32)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_roundtrip_and_every_bit_flip_is_detected() {
        let handle = |offset, size| BlockHandle { offset, size };
        for dictionary in [None, Some(handle(0, 40))] {
            let f = Footer { index: handle(100, 20), filter: handle(80, 15), dictionary, entry_count: 7 };
            let bytes = f.encode();
            assert_eq!(bytes.len(), f.len());
            // A footer is found at the end of whatever precedes it.
            let mut file = vec![0xAB; 33];
            file.extend_from_slice(&bytes);
            let decoded = Footer::decode_end(&file).unwrap();
            assert_eq!(decoded, f);
            assert_eq!(file.len() - decoded.len(), 33, "the footer starts after what precedes it");
            for i in 0..bytes.len() * 8 {
                let mut b = file.clone();
                b[33 + i / 8] ^= 1 << (i % 8);
                assert!(Footer::decode_end(&b).is_err(), "version {}, bit {i}", f.version());
            }
        }
        assert!(Footer::decode_end(b"CAIRNSST").is_err());
    }
}
