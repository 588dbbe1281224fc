#![deny(clippy::indexing_slicing)]

use std::path::Path;

use crate::error::StorageError;
use crate::format::coding::{read_u32_at, Cursor};
use crate::format::{LOG_FILE_HEADER_LEN, LOG_RECORD_HEADER_LEN};

/// The records of a log file, and where its valid prefix ends.
#[derive(Debug)]
pub(crate) struct LogContents<'a> {
    /// `(offset of the record header, payload)` for every intact record, in order.
    pub records: Vec<(u64, &'a [u8])>,
    /// Length of the valid prefix: header plus intact records.
    pub valid_len: u64,
    /// Set when bytes past `valid_len` were discarded as a torn tail: why.
    pub torn_tail: Option<String>,
}

/// Checks one record at `offset`; returns its payload and total length.
fn record_at(bytes: &[u8], offset: usize) -> Result<(&[u8], usize), &'static str> {
    let rest = bytes.get(offset..).unwrap_or_default();
    if rest.len() < LOG_RECORD_HEADER_LEN {
        return Err("record header cut short");
    }
    let crc = read_u32_at(rest, 0).ok_or("record header cut short")?;
    let len = read_u32_at(rest, 4).ok_or("record header cut short")? as usize;
    let body = rest.get(4..LOG_RECORD_HEADER_LEN + len).ok_or("record runs past the end of the file")?;
    if crc32fast::hash(body) != crc {
        return Err("record checksum mismatch");
    }
    let payload = body.get(4..).unwrap_or_default();
    Ok((payload, LOG_RECORD_HEADER_LEN + len))
}

/// Whether an intact record starts anywhere in `bytes` after `offset`.
///
/// Used to tell a torn tail from damage in the middle: after a torn tail nothing intact follows. A random
/// position passes the CRC with probability 2^-32, and most positions fail the length check before any
/// CRC is computed.
fn intact_record_after(bytes: &[u8], offset: usize) -> bool {
    (offset + 1..bytes.len().saturating_sub(LOG_RECORD_HEADER_LEN - 1)).any(|at| record_at(bytes, at).is_ok())
}

/// Parses a whole log file.
///
/// A bad record is a *torn tail* (an append cut short by a crash: the record and everything after it are
/// dropped) unless an intact record follows it anywhere in the file; then the log is damaged in the middle
/// (records that may have been acknowledged would be lost), and that is an error naming the offset.
pub(crate) fn read_log<'a>(
    bytes: &'a [u8],
    path: &Path,
    magic: [u8; 8],
    max_version: u32,
) -> Result<LogContents<'a>, StorageError> {
    if bytes.len() < LOG_FILE_HEADER_LEN {
        return Ok(LogContents {
            records: Vec::new(),
            valid_len: 0,
            torn_tail: (!bytes.is_empty()).then(|| "file header cut short".to_owned()),
        });
    }
    let mut header = Cursor::new(bytes);
    let found_magic = header.bytes(8, "magic").map_err(|e| StorageError::corruption(path, 0, e.reason))?;
    if found_magic != magic {
        return Err(StorageError::corruption(path, 0, "bad magic number"));
    }
    let version = header.u32("version").map_err(|e| StorageError::corruption(path, 8, e.reason))?;
    if version == 0 || version > max_version {
        return Err(StorageError::corruption(path, 8, format!("unsupported format version {version}")));
    }
    let mut records = Vec::new();
    let mut offset = LOG_FILE_HEADER_LEN;
    while offset < bytes.len() {
        match record_at(bytes, offset) {
            Ok((payload, total)) => {
                records.push((offset as u64, payload));
                offset += total;
            }
            Err(reason) => {
                if intact_record_after(bytes, offset) {
                    return Err(StorageError::corruption(path, offset as u64, reason));
                }
                return Ok(LogContents {
                    records,
                    valid_len: offset as u64,
                    torn_tail: Some(format!("{reason} at offset {offset}")),
                });
            }
        }
    }
    Ok(LogContents { records, valid_len: offset as u64, torn_tail: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::WAL_MAGIC;
    use crate::log::encode_record;

    fn file(records: &[&[u8]]) -> Vec<u8> {
        let mut out = WAL_MAGIC.to_vec();
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for r in records {
            encode_record(&mut out, r);
        }
        out
    }

    #[test]
    fn reads_every_record() {
        let bytes = file(&[b"one", b"", b"three"]);
        let log = read_log(&bytes, Path::new("x"), WAL_MAGIC, 1).unwrap();
        let payloads: Vec<&[u8]> = log.records.iter().map(|r| r.1).collect();
        assert_eq!(payloads, vec![&b"one"[..], b"", b"three"]);
        assert_eq!(log.valid_len, bytes.len() as u64);
        assert!(log.torn_tail.is_none());
    }

    #[test]
    fn torn_tail_is_dropped_at_every_cut() {
        let bytes = file(&[b"one", b"two"]);
        let second = 16 + 8 + 3;
        for cut in second + 1..bytes.len() {
            let log = read_log(&bytes[..cut], Path::new("x"), WAL_MAGIC, 1).unwrap();
            assert_eq!(log.records.len(), 1, "cut at {cut}");
            assert_eq!(log.valid_len, second as u64);
            assert!(log.torn_tail.is_some());
        }
    }

    #[test]
    fn damage_before_an_intact_record_is_corruption() {
        let mut bytes = file(&[b"one", b"two"]);
        bytes[16 + 8] ^= 1;
        let err = read_log(&bytes, Path::new("x"), WAL_MAGIC, 1).unwrap_err();
        assert!(matches!(err, StorageError::Corruption { offset: 16, .. }), "{err}");
    }

    /// A damaged length field must not make the intact records after it look like a torn tail.
    #[test]
    fn damaged_length_before_intact_records_is_corruption() {
        let bytes = file(&[b"one", b"two", b"three"]);
        for bit in 0..32 {
            let mut b = bytes.clone();
            b[16 + 4 + bit / 8] ^= 1 << (bit % 8);
            let err = read_log(&b, Path::new("x"), WAL_MAGIC, 1).unwrap_err();
            assert!(matches!(err, StorageError::Corruption { offset: 16, .. }), "bit {bit}: {err}");
        }
    }

    #[test]
    fn bad_magic_and_version_are_corruption() {
        let mut bytes = file(&[b"one"]);
        bytes[0] ^= 1;
        assert!(read_log(&bytes, Path::new("x"), WAL_MAGIC, 1).unwrap_err().is_corruption());
        let mut bytes = file(&[b"one"]);
        bytes[8] = 9;
        assert!(read_log(&bytes, Path::new("x"), WAL_MAGIC, 1).unwrap_err().is_corruption());
    }
}
