//! On-disk names, magic numbers, format versions and the byte-level helpers every file kind shares.
//!
//! Each constant here is quoted in `docs/format/`; change one and the spec must change with it.

pub(crate) mod coding;
pub(crate) mod key;
pub(crate) mod names;

/// Magic number at the start of every write-ahead log file: ASCII `CAIRNWAL`.
pub const WAL_MAGIC: [u8; 8] = *b"CAIRNWAL";
/// Magic number at the start of every manifest file: ASCII `CAIRNMAN`.
pub const MANIFEST_MAGIC: [u8; 8] = *b"CAIRNMAN";
/// Magic number at the end of every table file: ASCII `CAIRNSST`, the last 8 bytes of the footer, in order.
pub const TABLE_MAGIC: [u8; 8] = *b"CAIRNSST";

/// Version of the write-ahead log format written by this build.
pub const WAL_FORMAT_VERSION: u32 = 1;
/// Version of the manifest format written by this build.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// Version of the table format written by this build.
pub const TABLE_FORMAT_VERSION: u32 = 1;

/// Size of the header that starts a WAL or manifest file: magic (8), version (4), reserved (4).
pub const LOG_FILE_HEADER_LEN: usize = 16;
/// Size of a log record header: crc32 (4), payload length (4).
pub const LOG_RECORD_HEADER_LEN: usize = 8;
/// A WAL's length is a multiple of this: when an append would run past the end, the file is first extended
/// with zeros to the next multiple, so that most appends land inside the file and their syncs need not
/// write its length.
pub const WAL_RESERVE_BYTES: u64 = 4 << 20;
