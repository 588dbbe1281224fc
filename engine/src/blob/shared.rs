//! The shared append file: small blobs from every writer are appended to it whole, one write each, and
//! writers finishing together share one `fdatasync` (group sync).
//!
//! Appends and syncs each hold the file handle for the duration of the call. A finishing writer appends,
//! then waits until the file is synced past its blob's end: if a sync is in flight it waits for it and looks
//! again; if none is, it becomes the leader and syncs everything appended so far, for every writer waiting.
//! Before it syncs, the leader lets the writers already inside an append (most of them waiting for the
//! handle, which the previous sync held) finish theirs, for up to [`APPEND_WAIT`]: one sync then covers
//! every writer that arrived during the previous one, instead of each taking the handle for a sync of its
//! own in turn.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::format::{BlobHeader, Trailer, BLOB_FILE_HEADER_LEN, BLOB_HEADER_LEN, BLOB_TRAILER_LEN};
use crate::error::StorageError;
use crate::io::WritableFile;

struct SyncState {
    /// Bytes appended (file header included).
    len: u64,
    /// Bytes made durable by the last sync.
    synced: u64,
    /// A leader is syncing.
    syncing: bool,
    /// Writers inside [`SharedFile::append`].
    appending: usize,
    /// The first failed write or sync: the file takes no more appends, its unsynced bytes are in doubt.
    failed: Option<String>,
}

/// The longest a sync's leader waits for writers inside an append: an append is one write of a small blob.
const APPEND_WAIT: Duration = Duration::from_millis(2);

/// A blob file that small blobs are appended to.
pub(crate) struct SharedFile {
    pub number: u64,
    pub path: PathBuf,
    /// Bytes appended, for [`BlobStore::files`](super::BlobStore::files).
    pub len: Arc<AtomicU64>,
    file: Mutex<Box<dyn WritableFile>>,
    state: Mutex<SyncState>,
    synced_cv: Condvar,
}

impl SharedFile {
    /// Wraps a file whose header is written and synced.
    pub fn new(number: u64, path: PathBuf, file: Box<dyn WritableFile>, len: Arc<AtomicU64>) -> Self {
        let header = BLOB_FILE_HEADER_LEN as u64;
        len.store(header, Ordering::Release);
        Self {
            number,
            path,
            len,
            file: Mutex::new(file),
            state: Mutex::new(SyncState { len: header, synced: header, syncing: false, appending: 0, failed: None }),
            synced_cv: Condvar::new(),
        }
    }

    /// Whether the next small blob should go to a new file: this one is `file_size` long, or failed.
    pub fn is_full(&self, file_size: u64) -> bool {
        let st = self.state.lock();
        st.failed.is_some() || st.len >= file_size
    }

    fn failed_error(&self, cause: &str) -> StorageError {
        StorageError::io(
            &self.path,
            io::Error::other(format!("an earlier write or sync of this blob file failed: {cause}")),
        )
    }

    /// Appends one framed blob: `framed` is the blob as on disk, with its first [`BLOB_HEADER_LEN`] and last
    /// [`BLOB_TRAILER_LEN`] bytes left for the header and trailer, which are filled in here (the header records
    /// how far the file is synced). Returns the blob's offset and the file offset just past it.
    pub fn append(
        &self,
        framed: &mut [u8],
        chunk_size: u32,
        len: u64,
        chunks_crc: u32,
    ) -> Result<(u64, u64), StorageError> {
        self.state.lock().appending += 1;
        let result = self.append_framed(framed, chunk_size, len, chunks_crc);
        let mut st = self.state.lock();
        st.appending -= 1;
        if st.appending == 0 {
            self.synced_cv.notify_all();
        }
        result
    }

    fn append_framed(
        &self,
        framed: &mut [u8],
        chunk_size: u32,
        len: u64,
        chunks_crc: u32,
    ) -> Result<(u64, u64), StorageError> {
        let mut file = self.file.lock();
        let (offset, synced) = {
            let st = self.state.lock();
            if let Some(cause) = &st.failed {
                return Err(self.failed_error(cause));
            }
            (st.len, st.synced)
        };
        let header = BlobHeader::new(chunk_size, len, synced);
        let trailer = Trailer { len, chunks_crc, header_crc: header.crc };
        let n = framed.len();
        let head = framed.get_mut(..BLOB_HEADER_LEN);
        let bad_frame =
            || StorageError::io(&self.path, io::Error::other("blob frame shorter than its header and trailer"));
        head.ok_or_else(bad_frame)?.copy_from_slice(&header.encode());
        let tail = framed.get_mut(n.saturating_sub(BLOB_TRAILER_LEN)..).filter(|t| t.len() == BLOB_TRAILER_LEN);
        tail.ok_or_else(bad_frame)?.copy_from_slice(&trailer.encode());
        let result = file.append(framed);
        let mut st = self.state.lock();
        match result {
            Ok(()) => {
                st.len += n as u64;
                self.len.store(st.len, Ordering::Release);
                Ok((offset, st.len))
            }
            Err(e) => {
                st.failed = Some(e.to_string());
                Err(StorageError::io(&self.path, e))
            }
        }
    }

    /// Returns once the file is synced through `end`, syncing it unless a sync in flight covers it.
    pub fn sync_to(&self, end: u64) -> Result<(), StorageError> {
        let mut st = self.state.lock();
        loop {
            if st.synced >= end {
                return Ok(());
            }
            if let Some(cause) = &st.failed {
                return Err(self.failed_error(cause));
            }
            if st.syncing {
                self.synced_cv.wait(&mut st);
                continue;
            }
            st.syncing = true;
            let deadline = Instant::now() + APPEND_WAIT;
            while st.appending > 0 && !self.synced_cv.wait_until(&mut st, deadline).timed_out() {}
            drop(st);
            let result = {
                let mut file = self.file.lock();
                // No append is in flight while the handle is held: everything counted in `len` is covered.
                let target = self.state.lock().len;
                file.sync().map(|()| target)
            };
            st = self.state.lock();
            st.syncing = false;
            match result {
                Ok(target) => st.synced = st.synced.max(target),
                Err(e) => st.failed = Some(e.to_string()),
            }
            self.synced_cv.notify_all();
        }
    }
}
