//! [`BlobStore`]: the directory of blob files, the shared append file, pins, reads and removal.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::check::{check_store, BlobCheckReport};
use super::format::{file_header, BLOB_FILE_HEADER_LEN, BLOB_HEADER_LEN, BLOB_TRAILER_LEN};
use super::reader::BlobReader;
use super::scan::scan;
use super::shared::SharedFile;
use super::writer::BlobWriter;
use super::{BlobFileInfo, BlobOptions, BlobRef};
use crate::error::{OpenError, StorageError};
use crate::format::names;
use crate::io::{FileLock, MappedFile, Storage, WritableFile};

/// Append-only, checksummed blob files in a directory of their own: large values kept apart from the
/// key-value store, which holds their [`BlobRef`]s. Cheap to clone (the clones share one store); `Send` and
/// `Sync`. See `docs/format/blob.md`.
///
/// Small blobs (up to [`BlobOptions::small_blob_limit`], 1 MiB by default) from all writers are appended to
/// one shared file, which rolls over to a new one past [`BlobOptions::file_size`]; a larger blob gets a file
/// of its own. Files are only ever appended to, by the process that created them, and removed whole
/// ([`remove_file`](Self::remove_file)): garbage collection is the caller's, who copies the live blobs of a
/// file elsewhere, updates its references, then removes the file.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::{Read, Write};
/// use std::sync::Arc;
/// use cairn_engine::{BlobOptions, BlobRef, BlobStore, MemStorage};
///
/// let store = BlobStore::open(Arc::new(MemStorage::new()), "/blobs".as_ref(), BlobOptions::default())?;
/// let mut writer = store.writer()?;
/// writer.write_all(b"checkpoint bytes")?;
/// let (blob, _pin) = writer.finish()?;
/// let key_value_store_entry = blob.encode();            // kept with the object's metadata
/// let blob = BlobRef::decode(&key_value_store_entry).unwrap();
/// let mut tail = String::new();
/// store.read(&blob, 11..16)?.read_to_string(&mut tail)?;
/// assert_eq!(tail, "bytes");
/// assert_eq!(store.read_all(&blob)?, b"checkpoint bytes");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    pub options: BlobOptions,
    state: Mutex<State>,
    /// Held while a new shared file is started.
    roll: Mutex<()>,
    _lock: Box<dyn FileLock>,
}

struct State {
    next_number: u64,
    files: BTreeMap<u64, FileEntry>,
    pins: HashMap<u64, usize>,
    /// The file small blobs are appended to, once one was needed.
    shared: Option<Arc<SharedFile>>,
}

struct FileEntry {
    /// Length on disk (bytes appended so far, for a file being appended to).
    len: Arc<AtomicU64>,
    /// Being appended to (the shared file, or a streaming writer's own).
    active: bool,
    /// The file mapped, kept for later reads (remapped when a read needs more than it holds).
    map: Option<Arc<dyn MappedFile>>,
}

