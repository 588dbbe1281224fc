//! A FUSE file system for power-loss tests of code that uses the real file system API (Cairn's
//! `FsStorage`): everything lives in memory; per file it keeps the bytes synced by `fsync`/`fdatasync`
//! and the writes since, per directory the names synced by a directory `fsync` and the name changes since.
//! On command it *cuts the power*: from that instant every request fails with `EIO` (nothing more reaches
//! the "disk"), and it computes the image a reboot would find ([`CutMode`]: unsynced writes dropped, torn,
//! or a random subset kept; unsynced name changes dropped or a prefix kept). [`FaultFs::reboot`] then
//! unmounts, installs the image and mounts it again (fresh kernel caches), as in SQLite's crash VFS or
//! LazyFS, but in-process and without libfuse.
//!
//! Mounting uses `fuser`'s pure-Rust path: `mount(2)` of `/dev/fuse` directly, which needs root (or
//! `CAP_SYS_ADMIN`); otherwise `fuser` falls back to a `fusermount3` helper. [`FaultFs::mount_or_skip`]
//! tells "FUSE is not available here" (a reason to skip) from a real failure.
//!
//! What it cannot model: the kernel page cache is write-through here (no `writeback_cache`), so what a
//! `write` hands over is what the file system sees; writes through a shared writable `mmap` and `O_DIRECT`
//! are not modelled specially; `flock` locks are kept by the kernel (the file system does not take part);
//! a rename across directories is two separate name changes; times, modes and owners are not kept.

mod model;

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

pub use model::{CutMode, CutReport, Entry, Kind, Rng, Tree, ROOT};

/// How long the kernel may cache names and attributes. Only one process uses the mount at a time and
/// every reboot is a new mount, so caching is safe; it saves a lookup per path resolution.
const TTL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Shared {
    tree: Tree,
    /// Set by a power cut: every request fails with `EIO` until the reboot.
    frozen: bool,
    /// The image the reboot installs.
    image: Option<Tree>,
    /// What the cut did, once it happened.
    report: Option<CutReport>,
    /// A cut waiting for a mutating request: (requests to let through first, mode, seed).
    armed: Option<(u64, CutMode, u64)>,
    /// Owner reported for every inode (the mounting user).
    uid: u32,
    gid: u32,
}

struct Fs(Arc<Mutex<Shared>>);

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn attr(s: &Shared, ino: u64) -> Result<FileAttr, Errno> {
    let (kind, size) = s.tree.stat(ino)?;
    let (kind, perm, nlink) = match kind {
        Kind::File => (FileType::RegularFile, 0o666, 1),
        Kind::Dir => (FileType::Directory, 0o777, 2),
    };
    Ok(FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink,
        uid: s.uid,
        gid: s.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    })
}

impl Shared {
    fn cut(&mut self, mode: CutMode, seed: u64) -> CutReport {
        self.frozen = true;
        self.armed = None;
        let (image, report) = self.tree.crash_image(mode, seed);
        self.image = Some(image);
        self.report = Some(report.clone());
        report
    }
}

