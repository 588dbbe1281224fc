//! Reading a record log: [`read_log`] parses a whole file into its intact records and the length of its
//! valid prefix, deciding whether damage is a torn tail or corruption (`docs/format/wal.md`, "Reading
//! rules"); [`intact_records_from`] and [`written_len`] describe what a torn tail would drop.

#![deny(clippy::indexing_slicing)]

use std::path::Path;

use super::{LOG_FILE_HEADER_LEN, LOG_RECORD_HEADER_LEN};
use crate::error::StorageError;
use crate::format::coding::{read_u32_at, Cursor};

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

/// The length of `bytes` without the zeros it ends with: how much of a log was written, when space was
/// reserved after it. What a torn tail discards is `written_len - valid_len` bytes.
pub(crate) fn written_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1)
}

/// The next position after `at` where an intact record could start. An intact record's first 8 bytes are
/// never all zero (a zero length has the CRC `0x2144DF1C`, not 0), so a run of zeros (reserved space, or
/// bytes a power cut never let reach the disk) is skipped up to 7 bytes before its end.
fn next_candidate(bytes: &[u8], at: usize) -> usize {
    let from = at + 1;
    match bytes.get(from..).and_then(|rest| rest.iter().position(|&b| b != 0)) {
        Some(nonzero) => (from + nonzero).saturating_sub(LOG_RECORD_HEADER_LEN - 1).max(from),
        None => bytes.len(),
    }
}

/// Whether an intact record after `offset` proves that the bytes at `offset` had been synced: `synced_through`
/// returns, for an intact record's payload, the file offset through which the log was synced when that
/// record was written, if the record says.
///
/// Every position after the damage is tried, but runs of zeros: most fail the length check before any CRC is
/// computed, and a random position passes the CRC with probability 2^-32.
fn synced_past(bytes: &[u8], offset: usize, synced_through: &dyn Fn(u64, &[u8]) -> Option<u64>) -> bool {
    let mut at = offset + 1;
    while at + LOG_RECORD_HEADER_LEN <= bytes.len() {
        match record_at(bytes, at) {
            Ok((payload, total)) => {
                if synced_through(at as u64, payload).is_some_and(|s| s > offset as u64) {
                    return true;
                }
                at += total;
            }
            Err(_) => at = next_candidate(bytes, at),
        }
    }
    false
}

/// The intact records found at or after `offset` by the same search as [`synced_past`]: what a torn tail
/// starting at `offset` would discard, as far as it can be decoded. For reports (`cairn check`).
pub(crate) fn intact_records_from(bytes: &[u8], offset: usize) -> Vec<(u64, &[u8])> {
    let mut found = Vec::new();
    let mut at = offset;
    while at + LOG_RECORD_HEADER_LEN <= bytes.len() {
        match record_at(bytes, at) {
            Ok((payload, total)) => {
                found.push((at as u64, payload));
                at += total;
            }
            Err(_) => at = next_candidate(bytes, at),
        }
    }
    found
}

