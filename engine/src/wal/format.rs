//! The WAL's on-disk constants: its magic number, format version and how far ahead of the appends its file
//! is extended. Each is quoted in `docs/format/wal.md`; change one and the spec must change with it. The
//! record container's own sizes (header, record header) are in [`crate::log`].

/// Magic number at the start of every write-ahead log file: ASCII `CAIRNWAL` (`docs/format/wal.md`, "File
/// header").
pub const WAL_MAGIC: [u8; 8] = *b"CAIRNWAL";

/// Version of the write-ahead log format written by this build (`docs/format/wal.md`, "File header" and
/// "Version history").
pub const WAL_FORMAT_VERSION: u32 = 1;

/// A WAL's length is a multiple of this: when an append would run past the end, the file is first extended
/// with zeros to the next multiple, so that most appends land inside the file and their syncs need not
/// write its length (`docs/format/wal.md`, "Reserved space").
pub const WAL_RESERVE_BYTES: u64 = 4 << 20;
