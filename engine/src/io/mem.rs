//! Files in memory, for tests and fuzzing, with crashes and injected faults, in the spirit of SQLite's
//! crash VFS and LevelDB's fault-injection environment.
//!
//! It keeps what was synced apart from what was only written: for every file the bytes made durable by
//! its last `sync` (a prefix, and the zeroed space reserved up to the synced length), and for the directory
//! the set of names made durable by the last `sync_dir` (creations, renames and removals since then may be
//! undone by a crash). [`MemStorage::crash`] returns the state a machine would find after a power cut, with
//! each file's unsynced writes dropped, torn (a random part kept) or garbled (their length kept, some bytes
//! random). Chosen operations can fail with EIO or ENOSPC.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FileLock, MappedFile, Storage, WritableFile};

/// An operation that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// `WritableFile::append` and `WritableFile::reserve`.
    Write,
    /// `WritableFile::sync`.
    Sync,
    /// `Storage::rename`.
    Rename,
    /// `Storage::create` and `Storage::reopen`.
    Create,
    /// `Storage::sync_dir`.
    SyncDir,
}

/// How an injected failure reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// An I/O error (`EIO`).
    Eio,
    /// No space left on the device (`ENOSPC`).
    NoSpace,
}

impl FaultKind {
    fn error(self, op: FaultOp) -> io::Error {
        match self {
            FaultKind::Eio => io::Error::other(format!("injected EIO on {op:?}")),
            FaultKind::NoSpace => io::Error::new(io::ErrorKind::StorageFull, format!("injected ENOSPC on {op:?}")),
        }
    }
}

/// What a crash does to the bytes a file had not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Unsynced bytes are lost.
    Drop,
    /// A random prefix of the unsynced bytes survives (a torn write).
    Tear,
    /// The unsynced bytes survive in length but some are random (a garbled sector).
    Garble,
    /// Each file independently: drop, tear, garble, or keep everything.
    Mixed,
}

#[derive(Debug, Default)]
struct File {
    /// The bytes as the running process sees them.
    data: Vec<u8>,
    /// `data[..synced]` is durable as it is.
    synced: usize,
    /// The length the last sync made durable: bytes `synced..durable_len` were zeroed space reserved
    /// ([`WritableFile::reserve`]) when synced, and read as zeros after a crash unless unsynced writes over
    /// them survive it.
    durable_len: usize,
    /// Where the last write ended: `data[written..]` is reserved space no write has reached.
    written: usize,
}

impl File {
    /// Writes `bytes` at `at`, over reserved zeros or past the end. Rewriting bytes that are not zero is
    /// refused: the engine never rewrites what it wrote, and the crash model would not know their old value.
    fn write_at(&mut self, at: usize, bytes: &[u8]) -> io::Result<()> {
        let end = at + bytes.len();
        let overlap = self.data.get(at..end.min(self.data.len())).unwrap_or_default();
        if at > self.data.len() || overlap.iter().any(|&b| b != 0) {
            return Err(io::Error::other("MemStorage writes only over reserved zeros or at the end of a file"));
        }
        if end > self.data.len() {
            self.data.resize(end, 0);
        }
        if let Some(dst) = self.data.get_mut(at..end) {
            dst.copy_from_slice(bytes);
        }
        self.synced = self.synced.min(at);
        self.written = self.written.max(end);
        Ok(())
    }

    fn sync(&mut self) {
        self.synced = self.data.len();
        self.durable_len = self.data.len();
    }

