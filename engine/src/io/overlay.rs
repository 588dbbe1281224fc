//! A copy-on-write view of another [`Storage`]: reads come from the base until a file is created, written
//! to, truncated, renamed or removed through the overlay; from then on that file lives in memory. Nothing
//! ever reaches the base, so opening a database through an overlay (as `cairn check` does, to replay the WAL
//! and read collections) leaves the directory exactly as it was. Locks are taken in memory only: the
//! caller holds the base's lock.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FileLock, MappedFile, MemStorage, Storage, WritableFile};

#[derive(Debug, Default)]
struct Layer {
    /// Files whose content lives in `upper`.
    copied: HashSet<PathBuf>,
    /// Files of the base removed (or renamed away) through the overlay.
    removed: HashSet<PathBuf>,
}

/// Reads from `base`, keeps every change in memory.
#[derive(Debug)]
pub(crate) struct OverlayStorage {
    base: Arc<dyn Storage>,
    upper: MemStorage,
    layer: Mutex<Layer>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl OverlayStorage {
    pub fn new(base: Arc<dyn Storage>) -> Self {
        Self { base, upper: MemStorage::new(), layer: Mutex::new(Layer::default()) }
    }

    fn ensure_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(dir) => self.upper.create_dir_all(dir),
            None => Ok(()),
        }
    }

    /// Copies a base file into memory, once, before it is changed.
    fn bring_up(&self, layer: &mut Layer, path: &Path) -> io::Result<()> {
        if layer.copied.contains(path) {
            return Ok(());
        }
        if layer.removed.contains(path) {
            return Err(not_found(path));
        }
        let data = self.base.read(path)?;
        self.ensure_parent(path)?;
        let mut f = self.upper.create(path)?;
        f.append(&data)?;
        f.sync()?;
        layer.copied.insert(path.to_path_buf());
        Ok(())
    }
}

impl Storage for OverlayStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.upper.create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut layer = self.layer.lock();
        self.ensure_parent(path)?;
        let f = self.upper.create(path)?;
        layer.copied.insert(path.to_path_buf());
        layer.removed.remove(path);
        Ok(f)
    }

    fn reopen(&self, path: &Path, at: u64) -> io::Result<Box<dyn WritableFile>> {
        let mut layer = self.layer.lock();
        self.bring_up(&mut layer, path)?;
        self.upper.reopen(path, at)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let layer = self.layer.lock();
        if layer.copied.contains(path) {
            return self.upper.read(path);
        }
        if layer.removed.contains(path) {
            return Err(not_found(path));
        }
        drop(layer);
        self.base.read(path)
    }

    fn map(&self, path: &Path) -> io::Result<Arc<dyn MappedFile>> {
        let layer = self.layer.lock();
        if layer.copied.contains(path) {
            return self.upper.map(path);
        }
        if layer.removed.contains(path) {
            return Err(not_found(path));
        }
        drop(layer);
        self.base.map(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut layer = self.layer.lock();
        self.bring_up(&mut layer, from)?;
        self.ensure_parent(to)?;
        self.upper.rename(from, to)?;
        layer.copied.remove(from);
        layer.removed.insert(from.to_path_buf());
        layer.copied.insert(to.to_path_buf());
        layer.removed.remove(to);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut layer = self.layer.lock();
        if layer.copied.remove(path) {
            self.upper.remove(path)?;
        } else if layer.removed.contains(path) || !self.base.exists(path)? {
            return Err(not_found(path));
        }
        layer.removed.insert(path.to_path_buf());
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut layer = self.layer.lock();
        self.bring_up(&mut layer, path)?;
        self.upper.truncate(path, len)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let layer = self.layer.lock();
        let mut names: Vec<String> = match self.base.list(dir) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.upper.exists(dir)? => Vec::new(),
            Err(e) => return Err(e),
        };
        names.retain(|n| !layer.removed.contains(&dir.join(n)));
        if self.upper.exists(dir)? {
            for n in self.upper.list(dir)? {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let layer = self.layer.lock();
        if layer.copied.contains(path) {
            return Ok(true);
        }
        if layer.removed.contains(path) {
            return Ok(false);
        }
        Ok(self.upper.exists(path)? || self.base.exists(path)?)
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn FileLock>> {
        self.upper.lock(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_stay_in_memory() {
        let base = MemStorage::new();
        let dir = Path::new("/d");
        base.create_dir_all(dir).unwrap();
        let mut a = base.create(&dir.join("a")).unwrap();
        a.append(b"base").unwrap();
        base.create(&dir.join("b")).unwrap();
        let overlay = OverlayStorage::new(Arc::new(base.clone()));
        overlay.reopen(&dir.join("a"), 4).unwrap().append(b"+more").unwrap();
        assert_eq!(overlay.read(&dir.join("a")).unwrap(), b"base+more");
        overlay.truncate(&dir.join("a"), 2).unwrap();
        assert_eq!(overlay.map(&dir.join("a")).unwrap().bytes(), b"ba");
        overlay.create(&dir.join("c")).unwrap().append(b"new").unwrap();
        overlay.rename(&dir.join("c"), &dir.join("d")).unwrap();
        overlay.remove(&dir.join("b")).unwrap();
        assert!(overlay.remove(&dir.join("b")).is_err());
        let mut names = overlay.list(dir).unwrap();
        names.sort();
        assert_eq!(names, ["a", "d"]);
        assert!(!overlay.exists(&dir.join("b")).unwrap() && overlay.exists(&dir.join("d")).unwrap());
        // The base is untouched.
        assert_eq!(base.read(&dir.join("a")).unwrap(), b"base");
        let mut names = base.list(dir).unwrap();
        names.sort();
        assert_eq!(names, ["a", "b"]);
    }
}