/// Parses a whole log file.
///
/// The records end at the end of the file or where only zero bytes remain (space reserved ahead of the
/// appends, not part of `valid_len`). A bad record at offset `D` followed by anything else is a *torn tail*
/// (an append cut short by a crash: the record and everything after it are dropped) unless an intact record
/// after it proves, through `synced_through`, that the log had been synced past `D`: then records that may
/// have been acknowledged are damaged, and that is an error naming the offset. The manifest, synced after every record, passes `|_, _| Some(u64::MAX)`: any intact
/// record after damage makes it corruption. The WAL passes its sync markers.
pub(crate) fn read_log<'a>(
    bytes: &'a [u8],
    path: &Path,
    magic: [u8; 8],
    max_version: u32,
    synced_through: &dyn Fn(u64, &[u8]) -> Option<u64>,
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
                if written_len(bytes) <= offset {
                    // Only zeros remain: space reserved ahead of the appends.
                    break;
                }
                if synced_past(bytes, offset, synced_through) {
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
    use crate::log::encode_record;

    /// The WAL's magic number (`docs/format/wal.md`); any magic would do.
    const WAL_MAGIC: [u8; 8] = *b"CAIRNWAL";

    /// Every intact record proves everything before it synced (the manifest's rule).
    const ALWAYS: fn(u64, &[u8]) -> Option<u64> = |_, _| Some(u64::MAX);

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
        let log = read_log(&bytes, Path::new("x"), WAL_MAGIC, 1, &ALWAYS).unwrap();
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
            let log = read_log(&bytes[..cut], Path::new("x"), WAL_MAGIC, 1, &ALWAYS).unwrap();
            assert_eq!(log.records.len(), 1, "cut at {cut}");
            assert_eq!(log.valid_len, second as u64);
            assert!(log.torn_tail.is_some());
        }
    }

    #[test]
    fn damage_before_an_intact_record_is_corruption() {
        let mut bytes = file(&[b"one", b"two"]);
        bytes[16 + 8] ^= 1;
        let err = read_log(&bytes, Path::new("x"), WAL_MAGIC, 1, &ALWAYS).unwrap_err();
        assert!(matches!(err, StorageError::Corruption { offset: 16, .. }), "{err}");
    }

    /// A damaged length field must not make the intact records after it look like a torn tail.
    #[test]
    fn damaged_length_before_intact_records_is_corruption() {
        let bytes = file(&[b"one", b"two", b"three"]);
        for bit in 0..32 {
            let mut b = bytes.clone();
            b[16 + 4 + bit / 8] ^= 1 << (bit % 8);
            let err = read_log(&b, Path::new("x"), WAL_MAGIC, 1, &ALWAYS).unwrap_err();
            assert!(matches!(err, StorageError::Corruption { offset: 16, .. }), "bit {bit}: {err}");
        }
    }

    /// Damage followed only by records that prove nothing about syncs is an unsynced, torn tail.
    #[test]
    fn damage_before_unproven_records_is_a_torn_tail() {
        let mut bytes = file(&[b"one", b"two", b"three"]);
        bytes[16 + 8] ^= 1;
        let log = read_log(&bytes, Path::new("x"), WAL_MAGIC, 1, &|_, _| None).unwrap();
        assert_eq!((log.records.len(), log.valid_len), (0, 16));
        // A later record proving a sync past the damage makes it corruption.
        let proves = |_: u64, p: &[u8]| (p == b"three").then_some(1000);
        assert!(read_log(&bytes, Path::new("x"), WAL_MAGIC, 1, &proves).unwrap_err().is_corruption());
        let too_early = |_: u64, p: &[u8]| (p == b"three").then_some(16);
        assert!(read_log(&bytes, Path::new("x"), WAL_MAGIC, 1, &too_early).is_ok());
    }

    /// Zeros after the records (reserved space) end the log like the end of the file: not a torn tail.
    #[test]
    fn zeros_after_the_records_end_them() {
        let bytes = file(&[b"one", b"", b"three"]);
        for zeros in [1, 7, 8, 9, 100, 4096] {
            let mut b = bytes.clone();
            b.resize(bytes.len() + zeros, 0);
            let log = read_log(&b, Path::new("x"), WAL_MAGIC, 1, &ALWAYS).unwrap();
            assert_eq!((log.records.len(), log.valid_len), (3, bytes.len() as u64), "{zeros} zeros");
            assert!(log.torn_tail.is_none(), "{zeros} zeros");
            assert_eq!(written_len(&b), bytes.len());
        }
        // A header and nothing but reserved space: an empty log.
        let empty = file(&[]);
        let mut b = empty.clone();
        b.resize(1000, 0);
        let log = read_log(&b, Path::new("x"), WAL_MAGIC, 1, &ALWAYS).unwrap();
        assert_eq!((log.records.len(), log.valid_len, log.torn_tail), (0, 16, None));
    }

    /// A torn append into reserved space, zeros after it, is a torn tail; damage followed by zeros and then
    /// a record that proves a sync past it is still corruption (the zeros are skipped, not trusted).
    #[test]
    fn damage_among_zeros_is_judged_by_what_follows() {
        let bytes = file(&[b"one", b"two"]);
        let second = 16 + 8 + 3;
        let mut torn = bytes.get(..second + 5).unwrap().to_vec();
        torn.resize(torn.len() + 5000, 0);
        let log = read_log(&torn, Path::new("x"), WAL_MAGIC, 1, &ALWAYS).unwrap();
        assert_eq!((log.records.len(), log.valid_len), (1, second as u64));
        assert!(log.torn_tail.is_some());

        for gap in [0, 1, 7, 8, 9, 4096, 4099] {
            let mut damaged = bytes.get(..second).unwrap().to_vec();
            damaged.push(0x5a);
            damaged.resize(damaged.len() + gap, 0);
            let proof_at = damaged.len();
            encode_record(&mut damaged, b"proof");
            damaged.resize(damaged.len() + 64, 0);
            let err = read_log(&damaged, Path::new("x"), WAL_MAGIC, 1, &ALWAYS).unwrap_err();
            assert!(matches!(err, StorageError::Corruption { offset, .. } if offset == second as u64), "gap {gap}");
            let found = intact_records_from(&damaged, second);
            assert_eq!(found, vec![(proof_at as u64, &b"proof"[..])], "gap {gap}");
        }
    }

    #[test]
    fn bad_magic_and_version_are_corruption() {
        let mut bytes = file(&[b"one"]);
        bytes[0] ^= 1;
        assert!(read_log(&bytes, Path::new("x"), WAL_MAGIC, 1, &ALWAYS).unwrap_err().is_corruption());
        let mut bytes = file(&[b"one"]);
        bytes[8] = 9;
        assert!(read_log(&bytes, Path::new("x"), WAL_MAGIC, 1, &ALWAYS).unwrap_err().is_corruption());
    }
}
