//! Framed, checksummed record files: the container of both the write-ahead log and the manifest.
//!
//! A log file is a 16-byte header (magic, format version, reserved) followed by records, each
//! `crc32 (u32 LE) | length (u32 LE) | payload`, the CRC covering the length field and the payload.
//! See `docs/format/wal.md`.

mod reader;
mod writer;

pub(crate) use reader::{intact_records_from, read_log, written_len};
pub(crate) use writer::{encode_record, LogWriter};