impl Fs {
    /// The state, or `EIO` if the power is cut.
    fn live(&self) -> Result<MutexGuard<'_, Shared>, Errno> {
        let s = lock(&self.0);
        if s.frozen {
            Err(Errno::EIO)
        } else {
            Ok(s)
        }
    }

    /// The state for a request that changes something (a write, a length change, a name change or a
    /// sync), or `EIO` if the power is cut; an armed cut happens just before its request is applied.
    fn mutate(&self) -> Result<MutexGuard<'_, Shared>, Errno> {
        let mut s = self.live()?;
        if let Some((left, mode, seed)) = s.armed {
            if left == 0 {
                s.cut(mode, seed);
                return Err(Errno::EIO);
            }
            s.armed = Some((left - 1, mode, seed));
        }
        Ok(s)
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.live().and_then(|s| {
            let ino = s.tree.lookup(parent.0, name)?;
            attr(&s, ino)
        });
        match result {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.live().and_then(|s| attr(&s, ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.mutate().and_then(|mut s| {
            if let Some(len) = size {
                s.tree.set_len(ino.0, len)?;
            }
            attr(&s, ino.0)
        });
        match result {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        let result = self.mutate().and_then(|mut s| {
            let ino = s.tree.mkdir(parent.0, name)?;
            attr(&s, ino)
        });
        match result {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.mutate().and_then(|mut s| s.tree.unlink(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.mutate().and_then(|mut s| s.tree.rmdir(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            reply.error(Errno::EINVAL);
            return;
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self.mutate().and_then(|mut s| s.tree.rename(parent.0, name, newparent.0, newname, no_replace)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.live().and_then(|s| s.tree.stat(ino.0)) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = match self.live() {
            Ok(s) => s,
            Err(e) => return reply.error(e),
        };
        match s.tree.read(ino.0, offset, size) {
            Ok(bytes) => reply.data(bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Ok(len) = u32::try_from(data.len()) else { return reply.error(Errno::EINVAL) };
        match self.mutate().and_then(|mut s| s.tree.write(ino.0, offset, data)) {
            Ok(()) => reply.written(len),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.mutate().and_then(|mut s| s.tree.sync(ino.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.live().and_then(|s| s.tree.list(ino.0).map(|_| ())) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let (parent, entries) = match self.live().and_then(|s| s.tree.list(ino.0)) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let all = [(ino.0, Kind::Dir, ".".into()), (parent, Kind::Dir, "..".into())].into_iter().chain(entries);
        for (i, (child, kind, name)) in all.enumerate().skip(usize::try_from(offset).unwrap_or(usize::MAX)) {
            let kind = if kind == Kind::Dir { FileType::Directory } else { FileType::RegularFile };
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.mutate().and_then(|mut s| s.tree.sync(ino.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        const O_EXCL: i32 = 0o200;
        const O_TRUNC: i32 = 0o1000;
        let result = self.mutate().and_then(|mut s| {
            let ino = match s.tree.lookup(parent.0, name) {
                Ok(_) if flags & O_EXCL != 0 => return Err(Errno::EEXIST),
                Ok(ino) => {
                    if flags & O_TRUNC != 0 {
                        s.tree.set_len(ino, 0)?;
                    }
                    ino
                }
                Err(_) => s.tree.create_file(parent.0, name)?,
            };
            attr(&s, ino)
        });
        match result {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted fault-injecting file system. Dropping it unmounts (lazily, if something still holds a file
/// open).
pub struct FaultFs {
    shared: Arc<Mutex<Shared>>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

impl std::fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultFs").field("mountpoint", &self.mountpoint).finish_non_exhaustive()
    }
}

/// The device FUSE mounts talk through.
pub const DEV_FUSE: &str = "/dev/fuse";

fn session(shared: &Arc<Mutex<Shared>>, mountpoint: &Path) -> io::Result<BackgroundSession> {
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("cairn-faultfs".into()), MountOption::Subtype("faultfs".into())];
    fuser::spawn_mount(Fs(shared.clone()), mountpoint, &config)
}

impl FaultFs {
    /// Mounts an empty file system (its root directory alone, durable) on the existing directory
    /// `mountpoint`.
    pub fn mount(mountpoint: impl AsRef<Path>) -> io::Result<FaultFs> {
        let mountpoint = mountpoint.as_ref().to_path_buf();
        let meta = std::fs::metadata(&mountpoint)?;
        let shared = Arc::new(Mutex::new(Shared { uid: meta.uid(), gid: meta.gid(), ..Shared::default() }));
        let session = session(&shared, &mountpoint)?;
        Ok(FaultFs { shared, session: Some(session), mountpoint })
    }

    /// Mounts as [`FaultFs::mount`] does, or, if FUSE is unavailable here (no `/dev/fuse`, or mounting is
    /// not permitted: not root and no `fusermount3` helper), prints why and returns `None`. Any other
    /// failure is an error.
    pub fn mount_or_skip(mountpoint: impl AsRef<Path>) -> io::Result<Option<FaultFs>> {
        if !Path::new(DEV_FUSE).exists() {
            eprintln!(
                "SKIPPED: {DEV_FUSE} does not exist (no FUSE support here): the FUSE power-loss test did not run"
            );
            return Ok(None);
        }
        match FaultFs::mount(mountpoint) {
            Ok(fs) => Ok(Some(fs)),
            Err(e) if matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound) => {
                eprintln!(
                    "SKIPPED: mounting a FUSE file system is not permitted here ({e}; mount(2) needs root or \
                     CAP_SYS_ADMIN, else fuser needs the fusermount3 helper): the FUSE power-loss test did not run"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power now: from this instant every request fails with `EIO`, and the image a reboot will
    /// find is drawn from what was durable and what was pending, per `mode` and `seed`.
    pub fn cut(&self, mode: CutMode, seed: u64) -> CutReport {
        lock(&self.shared).cut(mode, seed)
    }

    /// Arms a cut at a request: `after` more requests that change something (writes, length changes,
    /// creations, removals, renames, file and directory syncs) are let through, and the power is cut just
    /// before the next one is applied, as [`cut`](Self::cut) does. So the cut lands in the middle of the
    /// work: between a table's writes and its sync, between a sync and a rename.
    pub fn arm(&self, after: u64, mode: CutMode, seed: u64) {
        lock(&self.shared).armed = Some((after, mode, seed));
    }

    /// What the cut did, if the power is cut (by [`cut`](Self::cut) or an armed cut that fired).
    pub fn cut_report(&self) -> Option<CutReport> {
        lock(&self.shared).report.clone()
    }

    /// Whether anything written or renamed is not yet durable.
    pub fn has_pending(&self) -> bool {
        lock(&self.shared).tree.has_pending()
    }

    /// Restarts after a [`cut`](Self::cut): unmounts (every process using the mount must be gone), installs
    /// the image and mounts it again. Without a cut, a clean restart: the file system as it is.
    pub fn reboot(&mut self) -> io::Result<()> {
        self.unmount()?;
        {
            let mut s = lock(&self.shared);
            if let Some(image) = s.image.take() {
                s.tree = image;
            }
            s.frozen = false;
            s.armed = None;
            s.report = None;
        }
        self.session = Some(session(&self.shared, &self.mountpoint)?);
        Ok(())
    }

    /// Unmounts; if that fails (a file still open), detaches the mount lazily so none is left behind, and
    /// returns the error.
    fn unmount(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        let result = match session.umount_and_join() {
            // The unmount worked, but the kernel ended the connection as aborted rather than gone (seen
            // about once in a thousand unmounts on Linux 6.18): the session loop reports it as an error.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) && !is_mounted(&self.mountpoint) => Ok(()),
            result => result,
        };
        if result.is_err() {
            if let Ok(path) = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes()) {
                // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
        result
    }
}

/// Whether something is mounted on `path` (per `/proc/self/mounts`).
fn is_mounted(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return true };
    let path = path.to_string_lossy().replace(' ', "\\040");
    mounts.lines().any(|line| line.split(' ').nth(1) == Some(path.as_str()))
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("faultfs: unmounting {} failed ({e}); detached it lazily", self.mountpoint.display());
        }
    }
}

#[cfg(test)]
mod tests;
