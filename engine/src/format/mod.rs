//! On-disk names, the manifest's and tables' magic numbers and format versions, and the byte-level helpers
//! every file kind shares. The WAL's constants are in [`crate::wal::format`], the record log's sizes in
//! [`crate::log`].
//!
//! Each constant here is quoted in `docs/format/`; change one and the spec must change with it.

pub(crate) mod coding;
pub(crate) mod key;
pub(crate) mod names;

/// Magic number at the start of every manifest file: ASCII `CAIRNMAN`.
pub const MANIFEST_MAGIC: [u8; 8] = *b"CAIRNMAN";
/// Magic number at the end of every table file: ASCII `CAIRNSST`, the last 8 bytes of the footer, in order.
pub const TABLE_MAGIC: [u8; 8] = *b"CAIRNSST";

/// Version of the manifest format written by this build.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// Newest version of the table format, written by this build for tables with a compression dictionary (those
/// without are written at version 1, which every build reads).
pub const TABLE_FORMAT_VERSION: u32 = 2;
