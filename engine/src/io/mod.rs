//! The I/O seam: every byte the engine reads or writes goes through a [`Storage`].
//!
//! [`FsStorage`] is the real file system (tables are read through `mmap`); [`MemStorage`] keeps files in
//! memory, remembers what was synced (bytes per file, names per directory), simulates power cuts that drop,
//! tear or garble what was not, and fails chosen operations with EIO or ENOSPC.

mod fs;
mod mem;
mod overlay;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use fs::FsStorage;
pub use mem::{CrashMode, FaultKind, FaultOp, MemStorage};
pub(crate) use overlay::OverlayStorage;

/// A file system as the engine uses it: files written front to back (some with zeroed space reserved ahead
/// of the writes), whole-file reads, read-only maps, renames and directory syncs.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates (or truncates) a file for appending.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Opens an existing file to write from byte `at` on: what lies past `at` (zeroed space reserved by
    /// [`WritableFile::reserve`]) is overwritten by the appends.
    fn reopen(&self, path: &Path, at: u64) -> io::Result<Box<dyn WritableFile>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Maps a whole file read-only. The file must not change while mapped.
    fn map(&self, path: &Path) -> io::Result<Arc<dyn MappedFile>>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Shortens a file to `len` bytes and syncs it.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (creating it), held until the returned guard drops.
    /// Fails with [`io::ErrorKind::WouldBlock`] if another owner holds it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn FileLock>>;

    /// The length of a file in bytes. The default maps it.
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(self.map(path)?.bytes().len() as u64)
    }

    /// Makes `to` (which must not exist) a file with the bytes of `from`, a file that never changes again:
    /// a hard link where the storage has them, else a copy, synced. The new name is durable after
    /// [`sync_dir`](Self::sync_dir). The default copies.
    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        copy_file(self, from, to)
    }
}

/// Copies `from` to a new file `to` through `storage`, synced.
fn copy_file<S: Storage + ?Sized>(storage: &S, from: &Path, to: &Path) -> io::Result<()> {
    let bytes = storage.read(from)?;
    let mut f = storage.create(to)?;
    f.append(&bytes)?;
    f.sync()
}

/// A file open for writing front to back.
pub trait WritableFile: Send + Sync {
    /// Writes `data` where the last write ended (handed to the operating system before returning, not
    /// necessarily durable).
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Extends the file with zero bytes to `len` bytes if it is shorter, without moving where the next
    /// append goes (`ftruncate`; a sparse extension where the file system allows). The new length is durable
    /// after the next [`sync`](Self::sync). Appends into reserved space do not change the file's length, so
    /// their syncs need not write it.
    fn reserve(&mut self, len: u64) -> io::Result<()>;
    /// Makes everything appended so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Asks the operating system to start writing what was appended so far to the disk, without waiting
    /// and without making anything durable, so that a later [`sync`](Self::sync) has less left to wait
    /// for (`sync_file_range(SYNC_FILE_RANGE_WRITE)` on Linux). A hint: the default does nothing.
    fn start_writeback(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Writes zeros over `len` bytes of reserved space from `offset` (inside the file's length, past
    /// where the next append goes), without moving where the next append goes. The file's bytes do not
    /// change, as reserved space reads as zeros; but the file system allocates its blocks now, with the next
    /// [`sync`](Self::sync), so that the appends that later land there allocate nothing and their syncs
    /// write no metadata. A hint: the default does nothing.
    fn fill_zeros(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
}

/// The bytes of a file mapped read-only.
pub trait MappedFile: Send + Sync {
    /// The whole file.
    fn bytes(&self) -> &[u8];
}

/// A held directory lock; dropping it releases the lock.
pub trait FileLock: Send + Sync {}