    /// What a power cut leaves of this file, its unsynced writes treated by `mode` (not `Mixed`). A tear or a
    /// garble lands among the bytes written since the last sync, not in the reserved zeros after them (which
    /// no write reached and which read as zeros or not at all), so that a file with megabytes reserved ahead
    /// of a few hundred written bytes still gets its records torn.
    fn crashed(&self, mode: CrashMode, rng: &mut Rng) -> File {
        let synced = self.synced.min(self.data.len());
        let mut data = self.data.get(..synced).unwrap_or_default().to_vec();
        let tail = self.data.get(synced..self.written.clamp(synced, self.data.len())).unwrap_or_default();
        match mode {
            CrashMode::Drop => {}
            CrashMode::Tear => {
                let keep = rng.below(tail.len() as u64 + 1) as usize;
                data.extend_from_slice(tail.get(..keep).unwrap_or_default());
            }
            CrashMode::Garble => {
                let mut t = tail.to_vec();
                let n = t.len() as u64;
                for _ in 0..rng.below(8) + 1 {
                    if let Some(b) = t.get_mut(rng.below(n) as usize) {
                        *b = rng.next() as u8;
                    }
                }
                data.extend_from_slice(&t);
            }
            // Everything written reached the disk.
            CrashMode::Mixed => data.extend_from_slice(tail),
        }
        let written = data.len();
        // Reserved space that was synced stays, as zeros where no write over it survived.
        if data.len() < self.durable_len {
            data.resize(self.durable_len, 0);
        }
        let len = data.len();
        File { data, synced: len, durable_len: len, written }
    }
}

type Node = Arc<Mutex<File>>;

#[derive(Debug, Default)]
struct State {
    /// Names as the running process sees them.
    live: BTreeMap<PathBuf, Node>,
    /// Names as a crash would leave them, per directory: updated by `sync_dir`.
    durable: BTreeMap<PathBuf, Node>,
    dirs: Vec<PathBuf>,
    locks: Vec<PathBuf>,
    /// Remaining successful calls before the operation fails, and how.
    faults: HashMap<FaultOp, (u64, FaultKind)>,
    /// Calls of `start_writeback`, by file.
    writebacks: BTreeMap<PathBuf, u64>,
    /// Ranges `fill_zeros` was asked to write, by file.
    zero_fills: BTreeMap<PathBuf, Vec<(u64, u64)>>,
}

/// An in-memory file system for tests, with simulated power cuts and injected I/O errors. Clones share the
/// same files.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    state: Arc<Mutex<State>>,
    ops: Arc<AtomicU64>,
}

/// A small deterministic generator, so that crashes are reproducible from a seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

impl MemStorage {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the operation fail (with `kind`) after `after` more successful calls, once; later calls
    /// succeed again unless re-armed.
    pub fn fail(&self, op: FaultOp, after: u64, kind: FaultKind) {
        self.state.lock().faults.insert(op, (after, kind));
    }

    /// Disarms every pending failure.
    pub fn heal(&self) {
        self.state.lock().faults.clear();
    }

    /// Number of write, sync, create, rename and directory-sync calls so far.
    pub fn operations(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    fn check(&self, op: FaultOp) -> io::Result<()> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock();
        if let Some((left, kind)) = state.faults.get_mut(&op) {
            if *left == 0 {
                let kind = *kind;
                state.faults.remove(&op);
                return Err(kind.error(op));
            }
            *left -= 1;
        }
        Ok(())
    }

    /// The file system a reboot after a power cut would find, chosen by `seed`: names as of each
    /// directory's last sync, and every file's unsynced tail treated by `mode`. No locks are held in it.
    ///
    /// The cut is one instant even while other threads write: every file is locked before any is copied, so
    /// no write or sync lands in some files of the image and not in others.
    pub fn crash(&self, seed: u64, mode: CrashMode) -> MemStorage {
        let state = self.state.lock();
        let mut rng = Rng(seed | 1);
        // A file's durable bytes are the same whichever name reaches it: lock each file once, in name order.
        let mut files: HashMap<*const Mutex<File>, parking_lot::MutexGuard<'_, File>> = HashMap::new();
        let mut order = Vec::new();
        for node in state.durable.values() {
            if let std::collections::hash_map::Entry::Vacant(e) = files.entry(Arc::as_ptr(node)) {
                e.insert(node.lock());
                order.push(Arc::as_ptr(node));
            }
        }
        let mut decided: HashMap<*const Mutex<File>, Node> = HashMap::new();
        for ptr in order {
            let mode = match mode {
                CrashMode::Mixed => {
                    [CrashMode::Drop, CrashMode::Tear, CrashMode::Garble, CrashMode::Mixed][rng.below(4) as usize]
                }
                m => m,
            };
            if let Some(file) = files.get(&ptr) {
                decided.insert(ptr, Arc::new(Mutex::new(file.crashed(mode, &mut rng))));
            }
        }
        drop(files);
        let durable: BTreeMap<PathBuf, Node> = state
            .durable
            .iter()
            .filter_map(|(path, node)| Some((path.clone(), decided.get(&Arc::as_ptr(node))?.clone())))
            .collect();
        let next = State {
            live: durable.clone(),
            durable,
            dirs: state.dirs.clone(),
            locks: Vec::new(),
            faults: HashMap::new(),
            writebacks: BTreeMap::new(),
            zero_fills: BTreeMap::new(),
        };
        MemStorage { state: Arc::new(Mutex::new(next)), ops: Arc::new(AtomicU64::new(0)) }
    }