impl BlobStore {
    /// Opens the blob directory `dir` (created if missing), taking the lock on its `LOCK` file. Only names are
    /// listed (`NNNNNN.blob`); no file is read, and none is appended to again: new blobs go to new files.
    pub fn open(storage: Arc<dyn Storage>, dir: &Path, options: BlobOptions) -> Result<BlobStore, OpenError> {
        options.validate().map_err(OpenError::InvalidOptions)?;
        storage.create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let lock_path = dir.join(names::LOCK);
        let lock = storage.lock(&lock_path).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => OpenError::Locked { path: lock_path.clone() },
            _ => OpenError::Storage(StorageError::io(&lock_path, e)),
        })?;
        let mut files = BTreeMap::new();
        for name in storage.list(dir).map_err(|e| StorageError::io(dir, e))? {
            if let Some(number) = names::parse_blob(&name) {
                let path = names::blob(dir, number);
                let len = storage.file_len(&path).map_err(|e| StorageError::io(&path, e))?;
                files.insert(number, FileEntry { len: Arc::new(AtomicU64::new(len)), active: false, map: None });
            }
        }
        let next_number = files.keys().next_back().map_or(1, |n| n + 1);
        let state = State { next_number, files, pins: HashMap::new(), shared: None };
        let inner = Inner {
            storage,
            dir: dir.to_path_buf(),
            options,
            state: Mutex::new(state),
            roll: Mutex::new(()),
            _lock: lock,
        };
        Ok(BlobStore { inner: Arc::new(inner) })
    }

    /// Starts a new blob.
    pub fn writer(&self) -> Result<BlobWriter, StorageError> {
        Ok(BlobWriter::new(self.inner.clone()))
    }

    /// Reads bytes `range` of `blob` (offsets within the blob). Only the chunks the range touches are
    /// verified, each before any of its bytes is handed out; reading the whole blob from its start also checks
    /// its trailer's checksum of all chunk checksums. The reader keeps the file mapped: it goes on working if
    /// the file is removed meanwhile. Fails with [`StorageError::OutOfRange`] if the range is not within the
    /// blob, and with [`StorageError::Corruption`] if the blob's header or trailer is damaged or does not match
    /// the reference.
    pub fn read(&self, blob: &BlobRef, range: Range<u64>) -> Result<BlobReader, StorageError> {
        if range.start > range.end || range.end > blob.len {
            return Err(StorageError::OutOfRange { start: range.start, end: range.end, len: blob.len });
        }
        let path = names::blob(&self.inner.dir, blob.file);
        let min_end = blob.offset.saturating_add(blob.len).saturating_add((BLOB_HEADER_LEN + BLOB_TRAILER_LEN) as u64);
        let map = self.inner.map(blob.file, min_end)?;
        match BlobReader::new(map, path.clone(), blob, range.clone()) {
            Err(StorageError::Corruption { .. }) => {
                // The blob may end past what an earlier map of this file, made while it grew, holds: map it
                // afresh before calling the damage corruption.
                let map = self.inner.map(blob.file, u64::MAX)?;
                BlobReader::new(map, path, blob, range)
            }
            other => other,
        }
    }

    /// Reads a whole blob into memory (for small blobs), verifying every chunk and the trailer.
    pub fn read_all(&self, blob: &BlobRef) -> Result<Vec<u8>, StorageError> {
        let mut reader = self.read(blob, 0..blob.len)?;
        let mut out = Vec::with_capacity(usize::try_from(blob.len).unwrap_or(0).min(1 << 30));
        reader.read_to_end(&mut out).map_err(|e| into_storage_error(e, &names::blob(&self.inner.dir, blob.file)))?;
        Ok(out)
    }

    /// Every blob file, by number: its length on disk and whether it is still being appended to.
    pub fn files(&self) -> Vec<BlobFileInfo> {
        let st = self.inner.state.lock();
        st.files
            .iter()
            .map(|(&number, e)| BlobFileInfo { number, len: e.len.load(Ordering::Acquire), active: e.active })
            .collect()
    }

    /// Every blob recorded in `file` whose header and trailer are intact (chunks are not read: see
    /// [`check`](Self::check)), in file order. Incomplete blobs (a writer that died, an append a power cut
    /// cut short or garbled before it was synced) are skipped. Fails with [`StorageError::Corruption`] at the
    /// first damage proven to be in synced bytes.
    pub fn blobs_in(&self, file: u64) -> Result<Vec<BlobRef>, StorageError> {
        let path = names::blob(&self.inner.dir, file);
        let (map, limit) = self.inner.fresh_map(file)?;
        let bytes = map.bytes();
        let scanned = scan(bytes.get(..limit).unwrap_or(bytes));
        if let Some(d) = scanned.damage.iter().find(|d| d.corrupt) {
            return Err(StorageError::corruption(&path, d.offset, d.reason.clone()));
        }
        Ok(scanned.blobs.iter().map(|b| BlobRef { file, offset: b.layout.offset, len: b.layout.len }).collect())
    }

    /// Removes blob file `file`. Refused with [`StorageError::FileInUse`] while it is being appended to (the
    /// shared file, a streaming writer's own) or pinned ([`pin`](Self::pin)). Readers already open keep
    /// working.
    pub fn remove_file(&self, file: u64) -> Result<(), StorageError> {
        let path = names::blob(&self.inner.dir, file);
        {
            let mut st = self.inner.state.lock();
            let Some(entry) = st.files.get(&file) else {
                return Err(StorageError::io(&path, io::Error::new(io::ErrorKind::NotFound, "no such blob file")));
            };
            if entry.active {
                return Err(StorageError::FileInUse { file: path, reason: "it is being appended to".into() });
            }
            if st.pins.get(&file).is_some_and(|&n| n > 0) {
                return Err(StorageError::FileInUse { file: path, reason: "it is pinned".into() });
            }
            self.inner.storage.remove(&path).map_err(|e| StorageError::io(&path, e))?;
            st.files.remove(&file);
        }
        if self.inner.options.sync {
            self.inner.storage.sync_dir(&self.inner.dir).map_err(|e| StorageError::io(&self.inner.dir, e))?;
        }
        Ok(())
    }

    /// Pins `file`: [`remove_file`](Self::remove_file) refuses it until the pin (and every other on it) is
    /// dropped. Any number can be pinned, even one with no file.
    pub fn pin(&self, file: u64) -> BlobPin {
        self.inner.pin(file)
    }

    /// Reads every byte of every blob file and verifies every checksum. Nothing is changed.
    pub fn check(&self) -> BlobCheckReport {
        check_store(&self.inner, &self.files())
    }

    /// Copies every blob file into `dest` (created if missing; it must hold no blob file of the same
    /// number): files no longer appended to as hard links where the storage allows (they never change
    /// again), files still appended to as copies of what they held when this was called. Every blob
    /// finished before the call is in the copy. Each file is pinned while it is copied. Returns the number
    /// of files and of bytes.
    pub fn copy_to(&self, dest: &Path) -> Result<(u64, u64), StorageError> {
        let storage = &self.inner.storage;
        storage.create_dir_all(dest).map_err(|e| StorageError::io(dest, e))?;
        let (mut files, mut bytes) = (0, 0);
        for info in self.files() {
            let _pin = self.pin(info.number);
            let (from, to) = (names::blob(&self.inner.dir, info.number), names::blob(dest, info.number));
            if info.active {
                let (map, limit) = self.inner.fresh_map(info.number)?;
                let all = map.bytes();
                let content = all.get(..limit).unwrap_or(all);
                let mut out = storage.create(&to).map_err(|e| StorageError::io(&to, e))?;
                for piece in content.chunks(1 << 20) {
                    out.append(piece).map_err(|e| StorageError::io(&to, e))?;
                }
                out.sync().map_err(|e| StorageError::io(&to, e))?;
                bytes += content.len() as u64;
            } else {
                match storage.link(&from, &to) {
                    Ok(()) => bytes += info.len,
                    // Removed by garbage collection since the listing: nothing points into it.
                    Err(_) if !self.inner.has_file(info.number) => continue,
                    Err(e) => return Err(StorageError::io(&to, e)),
                }
            }
            files += 1;
        }
        storage.sync_dir(dest).map_err(|e| StorageError::io(dest, e))?;
        Ok((files, bytes))
    }

    /// Whether blob file `file` exists (it was not removed), without listing every file.
    pub fn has_file(&self, file: u64) -> bool {
        self.inner.has_file(file)
    }

    /// The shared file small blobs are appended to now, if there is one.
    pub fn shared_file(&self) -> Option<u64> {
        self.inner.state.lock().shared.as_ref().map(|s| s.number)
    }

    /// Stops appending small blobs to `file` if it is the shared file: the next small blob starts a new one.
    /// The sealed file is then no longer active, so garbage collection may rewrite or remove it (appends
    /// that had already chosen it still finish there, and keep it pinned until they do). Returns whether
    /// `file` was the shared file.
    pub fn seal_shared(&self, file: u64) -> bool {
        self.inner.seal_shared(file)
    }

    /// Total length of the blob files on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.files().iter().map(|f| f.len).sum()
    }

    /// The options it was opened with.
    pub fn options(&self) -> &BlobOptions {
        &self.inner.options
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStore").field("dir", &self.inner.dir).field("options", &self.inner.options).finish()
    }
}

