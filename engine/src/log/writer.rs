use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::format::coding::put_u32;
use crate::format::LOG_RECORD_HEADER_LEN;
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
    len: u64,
    synced_len: u64,
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
        Ok(Self { file, path: path.to_path_buf(), len, synced_len: len })
    }

    /// Reopens an existing log of `len` bytes (all of them intact, the header included) to append to it,
    /// syncing it first: what a crashed process wrote may still be only in the page cache, or its last sync
    /// may have failed, and later syncs skip a writer that has nothing new.
    pub fn reopen(storage: &dyn Storage, path: &Path, len: u64) -> Result<Self, StorageError> {
        let mut file = storage.append(path).map_err(|e| StorageError::io(path, e))?;
        file.sync().map_err(|e| StorageError::io(path, e))?;
        Ok(Self { file, path: path.to_path_buf(), len, synced_len: len })
    }

    /// Appends bytes already framed by [`encode_record`].
    pub fn append_framed(&mut self, framed: &[u8]) -> Result<(), StorageError> {
        self.file.append(framed).map_err(|e| StorageError::io(&self.path, e))?;
        self.len += framed.len() as u64;
        Ok(())
    }

    /// Frames and appends one record.
    pub fn append_record(&mut self, payload: &[u8]) -> Result<(), StorageError> {
        let mut buf = Vec::with_capacity(payload.len() + LOG_RECORD_HEADER_LEN);
        encode_record(&mut buf, payload);
        self.append_framed(&buf)
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

    /// Bytes made durable by the last sync.
    pub fn synced_len(&self) -> u64 {
        self.synced_len
    }
}