    /// The simplest power cut: every file cut back to its synced bytes, names as of the last directory sync.
    pub fn crash_image(&self) -> MemStorage {
        self.crash(1, CrashMode::Drop)
    }

    /// Replaces the byte at `offset` of `path` by `f(byte)`; for corruption tests.
    pub fn mutate_byte(&self, path: &Path, offset: usize, f: impl FnOnce(u8) -> u8) -> io::Result<()> {
        let node = self.node(path)?;
        let mut file = node.lock();
        let b = file.data.get_mut(offset).ok_or_else(|| io::Error::other("offset past end"))?;
        *b = f(*b);
        Ok(())
    }

    /// How many times writing `path` back was asked for ([`WritableFile::start_writeback`]), a hint this
    /// file system only counts.
    pub fn writebacks(&self, path: &Path) -> u64 {
        self.state.lock().writebacks.get(path).copied().unwrap_or(0)
    }

    /// The ranges `(offset, len)` of `path` that [`WritableFile::fill_zeros`] was asked to write, a hint this
    /// file system checks (reserved zeros past the append position, inside the file) and records.
    pub fn zero_fills(&self, path: &Path) -> Vec<(u64, u64)> {
        self.state.lock().zero_fills.get(path).cloned().unwrap_or_default()
    }

    /// Every live file and its length.
    pub fn files(&self) -> Vec<(PathBuf, usize)> {
        self.state.lock().live.iter().map(|(p, n)| (p.clone(), n.lock().data.len())).collect()
    }

    fn node(&self, path: &Path) -> io::Result<Node> {
        self.state.lock().live.get(path).cloned().ok_or_else(|| not_found(path))
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

struct FaultFile {
    node: Node,
    fs: MemStorage,
    path: PathBuf,
    /// Where the next append goes.
    at: usize,
}

impl WritableFile for FaultFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if let Err(e) = self.fs.check(FaultOp::Write) {
            // A failed write may still have put part of its bytes in the page cache.
            let part = data.get(..data.len() / 2).unwrap_or_default();
            self.node.lock().write_at(self.at, part)?;
            return Err(e);
        }
        self.node.lock().write_at(self.at, data)?;
        self.at += data.len();
        Ok(())
    }