/// Keeps a blob file from being removed while it lives ([`BlobStore::pin`]); dropping it unpins.
pub struct BlobPin {
    inner: Arc<Inner>,
    file: u64,
}

impl BlobPin {
    /// The pinned file's number.
    pub fn file(&self) -> u64 {
        self.file
    }
}

impl Drop for BlobPin {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock();
        if let Some(n) = st.pins.get_mut(&self.file) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.pins.remove(&self.file);
            }
        }
    }
}

impl fmt::Debug for BlobPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobPin").field("file", &self.file).finish()
    }
}

/// The [`StorageError`] inside an error from a reader, or an I/O error on `path`.
pub(crate) fn into_storage_error(e: io::Error, path: &Path) -> StorageError {
    if e.get_ref().is_some_and(|inner| inner.is::<StorageError>()) {
        if let Some(Ok(inner)) = e.into_inner().map(|b| b.downcast::<StorageError>()) {
            return *inner;
        }
        return StorageError::io(path, io::Error::other("blob read failed"));
    }
    StorageError::io(path, e)
}

/// A blob file just created by [`Inner::new_file`].
pub(crate) struct NewFile {
    pub number: u64,
    pub path: PathBuf,
    pub file: Box<dyn WritableFile>,
    /// Its length, shared with [`BlobStore::files`].
    pub len: Arc<AtomicU64>,
}

