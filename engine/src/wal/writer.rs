//! The live WAL's writer state ([`WalState`]): creating or reopening a WAL file, appending framed batches
//! behind a sync marker whenever a sync moved the durable length, and sealing the WAL at a clean close.
//! The framing and the file itself are the record log's ([`crate::log::LogWriter`]). See
//! `docs/format/wal.md`, "Writing" and "Sync markers".

use std::path::Path;

use crate::error::StorageError;
use crate::io::Storage;
use crate::log::{encode_record, LogWriter};

use super::format::{WAL_FORMAT_VERSION, WAL_MAGIC, WAL_RESERVE_BYTES};
use super::marker::sync_marker;

/// Records up to this size are copied behind their sync marker so that both take one write call; larger
/// ones are written after it, uncopied.
const ONE_WRITE_BYTES: usize = 64 * 1024;

/// Zeros are written over the reserved space this many bytes at a time, half as many or more ahead of the
/// appends (`LogWriter::fill_ahead`): the next sync writes them with the records, and the appends that land
/// there later allocate no block, so their syncs write no metadata (on this ext4, without a journal, an
/// append and `fdatasync` of 2,500 bytes took 128-140 us on average into such space against 145-186 us into
/// the sparse reserve; 40 KiB, 155-159 us against 214-218 us).
const FILL_AHEAD_BYTES: u64 = 64 << 10;

/// The active WAL.
pub(crate) struct WalState {
    pub writer: LogWriter,
    /// The synced length the last sync marker recorded.
    pub marked: u64,
}

impl WalState {
    /// Creates a new WAL at `path`, its header written and synced, space reserved ahead of its appends in
    /// steps of [`WAL_RESERVE_BYTES`]. The caller syncs the directory.
    pub fn create(storage: &dyn Storage, path: &Path) -> Result<Self, StorageError> {
        let writer = LogWriter::create(storage, path, WAL_MAGIC, WAL_FORMAT_VERSION)?
            .reserve_ahead(WAL_RESERVE_BYTES)
            .fill_ahead(FILL_AHEAD_BYTES);
        let marked = writer.synced_len();
        Ok(Self { writer, marked })
    }

    /// Reopens the WAL at `path` (`file_len` bytes, of which the first `valid_len` are its header and intact
    /// records) to append after its records; its sync markers vouch for its first `marked` bytes.
    pub fn reopen(
        storage: &dyn Storage,
        path: &Path,
        valid_len: u64,
        file_len: u64,
        marked: u64,
    ) -> Result<Self, StorageError> {
        let writer = LogWriter::reopen(storage, path, valid_len, file_len)?
            .reserve_ahead(WAL_RESERVE_BYTES)
            .fill_ahead(FILL_AHEAD_BYTES);
        Ok(Self { writer, marked })
    }

    /// Appends framed records, first recording in a sync marker how far the WAL is synced if that moved.
    /// A marker and small records go to the file in one write.
    pub fn append(&mut self, framed: &[u8]) -> Result<(), StorageError> {
        let synced = self.writer.synced_len();
        if synced <= self.marked {
            return self.writer.append_framed(framed);
        }
        let together = framed.len() <= ONE_WRITE_BYTES;
        let mut marker = Vec::with_capacity(32 + if together { framed.len() } else { 0 });
        encode_record(&mut marker, &sync_marker(synced));
        if together {
            marker.extend_from_slice(framed);
            self.writer.append_framed(&marker)?;
        } else {
            self.writer.append_framed(&marker)?;
            self.writer.append_framed(framed)?;
        }
        self.marked = synced;
        Ok(())
    }

    /// Syncs the WAL and, if that sync moved the synced length past the last marker, appends a sync marker
    /// vouching for everything before it and syncs again; then cuts off the reserved space, so that a closed
    /// WAL ends with its last record. Called at a clean close: without the marker, damage to the last records
    /// (synced, but followed by no marker) would be indistinguishable from a torn tail at the next open, and
    /// acknowledged commits could be dropped silently. Returns whether anything was synced.
    pub fn seal(&mut self, storage: &dyn Storage) -> Result<bool, StorageError> {
        let mut synced = self.writer.sync()?;
        let through = self.writer.synced_len();
        if through > self.marked {
            let mut marker = Vec::with_capacity(32);
            encode_record(&mut marker, &sync_marker(through));
            self.writer.append_framed(&marker)?;
            self.marked = through;
            synced = self.writer.sync()?;
        }
        self.writer.trim(storage)?;
        Ok(synced)
    }
}
