//! Writing a record log: [`encode_record`] frames a payload (`crc32 | length | payload`), [`LogWriter`]
//! creates a log file (header written and synced), reopens one to append after its intact records, appends,
//! reserves zeroed space ahead of the appends, trims it and syncs.

use std::path::{Path, PathBuf};

use super::LOG_RECORD_HEADER_LEN;
use crate::error::StorageError;
use crate::format::coding::put_u32;
use crate::io::{Storage, WritableFile};

/// Appends one framed record carrying `payload` to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len);
    hasher.update(payload);
    out.reserve(LOG_RECORD_HEADER_LEN + payload.len());
    put_u32(out, hasher.finalize());
    out.extend_from_slice(&len);
    out.extend_from_slice(payload);
}

/// An open log file being appended to.
pub(crate) struct LogWriter {
    file: Box<dyn WritableFile>,
    path: PathBuf,
    /// Bytes of header and records.
    len: u64,
    synced_len: u64,
    /// Zeroed space is reserved in multiples of this many bytes ahead of the appends; 0 for none.
    reserve_step: u64,
    /// How far the file is known to be long: appends up to here need no reservation.
    reserved: u64,
}

impl LogWriter {
    /// Creates a new log file with its header written and synced: the header is durable before the file's
    /// name is (callers sync the directory next), so a crash never leaves a damaged header on a log that
    /// holds acknowledged records.
    pub fn create(storage: &dyn Storage, path: &Path, magic: [u8; 8], version: u32) -> Result<Self, StorageError> {
        let mut file = storage.create(path).map_err(|e| StorageError::io(path, e))?;
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(&magic);
        put_u32(&mut header, version);
        put_u32(&mut header, 0);
        file.append(&header).and_then(|()| file.sync()).map_err(|e| StorageError::io(path, e))?;
        let len = header.len() as u64;
        Ok(Self { file, path: path.to_path_buf(), len, synced_len: len, reserve_step: 0, reserved: len })
    }

    /// Reopens an existing log of `file_len` bytes whose first `len` are its header and intact records, to
    /// append after them (over the zeros of reserved space, if the file goes on), syncing it first: what a
    /// crashed process wrote may still be only in the page cache, or its last sync may have failed, and
    /// later syncs skip a writer that has nothing new.
    pub fn reopen(storage: &dyn Storage, path: &Path, len: u64, file_len: u64) -> Result<Self, StorageError> {
        let mut file = storage.reopen(path, len).map_err(|e| StorageError::io(path, e))?;
        file.sync().map_err(|e| StorageError::io(path, e))?;
        let reserved = file_len.max(len);
        Ok(Self { file, path: path.to_path_buf(), len, synced_len: len, reserve_step: 0, reserved })
    }

    /// Makes the file grow in zero-filled steps of `step` bytes ahead of the appends (`WAL_RESERVE_BYTES`
    /// for a WAL), instead of by each append. Default: no reservation (the manifest).
    pub fn reserve_ahead(mut self, step: u64) -> Self {
        self.reserve_step = step;
        self
    }

    /// Appends bytes already framed by [`encode_record`].
    pub fn append_framed(&mut self, framed: &[u8]) -> Result<(), StorageError> {
        let end = self.len + framed.len() as u64;
        if self.reserve_step > 0 && end > self.reserved {
            let reserve = end.next_multiple_of(self.reserve_step);
            self.file.reserve(reserve).map_err(|e| StorageError::io(&self.path, e))?;
            self.reserved = reserve;
        }
        self.file.append(framed).map_err(|e| StorageError::io(&self.path, e))?;
        self.len = end;
        Ok(())
    }

    /// Frames and appends one record.
    pub fn append_record(&mut self, payload: &[u8]) -> Result<(), StorageError> {
        let mut buf = Vec::with_capacity(payload.len() + LOG_RECORD_HEADER_LEN);
        encode_record(&mut buf, payload);
        self.append_framed(&buf)
    }

    /// Cuts reserved space off the file, so that it ends with its last record, and syncs it
    /// (`Storage::truncate`). Appends after it reserve space again.
    pub fn trim(&mut self, storage: &dyn Storage) -> Result<(), StorageError> {
        if self.reserved > self.len {
            storage.truncate(&self.path, self.len).map_err(|e| StorageError::io(&self.path, e))?;
            self.reserved = self.len;
        }
        Ok(())
    }

    /// Syncs everything appended so far; a no-op when nothing is new.
    pub fn sync(&mut self) -> Result<bool, StorageError> {
        if self.synced_len == self.len {
            return Ok(false);
        }
        self.file.sync().map_err(|e| StorageError::io(&self.path, e))?;
        self.synced_len = self.len;
        Ok(true)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes made durable by the last sync.
    pub fn synced_len(&self) -> u64 {
        self.synced_len
    }
}