impl Inner {
    pub fn path(&self, file: u64) -> PathBuf {
        names::blob(&self.dir, file)
    }

    pub fn pin(self: &Arc<Self>, file: u64) -> BlobPin {
        *self.state.lock().pins.entry(file).or_insert(0) += 1;
        BlobPin { inner: self.clone(), file }
    }

    /// A file no longer appended to.
    pub fn deactivate(&self, file: u64) {
        if let Some(e) = self.state.lock().files.get_mut(&file) {
            e.active = false;
            // Maps made while it grew may be shorter than it now is.
            e.map = None;
        }
    }

    /// Creates a new blob file: its header written and synced, then its name (the directory synced), whatever
    /// [`BlobOptions::sync`] says, so that a file holding anything after its header has a durable header.
    /// The file is marked active. Returns its number, path, handle and length counter.
    pub fn new_file(&self) -> Result<NewFile, StorageError> {
        let len = Arc::new(AtomicU64::new(0));
        let number = {
            let mut st = self.state.lock();
            let number = st.next_number;
            st.next_number += 1;
            st.files.insert(number, FileEntry { len: len.clone(), active: true, map: None });
            number
        };
        let path = self.path(number);
        let created = (|| {
            let mut file = self.storage.create(&path).map_err(|e| StorageError::io(&path, e))?;
            file.append(&file_header()).and_then(|()| file.sync()).map_err(|e| StorageError::io(&path, e))?;
            self.storage.sync_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
            Ok(file)
        })();
        match created {
            Ok(file) => {
                len.store(BLOB_FILE_HEADER_LEN as u64, Ordering::Release);
                Ok(NewFile { number, path, file, len })
            }
            Err(e) => {
                // Left behind (if created at all) as a file with no blob; not tracked, removed at no point.
                self.state.lock().files.remove(&number);
                let _ = self.storage.remove(&path);
                Err(e)
            }
        }
    }

    /// Appends a small blob, framed by its writer, to the shared file (starting a new one when there is
    /// none, or it is full or failed), and waits until it is synced if the options say so.
    pub fn append_small(
        self: &Arc<Self>,
        framed: &mut [u8],
        chunk_size: u32,
        len: u64,
        chunks_crc: u32,
    ) -> Result<(BlobRef, BlobPin), StorageError> {
        let (shared, pin) = match self.shared_pinned() {
            Some(current) => current,
            None => self.roll_shared()?,
        };
        let (offset, end) = shared.append(framed, chunk_size, len, chunks_crc)?;
        if self.options.sync {
            shared.sync_to(end)?;
        }
        Ok((BlobRef { file: shared.number, offset, len }, pin))
    }

