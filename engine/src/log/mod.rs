//! The record log: framed, checksummed record files, the container of both the write-ahead log
//! ([`crate::wal`]) and the manifest ([`crate::manifest`]). It knows nothing of what the records carry.
//!
//! A log file is a 16-byte header (magic, format version, reserved) followed by records, each
//! `crc32 (u32 LE) | length (u32 LE) | payload`, the CRC covering the length field and the payload.
//! [`writer`] creates, appends to and syncs a log file; [`reader`] parses one, telling a torn tail from
//! corruption. See `docs/format/wal.md`, "The log container".

mod reader;
mod writer;

pub(crate) use reader::{intact_records_from, read_log, written_len, LogContents};
pub(crate) use writer::{encode_record, LogWriter};

/// Size of the header that starts a WAL or manifest file: magic (8), version (4), reserved (4).
pub const LOG_FILE_HEADER_LEN: usize = 16;
/// Size of a log record header: crc32 (4), payload length (4).
pub const LOG_RECORD_HEADER_LEN: usize = 8;
