//! Writing a record log: [`encode_record`] frames a payload (`crc32 | length | payload`), [`LogWriter`]
//! creates a log file (header written and synced), reopens one to append after its intact records, appends,
//! reserves zeroed space ahead of the appends (and writes zeros over it a little ahead of them), trims it and
//! syncs.

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
    /// Zeros are written over reserved space in steps of this many bytes ahead of the appends; 0 for none.
    fill_step: u64,
    /// How far zeros were written ahead of the appends (or the appends reach).
    filled: u64,
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
        Ok(Self::synced_at(file, path, len, len))
    }

    /// Reopens an existing log of `file_len` bytes whose first `len` are its header and intact records, to
    /// append after them (over the zeros of reserved space, if the file goes on), syncing it first: what a
    /// crashed process wrote may still be only in the page cache, or its last sync may have failed, and
    /// later syncs skip a writer that has nothing new.
    pub fn reopen(storage: &dyn Storage, path: &Path, len: u64, file_len: u64) -> Result<Self, StorageError> {
        let mut file = storage.reopen(path, len).map_err(|e| StorageError::io(path, e))?;
        file.sync().map_err(|e| StorageError::io(path, e))?;
        Ok(Self::synced_at(file, path, len, file_len.max(len)))
    }

    /// A writer appending at `len` of a file synced that far and `file_len` long, reserving nothing ahead.
    fn synced_at(file: Box<dyn WritableFile>, path: &Path, len: u64, file_len: u64) -> Self {
        Self {
            file,
            path: path.to_path_buf(),
            len,
            synced_len: len,
            reserve_step: 0,
            reserved: file_len,
            fill_step: 0,
            filled: len,
        }
    }

    /// Makes the file grow in zero-filled steps of `step` bytes ahead of the appends (`WAL_RESERVE_BYTES`
    /// for a WAL), instead of by each append. Default: no reservation (the manifest).
    pub fn reserve_ahead(mut self, step: u64) -> Self {
        self.reserve_step = step;
        self
    }

    /// Writes zeros over the reserved space in steps of `step` bytes, half a step or more ahead of the
    /// appends ([`WritableFile::fill_zeros`]; the WAL's `FILL_AHEAD_BYTES`). Default: none.
    pub fn fill_ahead(mut self, step: u64) -> Self {
        self.fill_step = step;
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
        if self.fill_step > 0 && self.len + self.fill_step / 2 > self.filled {
            self.fill_zeros_ahead();
        }
        Ok(())
    }

    /// Writes zeros over the next step of reserved space past the appends (up to the file's end). They
    /// change no byte, so a failure changes nothing either: it only stops the filling for this file.
    fn fill_zeros_ahead(&mut self) {
        let from = self.filled.max(self.len);
        let to = (from + self.fill_step).min(self.reserved);
        if to <= from {
            return;
        }
        match self.file.fill_zeros(from, to - from) {
            Ok(()) => self.filled = to,
            Err(_) => self.fill_step = 0,
        }
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
            self.filled = self.len;
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

    /// Asks the operating system to start writing what was appended so far, without waiting
    /// ([`WritableFile::start_writeback`]): the [`sync`](Self::sync) that follows then finds the data on
    /// its way. A hint: a file system that refuses it loses nothing, and the sync reports real errors.
    pub fn start_writeback(&mut self) {
        let _ = self.file.start_writeback();
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

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::io::MemStorage;

    /// Zeros go ahead of the appends in steps, inside the reserved space and past the appends (MemStorage
    /// checks both), and the log's bytes are what was appended.
    #[test]
    fn zeros_are_filled_a_step_ahead_of_the_appends_within_the_reserve() {
        let fs = MemStorage::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let path = Path::new("/d/log");
        let mut w = LogWriter::create(&fs, path, *b"CAIRNWAL", 1).unwrap().reserve_ahead(1 << 20).fill_ahead(64 << 10);
        let record = [7u8; 2_500];
        let mut ends = Vec::new();
        for _ in 0..1_000 {
            w.append_framed(&record).unwrap();
            w.sync().unwrap();
            ends.push(w.len());
        }
        let fills = fs.zero_fills(path);
        // Steps in order from the first append's end, each from where the one before ended (or the appends
        // reached), ahead by half a step or more.
        assert_eq!(fills.first().map(|f| f.0), Some(16 + 2_500));
        for pair in fills.windows(2) {
            let from = pair[0].0 + pair[0].1;
            assert!(pair[1].0 == from || pair[1].0 > from && ends.contains(&pair[1].0), "{pair:?}");
        }
        let filled_to = |len: u64| fills.iter().map(|f| f.0 + f.1).filter(|&e| e <= len + (96 << 10)).max();
        for &end in &ends {
            let ahead = filled_to(end).unwrap_or(0).saturating_sub(end);
            let reserve_end = end.next_multiple_of(1 << 20);
            assert!(ahead >= (32 << 10) || filled_to(end) == Some(reserve_end), "{ahead} bytes ahead of {end}");
        }
        // The last step stops at the reserve's end; the next reserve's start from the append that crossed it.
        assert!(fills.iter().any(|f| f.0 + f.1 == 1 << 20));
        let crossing = ends.iter().copied().find(|&e| e > 1 << 20);
        assert!(crossing.is_some() && fills.iter().any(|f| Some(f.0) == crossing));
        let mut want = b"CAIRNWAL".to_vec();
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&0u32.to_le_bytes());
        (0..1_000).for_each(|_| want.extend_from_slice(&record));
        let bytes = fs.read(path).unwrap();
        assert_eq!(&bytes[..want.len()], &want[..]);
        assert!(bytes[want.len()..].iter().all(|b| *b == 0));
        // Trimmed, the file ends with its records; the next append fills from its end again.
        w.trim(&fs).unwrap();
        let before = fs.zero_fills(path).len();
        w.append_framed(&record).unwrap();
        assert_eq!(fs.zero_fills(path)[before].0, want.len() as u64 + 2_500);
    }

    /// A file whose zero fills fail: the appends succeed, and the writer stops asking.
    #[test]
    fn a_failed_zero_fill_fails_no_append_and_is_not_tried_again() {
        struct NoFill(Arc<Mutex<(Vec<u8>, u32)>>);
        impl WritableFile for NoFill {
            fn append(&mut self, data: &[u8]) -> io::Result<()> {
                self.0.lock().unwrap().0.extend_from_slice(data);
                Ok(())
            }
            fn reserve(&mut self, _len: u64) -> io::Result<()> {
                Ok(())
            }
            fn sync(&mut self) -> io::Result<()> {
                Ok(())
            }
            fn fill_zeros(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
                self.0.lock().unwrap().1 += 1;
                Err(io::Error::other("no space"))
            }
        }
        let seen = Arc::new(Mutex::new((Vec::new(), 0)));
        let mut w = LogWriter::synced_at(Box::new(NoFill(seen.clone())), Path::new("log"), 0, 0)
            .reserve_ahead(1 << 20)
            .fill_ahead(64 << 10);
        for _ in 0..100 {
            w.append_framed(&[1u8; 2_500]).unwrap();
        }
        assert_eq!(seen.lock().unwrap().0.len(), 250_000);
        assert_eq!(seen.lock().unwrap().1, 1);
    }
}
