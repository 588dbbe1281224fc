//! The real file system.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use super::{FileLock, MappedFile, Storage, WritableFile};

/// Files on the local file system; tables are read through `mmap`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

struct FsFile(File);

impl WritableFile for FsFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }

    fn reserve(&mut self, len: u64) -> io::Result<()> {
        if self.0.metadata()?.len() < len {
            self.0.set_len(len)?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    #[cfg(unix)]
    fn fill_zeros(&mut self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        const ZEROS: [u8; 16 << 10] = [0; 16 << 10];
        let mut at = offset;
        let end = offset.saturating_add(len);
        while at < end {
            let n = (end - at).min(ZEROS.len() as u64) as usize;
            self.0.write_all_at(ZEROS.get(..n).unwrap_or_default(), at)?;
            at += n as u64;
        }
        Ok(())
    }

    #[cfg(target_os = "linux")]
    fn start_writeback(&mut self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is this open file's; offset 0 and length 0 name the whole file, and the
        // call only starts the writing of its dirty pages.
        let rc = unsafe { libc::sync_file_range(self.0.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

struct Mapped(Option<memmap2::Mmap>);

impl MappedFile for Mapped {
    fn bytes(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

struct Lock(File);

impl FileLock for Lock {}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let f = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
        Ok(Box::new(FsFile(f)))
    }

    fn reopen(&self, path: &Path, at: u64) -> io::Result<Box<dyn WritableFile>> {
        let mut f = OpenOptions::new().write(true).open(path)?;
        f.seek(SeekFrom::Start(at))?;
        Ok(Box::new(FsFile(f)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn map(&self, path: &Path) -> io::Result<Arc<dyn MappedFile>> {
        let f = File::open(path)?;
        if f.metadata()?.len() == 0 {
            return Ok(Arc::new(Mapped(None)));
        }
        // SAFETY: tables are immutable once written and are only ever removed (never modified or
        // truncated) by the engine, which owns the directory through its lock; removal keeps the
        // mapping valid on Unix.
        let map = unsafe { memmap2::Mmap::map(&f)? };
        Ok(Arc::new(Mapped(Some(map))))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    /// A hard link; a copy where the file system refuses one (another device, no hard links).
    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        match fs::hard_link(from, to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::AlreadyExists => Err(e),
            Err(_) => super::copy_file(self, from, to),
        }
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn FileLock>> {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Box::new(Lock(f))),
            Err(fs::TryLockError::WouldBlock) => {
                Err(io::Error::new(io::ErrorKind::WouldBlock, "lock held by another owner"))
            }
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_hints_are_accepted_and_lose_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        let mut file = FsStorage.create(&path).expect("create");
        file.append(&[7u8; 1 << 20]).expect("append");
        file.start_writeback().expect("the hint is accepted");
        file.append(b"tail").expect("append");
        file.start_writeback().expect("the hint is accepted");
        file.sync().expect("sync");
        let bytes = fs::read(&path).expect("read");
        assert_eq!(bytes.len(), (1 << 20) + 4);
        assert!(bytes.ends_with(b"tail") && bytes.iter().take(1 << 20).all(|b| *b == 7));
    }

    /// Zeros written over reserved space allocate its blocks and change no byte; appends still go where the
    /// last one ended.
    #[cfg(unix)]
    #[test]
    fn zeros_filled_ahead_allocate_blocks_and_change_nothing() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        let mut file = FsStorage.create(&path).expect("create");
        file.append(b"head").expect("append");
        file.reserve(1 << 20).expect("reserve");
        file.sync().expect("sync");
        let sparse = fs::metadata(&path).expect("stat").blocks();
        file.fill_zeros(4, 100_000).expect("fill");
        file.append(b"next").expect("append");
        file.sync().expect("sync");
        let meta = fs::metadata(&path).expect("stat");
        assert_eq!(meta.len(), 1 << 20);
        // 512-byte units: the 100,000 bytes filled (a file system without sparse files had them already).
        assert!(meta.blocks() >= sparse.max(100_000 / 512), "{} blocks, {sparse} before", meta.blocks());
        let bytes = fs::read(&path).expect("read");
        assert_eq!(&bytes[..8], b"headnext");
        assert!(bytes[8..].iter().all(|b| *b == 0));
    }
}