    fn reserve(&mut self, len: u64) -> io::Result<()> {
        self.fs.check(FaultOp::Write)?;
        let mut f = self.node.lock();
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if f.data.len() < len {
            f.data.resize(len, 0);
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.fs.check(FaultOp::Sync)?;
        self.node.lock().sync();
        Ok(())
    }

    fn start_writeback(&mut self) -> io::Result<()> {
        *self.fs.state.lock().writebacks.entry(self.path.clone()).or_default() += 1;
        Ok(())
    }

    fn fill_zeros(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let (start, end) = (usize::try_from(offset).map_err(io::Error::other)?, offset.saturating_add(len));
        let end = usize::try_from(end).map_err(io::Error::other)?;
        let reserved = {
            let f = self.node.lock();
            start >= self.at && f.data.get(start..end).is_some_and(|r| r.iter().all(|&b| b == 0))
        };
        if !reserved {
            return Err(io::Error::other("fill_zeros outside the reserved zeros past the append position"));
        }
        self.fs.state.lock().zero_fills.entry(self.path.clone()).or_default().push((offset, len));
        Ok(())
    }
}

struct Snapshot(Vec<u8>);

impl MappedFile for Snapshot {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

struct Lock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl FileLock for Lock {}

impl Drop for Lock {
    fn drop(&mut self) {
        self.state.lock().locks.retain(|p| *p != self.path);
    }
}

impl Storage for MemStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        for d in dir.ancestors() {
            if !state.dirs.iter().any(|x| x == d) {
                state.dirs.push(d.to_path_buf());
            }
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        self.check(FaultOp::Create)?;
        let node = Node::default();
        let mut state = self.state.lock();
        if !path.parent().is_some_and(|p| state.dirs.iter().any(|d| d == p)) {
            return Err(not_found(path));
        }
        state.live.insert(path.to_path_buf(), node.clone());
        Ok(Box::new(FaultFile { node, fs: self.clone(), path: path.to_path_buf(), at: 0 }))
    }