    /// The shared file to append to, unless there is none or it is full or failed, pinned in the same step
    /// (under the state lock): a file sealed or rolled meanwhile can then never be removed under the append.
    fn shared_pinned(self: &Arc<Self>) -> Option<(Arc<SharedFile>, BlobPin)> {
        let mut st = self.state.lock();
        let shared = st.shared.clone().filter(|s| !s.is_full(self.options.file_size))?;
        *st.pins.entry(shared.number).or_insert(0) += 1;
        drop(st);
        let pin = BlobPin { inner: self.clone(), file: shared.number };
        Some((shared, pin))
    }

    /// Starts a new shared file if the current one is missing, full or failed (one writer at a time does);
    /// the file to append to, pinned.
    fn roll_shared(self: &Arc<Self>) -> Result<(Arc<SharedFile>, BlobPin), StorageError> {
        let _rolling = self.roll.lock();
        if let Some(current) = self.shared_pinned() {
            return Ok(current);
        }
        let f = self.new_file()?;
        let fresh = Arc::new(SharedFile::new(f.number, f.path, f.file, f.len));
        let mut st = self.state.lock();
        if let Some(old) = st.shared.replace(fresh.clone()) {
            if let Some(e) = st.files.get_mut(&old.number) {
                e.active = false;
            }
        }
        *st.pins.entry(fresh.number).or_insert(0) += 1;
        drop(st);
        let pin = BlobPin { inner: self.clone(), file: fresh.number };
        Ok((fresh, pin))
    }

    /// Ends appends to the shared file if it is `file`; see [`BlobStore::seal_shared`].
    pub fn seal_shared(&self, file: u64) -> bool {
        let _rolling = self.roll.lock();
        let mut st = self.state.lock();
        if st.shared.as_ref().is_none_or(|s| s.number != file) {
            return false;
        }
        st.shared = None;
        if let Some(e) = st.files.get_mut(&file) {
            e.active = false;
        }
        true
    }

    /// The file mapped, from the cache if the cached map holds at least `min_len` bytes (or the file is no
    /// longer growing), else mapped again.
    pub fn map(&self, file: u64, min_len: u64) -> Result<Arc<dyn MappedFile>, StorageError> {
        {
            let st = self.state.lock();
            // A map made while the file was shorter serves only reads it covers, whether or not the file is
            // still appended to.
            if let Some(map) = st.files.get(&file).and_then(|e| {
                let map = e.map.as_ref()?;
                (map.bytes().len() as u64 >= min_len).then(|| map.clone())
            }) {
                return Ok(map);
            }
        }
        let path = self.path(file);
        let map = self.storage.map(&path).map_err(|e| StorageError::io(&path, e))?;
        if let Some(e) = self.state.lock().files.get_mut(&file) {
            e.map = Some(map.clone());
        }
        Ok(map)
    }

    /// The file mapped afresh, and how many of its bytes to look at: for a file being appended to, only what
    /// was appended when the map was made (an append in flight may be partly written).
    pub fn fresh_map(&self, file: u64) -> Result<(Arc<dyn MappedFile>, usize), StorageError> {
        let (active, appended) = {
            let st = self.state.lock();
            st.files.get(&file).map_or((false, 0), |e| (e.active, e.len.load(Ordering::Acquire)))
        };
        let map = self.map(file, appended)?;
        let len = map.bytes().len();
        let limit = if active { len.min(usize::try_from(appended).unwrap_or(usize::MAX)) } else { len };
        Ok((map, limit))
    }

    /// Whether the store knows a file of this number (it was not removed).
    pub fn has_file(&self, file: u64) -> bool {
        self.state.lock().files.contains_key(&file)
    }
}
