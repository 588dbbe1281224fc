//! Files in memory, with a record of what was synced.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FileLock, MappedFile, Storage, WritableFile};

#[derive(Debug, Default)]
struct MemFile {
    data: Vec<u8>,
    synced_len: usize,
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<PathBuf, Arc<Mutex<MemFile>>>,
    dirs: HashSet<PathBuf>,
    locks: HashSet<PathBuf>,
}

/// An in-memory file system for tests. Clones share the same files.
///
/// [`MemStorage::crash_image`] returns what a machine would find after power loss: every file cut back to the
/// bytes that were synced.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    state: Arc<Mutex<State>>,
}

impl MemStorage {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// A separate file system holding only the synced prefix of every file, with no locks held: the state a
    /// reopened process would see after a power cut.
    pub fn crash_image(&self) -> MemStorage {
        let state = self.state.lock();
        // Hold every file at once so the image is one instant: a writer still running must not sync one file
        // between our copies of two others. Writers lock one file at a time, so this cannot deadlock.
        let guards: Vec<_> = state.files.iter().map(|(p, f)| (p.clone(), f.lock())).collect();
        let files = guards
            .iter()
            .map(|(p, f)| {
                let data = f.data.get(..f.synced_len).unwrap_or_default().to_vec();
                (p.clone(), Arc::new(Mutex::new(MemFile { synced_len: data.len(), data })))
            })
            .collect();
        drop(guards);
        MemStorage { state: Arc::new(Mutex::new(State { files, dirs: state.dirs.clone(), locks: HashSet::new() })) }
    }

    /// Replaces the byte at `offset` of `path` by `f(byte)`; for corruption tests.
    pub fn mutate_byte(&self, path: &Path, offset: usize, f: impl FnOnce(u8) -> u8) -> io::Result<()> {
        let file = self.file(path)?;
        let mut file = file.lock();
        let byte = file.data.get_mut(offset).ok_or_else(|| io::Error::other("offset past end"))?;
        *byte = f(*byte);
        Ok(())
    }

    fn file(&self, path: &Path) -> io::Result<Arc<Mutex<MemFile>>> {
        self.state.lock().files.get(path).cloned().ok_or_else(|| not_found(path))
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

struct MemWritable(Arc<Mutex<MemFile>>);

impl WritableFile for MemWritable {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.lock().data.extend_from_slice(data);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut f = self.0.lock();
        f.synced_len = f.data.len();
        Ok(())
    }
}

struct MemMapped(Vec<u8>);

impl MappedFile for MemMapped {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

struct MemLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl FileLock for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        self.state.lock().locks.remove(&self.path);
    }
}

impl Storage for MemStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        for d in dir.ancestors() {
            state.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut state = self.state.lock();
        if !path.parent().is_some_and(|p| state.dirs.contains(p)) {
            return Err(not_found(path));
        }
        let file = Arc::new(Mutex::new(MemFile::default()));
        state.files.insert(path.to_path_buf(), file.clone());
        Ok(Box::new(MemWritable(file)))
    }

    fn append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(MemWritable(self.file(path)?)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.file(path)?.lock().data.clone())
    }

    fn map(&self, path: &Path) -> io::Result<Arc<dyn MappedFile>> {
        Ok(Arc::new(MemMapped(self.read(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        let file = state.files.remove(from).ok_or_else(|| not_found(from))?;
        state.files.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.state.lock().files.remove(path).map(drop).ok_or_else(|| not_found(path))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = self.file(path)?;
        let mut f = file.lock();
        f.data.truncate(len as usize);
        f.synced_len = f.data.len();
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock();
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(state
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.state.lock();
        Ok(state.files.contains_key(path) || state.dirs.contains(path))
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn FileLock>> {
        let mut state = self.state.lock();
        if !state.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "lock held by another owner"));
        }
        Ok(Box::new(MemLock { state: self.state.clone(), path: path.to_path_buf() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_image_keeps_only_synced_bytes() {
        let fs = MemStorage::new();
        let dir = Path::new("/db");
        fs.create_dir_all(dir).unwrap();
        let mut f = fs.create(&dir.join("a")).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        f.append(b" world").unwrap();
        assert_eq!(fs.read(&dir.join("a")).unwrap(), b"hello world");
        let crashed = fs.crash_image();
        assert_eq!(crashed.read(&dir.join("a")).unwrap(), b"hello");
        assert_eq!(crashed.list(dir).unwrap(), vec!["a".to_owned()]);
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let fs = MemStorage::new();
        let l = fs.lock(Path::new("/LOCK")).unwrap();
        assert_eq!(fs.lock(Path::new("/LOCK")).err().map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
        drop(l);
        assert!(fs.lock(Path::new("/LOCK")).is_ok());
    }
}