    fn reopen(&self, path: &Path, at: u64) -> io::Result<Box<dyn WritableFile>> {
        self.check(FaultOp::Create)?;
        let at = usize::try_from(at).map_err(io::Error::other)?;
        Ok(Box::new(FaultFile { node: self.node(path)?, fs: self.clone(), path: path.to_path_buf(), at }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.node(path)?.lock().data.clone())
    }

    fn map(&self, path: &Path) -> io::Result<Arc<dyn MappedFile>> {
        Ok(Arc::new(Snapshot(self.read(path)?)))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(self.node(path)?.lock().data.len() as u64)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(FaultOp::Rename)?;
        let mut state = self.state.lock();
        let node = state.live.remove(from).ok_or_else(|| not_found(from))?;
        state.live.insert(to.to_path_buf(), node);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.state.lock().live.remove(path).map(drop).ok_or_else(|| not_found(path))
    }

    /// A hard link: the same file under a second name (durable after a sync of its directory).
    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(FaultOp::Create)?;
        let mut state = self.state.lock();
        let node = state.live.get(from).cloned().ok_or_else(|| not_found(from))?;
        if state.live.contains_key(to) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", to.display())));
        }
        state.live.insert(to.to_path_buf(), node);
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let node = self.node(path)?;
        let mut f = node.lock();
        f.data.truncate(len as usize);
        f.written = f.written.min(f.data.len());
        f.sync();
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock();
        if !state.dirs.iter().any(|d| d == dir) {
            return Err(not_found(dir));
        }
        Ok(state
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.state.lock();
        Ok(state.live.contains_key(path) || state.dirs.iter().any(|d| d == path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(FaultOp::SyncDir)?;
        let mut state = self.state.lock();
        let in_dir = |p: &Path| p.parent() == Some(dir);
        state.durable.retain(|p, _| !in_dir(p));
        let entries: Vec<_> =
            state.live.iter().filter(|(p, _)| in_dir(p)).map(|(p, n)| (p.clone(), n.clone())).collect();
        state.durable.extend(entries);
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn FileLock>> {
        let mut state = self.state.lock();
        if state.locks.iter().any(|p| p == path) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "lock held by another owner"));
        }
        state.locks.push(path.to_path_buf());
        Ok(Box::new(Lock { state: self.state.clone(), path: path.to_path_buf() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_names_and_bytes_do_not_survive_a_crash() {
        let fs = MemStorage::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut a = fs.create(&dir.join("a")).unwrap();
        a.append(b"synced").unwrap();
        a.sync().unwrap();
        fs.sync_dir(dir).unwrap();
        a.append(b" tail").unwrap();
        let mut b = fs.create(&dir.join("b")).unwrap();
        b.append(b"x").unwrap();
        b.sync().unwrap();
        let crashed = fs.crash(1, CrashMode::Drop);
        assert_eq!(crashed.read(&dir.join("a")).unwrap(), b"synced");
        assert!(crashed.read(&dir.join("b")).is_err(), "b's name was never synced into the directory");
        for seed in 0..50 {
            let torn = fs.crash(seed, CrashMode::Tear).read(&dir.join("a")).unwrap();
            assert!(b"synced tail".starts_with(&torn) && torn.len() >= 6);
            let garbled = fs.crash(seed, CrashMode::Garble).read(&dir.join("a")).unwrap();
            assert_eq!((garbled.len(), &garbled[..6]), (11, &b"synced"[..]));
        }
        // A rename is durable only after the directory is synced.
        fs.rename(&dir.join("a"), &dir.join("c")).unwrap();
        assert!(fs.crash(1, CrashMode::Drop).read(&dir.join("a")).is_ok());
        fs.sync_dir(dir).unwrap();
        assert!(fs.crash(1, CrashMode::Drop).read(&dir.join("c")).is_ok());
    }

    /// Reserved space made durable by a sync stays, as zeros, whatever a crash does to the unsynced writes
    /// over it; reserved space not yet synced may vanish.
    #[test]
    fn reserved_space_survives_a_crash_as_zeros() {
        let fs = MemStorage::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let path = dir.join("w");
        let mut f = fs.create(&path).unwrap();
        f.append(b"head").unwrap();
        f.reserve(64).unwrap();
        fs.sync_dir(dir).unwrap();
        assert_eq!(fs.crash_image().read(&path).unwrap(), b"", "neither the bytes nor the length were synced");
        f.sync().unwrap();
        let mut durable = b"head".to_vec();
        durable.resize(64, 0);
        assert_eq!(fs.crash_image().read(&path).unwrap(), durable);
        f.append(b" more").unwrap();
        f.reserve(128).unwrap();
        assert_eq!(fs.read(&path).unwrap().len(), 128);
        assert_eq!(fs.read(&path).unwrap().get(..9), Some(&b"head more"[..]), "appends go where the last ended");
        for seed in 0..50 {
            for mode in [CrashMode::Drop, CrashMode::Tear, CrashMode::Garble, CrashMode::Mixed] {
                let after = fs.crash(seed, mode).read(&path).unwrap();
                assert_eq!(after.get(..4), Some(&b"head"[..]), "{mode:?} {seed}");
                assert!(after.len() >= 64, "{mode:?} {seed}: synced reserved space is kept");
                if mode == CrashMode::Drop {
                    assert_eq!(after, durable);
                }
                if mode == CrashMode::Tear {
                    let written = after.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                    assert!(b"head more".starts_with(after.get(..written).unwrap()), "{seed}: {after:?}");
                }
            }
        }
        // Reopened at a length, a file is written from there, over zeros only.
        f.sync().unwrap();
        let mut g = fs.reopen(&path, 9).unwrap();
        g.append(b"!").unwrap();
        assert_eq!(fs.read(&path).unwrap().get(..10), Some(&b"head more!"[..]));
        let mut h = fs.reopen(&path, 2).unwrap();
        assert!(h.append(b"x").is_err(), "rewriting written bytes is outside the model");
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let fs = MemStorage::new();
        let l = fs.lock(Path::new("/LOCK")).unwrap();
        assert_eq!(fs.lock(Path::new("/LOCK")).err().map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
        drop(l);
        assert!(fs.lock(Path::new("/LOCK")).is_ok());
    }

    #[test]
    fn chosen_operations_fail_once() {
        let fs = MemStorage::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut f = fs.create(Path::new("/d/f")).unwrap();
        fs.fail(FaultOp::Sync, 1, FaultKind::NoSpace);
        f.append(b"1").unwrap();
        f.sync().unwrap();
        let err = f.sync().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        f.sync().unwrap();
        fs.fail(FaultOp::Write, 0, FaultKind::Eio);
        assert!(f.append(b"22").is_err());
        assert!(fs.operations() >= 5);
    }
}
