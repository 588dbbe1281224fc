//! The file system's state, free of FUSE: a tree of directories and files that remembers, per file, the
//! bytes synced and the writes since, and per directory, the names synced and the name changes since; and
//! the image a power cut leaves behind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};

use fuser::Errno;

/// Inode number of the root directory (FUSE's fixed root id).
pub const ROOT: u64 = 1;

/// What a power cut does to what was written or renamed but not yet synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CutMode {
    /// Everything not synced is lost: files hold their synced bytes, directories their synced names.
    Drop,
    /// Per file, the unsynced writes reached the disk in order up to a random point, the one at that point
    /// only in part (a random prefix of its bytes); per directory, a random prefix of the unsynced name
    /// changes (creations, removals, renames) was made durable, in order.
    Tear,
    /// Per file, a random subset of the unsynced writes reached the disk (writes issued later may land
    /// while earlier ones do not: holes read as zeros); per directory, a random prefix of the unsynced name
    /// changes, as for [`CutMode::Tear`].
    Subset,
}

impl CutMode {
    /// Every mode.
    pub const ALL: [CutMode; 3] = [CutMode::Drop, CutMode::Tear, CutMode::Subset];
}

/// A small deterministic generator (SplitMix64), so that a seed names a power cut.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` if `n` is `0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

#[derive(Debug, Clone)]
enum DataOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct File {
    /// What reads see.
    data: Vec<u8>,
    /// What survives any power cut.
    durable: Vec<u8>,
    /// Changes since the last sync, in order: applied to `durable` they give `data`.
    pending: Vec<DataOp>,
}

#[derive(Debug, Clone)]
enum NameOp {
    Link(OsString, u64),
    Unlink(OsString),
    Rename(OsString, OsString),
}

#[derive(Debug, Clone, Default)]
struct Dir {
    parent: u64,
    live: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
    pending: Vec<NameOp>,
}

#[derive(Debug, Clone)]
enum Node {
    File(File),
    Dir(Dir),
}

/// The kind of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// A directory entry: inode, kind and name.
pub type Entry = (u64, Kind, OsString);

/// What a power cut did: counts of what was pending and what of it survived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files (reachable in the image) that had unsynced writes.
    pub files_with_pending: u64,
    /// Unsynced writes and length changes in those files.
    pub pending_ops: u64,
    /// Of those, applied whole to the image.
    pub kept_ops: u64,
    /// Writes applied in part (torn).
    pub torn_ops: u64,
    /// Unsynced name changes in reachable directories.
    pub pending_names: u64,
    /// Of those, made durable by the cut.
    pub kept_names: u64,
}

/// The whole file system: inodes by number, root [`ROOT`].
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
}

impl Default for Tree {
    fn default() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::Dir(Dir { parent: ROOT, ..Dir::default() }));
        Self { nodes, next_ino: ROOT + 1 }
    }
}

fn apply(data: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { offset, data: bytes } => write_at(data, *offset, bytes),
        DataOp::SetLen(len) => data.resize(to_usize(*len), 0),
    }
}

fn write_at(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = to_usize(offset);
    let end = start + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn apply_name(names: &mut BTreeMap<OsString, u64>, op: &NameOp) {
    match op {
        NameOp::Link(name, ino) => {
            names.insert(name.clone(), *ino);
        }
        NameOp::Unlink(name) => {
            names.remove(name);
        }
        NameOp::Rename(from, to) => {
            if let Some(ino) = names.remove(from) {
                names.insert(to.clone(), ino);
            }
        }
    }
}

impl Tree {
    /// An empty file system: the root directory alone, durable.
    pub fn new() -> Self {
        Self::default()
    }

    fn dir(&self, ino: u64) -> Result<&Dir, Errno> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut Dir, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut File, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    /// Kind and length of inode `ino` (a directory's length is its live entry count).
    pub fn stat(&self, ino: u64) -> Result<(Kind, u64), Errno> {
        match self.nodes.get(&ino) {
            Some(Node::File(f)) => Ok((Kind::File, f.data.len() as u64)),
            Some(Node::Dir(d)) => Ok((Kind::Dir, d.live.len() as u64)),
            None => Err(Errno::ENOENT),
        }
    }

    /// The inode `name` in directory `parent` names now.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?.live.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn link_new(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if self.dir(parent)?.live.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        let dir = self.dir_mut(parent)?;
        dir.live.insert(name.to_owned(), ino);
        dir.pending.push(NameOp::Link(name.to_owned(), ino));
        Ok(ino)
    }

    /// Creates an empty file `name` in `parent` (`EEXIST` if the name is taken).
    pub fn create_file(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.link_new(parent, name, Node::File(File::default()))
    }

    /// Creates an empty directory `name` in `parent` (`EEXIST` if the name is taken).
    pub fn mkdir(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.link_new(parent, name, Node::Dir(Dir { parent, ..Dir::default() }))
    }

    /// Writes `bytes` at `offset` of file `ino` (extending it with zeros if it is shorter).
    pub fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<(), Errno> {
        let f = self.file_mut(ino)?;
        write_at(&mut f.data, offset, bytes);
        f.pending.push(DataOp::Write { offset, data: bytes.to_vec() });
        Ok(())
    }

    /// Sets the length of file `ino` (truncating, or extending with zeros).
    pub fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        let f = self.file_mut(ino)?;
        f.data.resize(to_usize(len), 0);
        f.pending.push(DataOp::SetLen(len));
        Ok(())
    }

    /// Up to `size` bytes of file `ino` from `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<&[u8], Errno> {
        match self.nodes.get(&ino) {
            Some(Node::File(f)) => {
                let start = to_usize(offset).min(f.data.len());
                let end = start.saturating_add(size as usize).min(f.data.len());
                Ok(&f.data[start..end])
            }
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    /// Removes the file `name` from `parent`. Its bytes stay reachable through open handles and, until the
    /// directory is synced, through the directory's durable names.
    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        if self.stat(ino)?.0 == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        let dir = self.dir_mut(parent)?;
        dir.live.remove(name);
        dir.pending.push(NameOp::Unlink(name.to_owned()));
        Ok(())
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        if !self.dir(ino)?.live.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        let dir = self.dir_mut(parent)?;
        dir.live.remove(name);
        dir.pending.push(NameOp::Unlink(name.to_owned()));
        Ok(())
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing what that named (atomic within one
    /// directory, durable when the directory is synced; across directories, two separate name changes).
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        let (kind, _) = self.stat(ino)?;
        if let Ok(old) = self.lookup(new_parent, new_name) {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(Errno::EEXIST);
            }
            match (kind, self.stat(old)?.0) {
                (Kind::File, Kind::Dir) => return Err(Errno::EISDIR),
                (Kind::Dir, Kind::File) => return Err(Errno::ENOTDIR),
                (Kind::Dir, Kind::Dir) if !self.dir(old)?.live.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
        }
        self.dir(new_parent)?;
        if parent == new_parent {
            let dir = self.dir_mut(parent)?;
            dir.live.remove(name);
            dir.live.insert(new_name.to_owned(), ino);
            dir.pending.push(NameOp::Rename(name.to_owned(), new_name.to_owned()));
        } else {
            let from = self.dir_mut(parent)?;
            from.live.remove(name);
            from.pending.push(NameOp::Unlink(name.to_owned()));
            let to = self.dir_mut(new_parent)?;
            to.live.insert(new_name.to_owned(), ino);
            to.pending.push(NameOp::Link(new_name.to_owned(), ino));
            if let Some(Node::Dir(d)) = self.nodes.get_mut(&ino) {
                d.parent = new_parent;
            }
        }
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file (its bytes and length become durable) or of a directory (its names
    /// become durable; the files they name keep their own sync state).
    pub fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => {
                f.durable.clone_from(&f.data);
                f.pending.clear();
            }
            Some(Node::Dir(d)) => {
                d.durable.clone_from(&d.live);
                d.pending.clear();
            }
            None => return Err(Errno::ENOENT),
        }
        Ok(())
    }

    /// The parent of directory `ino`, and its live entries with their kinds, in name order.
    pub fn list(&self, ino: u64) -> Result<(u64, Vec<Entry>), Errno> {
        let dir = self.dir(ino)?;
        let mut out = Vec::with_capacity(dir.live.len());
        for (name, &child) in &dir.live {
            out.push((child, self.stat(child)?.0, name.clone()));
        }
        Ok((dir.parent, out))
    }

    /// Whether anything is not yet durable (unsynced bytes or names anywhere).
    pub fn has_pending(&self) -> bool {
        self.nodes.values().any(|n| match n {
            Node::File(f) => !f.pending.is_empty(),
            Node::Dir(d) => !d.pending.is_empty(),
        })
    }

    /// The file system a reboot finds after a power cut now: from the root, each directory's durable names
    /// (plus, except with [`CutMode::Drop`], a random prefix of its unsynced name changes) and each file's
    /// durable bytes plus what `mode` keeps of its unsynced writes, drawn from `seed`. Everything in the
    /// image is durable; inodes no name reaches are gone.
    pub fn crash_image(&self, mode: CutMode, seed: u64) -> (Tree, CutReport) {
        let mut rng = Rng::new(seed);
        let mut report = CutReport::default();
        let mut out = Tree { nodes: HashMap::new(), next_ino: self.next_ino };
        let mut seen = HashSet::new();
        let mut stack = vec![(ROOT, ROOT)];
        while let Some((ino, parent)) = stack.pop() {
            if !seen.insert(ino) {
                continue;
            }
            let Some(node) = self.nodes.get(&ino) else { continue };
            let image = match node {
                Node::File(f) => {
                    let mut data = f.durable.clone();
                    if !f.pending.is_empty() {
                        report.files_with_pending += 1;
                        report.pending_ops += f.pending.len() as u64;
                    }
                    match mode {
                        CutMode::Drop => {}
                        CutMode::Tear => {
                            let keep = to_usize(rng.below(f.pending.len() as u64 + 1));
                            for op in &f.pending[..keep] {
                                apply(&mut data, op);
                            }
                            report.kept_ops += keep as u64;
                            if let Some(DataOp::Write { offset, data: bytes }) = f.pending.get(keep) {
                                let part = to_usize(rng.below(bytes.len() as u64));
                                if part > 0 {
                                    write_at(&mut data, *offset, &bytes[..part]);
                                    report.torn_ops += 1;
                                }
                            }
                        }
                        CutMode::Subset => {
                            for op in &f.pending {
                                if rng.below(2) == 0 {
                                    apply(&mut data, op);
                                    report.kept_ops += 1;
                                }
                            }
                        }
                    }
                    Node::File(File { durable: data.clone(), data, pending: Vec::new() })
                }
                Node::Dir(d) => {
                    let mut names = d.durable.clone();
                    report.pending_names += d.pending.len() as u64;
                    let keep = match mode {
                        CutMode::Drop => 0,
                        CutMode::Tear | CutMode::Subset => to_usize(rng.below(d.pending.len() as u64 + 1)),
                    };
                    for op in &d.pending[..keep] {
                        apply_name(&mut names, op);
                    }
                    report.kept_names += keep as u64;
                    // Names whose inode is gone (cannot happen: inodes are never freed) are dropped.
                    names.retain(|_, child| self.nodes.contains_key(child));
                    for &child in names.values() {
                        stack.push((child, ino));
                    }
                    Node::Dir(Dir { parent, durable: names.clone(), live: names, pending: Vec::new() })
                }
            };
            out.nodes.insert(ino, image);
        }
        (out, report)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

    use super::*;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn contents(t: &Tree, dir: u64, file: &str) -> Option<Vec<u8>> {
        let ino = t.lookup(dir, name(file)).ok()?;
        Some(t.read(ino, 0, u32::MAX).unwrap().to_vec())
    }

    #[test]
    fn unsynced_bytes_and_names_are_lost_synced_ones_kept() {
        let mut t = Tree::new();
        let a = t.create_file(ROOT, name("a")).unwrap();
        t.write(a, 0, b"synced").unwrap();
        t.sync(a).unwrap();
        t.sync(ROOT).unwrap();
        t.write(a, 6, b"+later").unwrap();
        let b = t.create_file(ROOT, name("b")).unwrap();
        t.write(b, 0, b"data synced, name not").unwrap();
        t.sync(b).unwrap();
        assert!(t.has_pending());
        for seed in 0..20 {
            let (img, report) = t.crash_image(CutMode::Drop, seed);
            assert_eq!(contents(&img, ROOT, "a").unwrap(), b"synced");
            assert_eq!(contents(&img, ROOT, "b"), None, "a name never synced is lost");
            assert_eq!(report.pending_ops, 1);
            assert!(!img.has_pending());
        }
        // After syncing the directory the name survives too.
        t.sync(ROOT).unwrap();
        let (img, _) = t.crash_image(CutMode::Drop, 1);
        assert_eq!(contents(&img, ROOT, "b").unwrap(), b"data synced, name not");
    }

    #[test]
    fn a_synced_name_of_an_unsynced_file_comes_back_empty_or_partial() {
        let mut t = Tree::new();
        let a = t.create_file(ROOT, name("a")).unwrap();
        t.sync(ROOT).unwrap();
        t.write(a, 0, b"0123456789").unwrap();
        t.write(a, 10, b"abcdefghij").unwrap();
        let (img, _) = t.crash_image(CutMode::Drop, 0);
        assert_eq!(contents(&img, ROOT, "a").unwrap(), b"");
        let mut seen = HashSet::new();
        for seed in 0..200 {
            let (img, _) = t.crash_image(CutMode::Tear, seed);
            let got = contents(&img, ROOT, "a").unwrap();
            assert!(b"0123456789abcdefghij".starts_with(&got), "a torn write is a prefix: {got:?}");
            seen.insert(got.len());
            let (img, _) = t.crash_image(CutMode::Subset, seed);
            let got = contents(&img, ROOT, "a").unwrap();
            assert!(
                [&b""[..], b"0123456789", b"\0\0\0\0\0\0\0\0\0\0abcdefghij", b"0123456789abcdefghij"]
                    .contains(&got.as_slice()),
                "{got:?}"
            );
        }
        assert!(seen.len() > 10, "tears land at many places: {seen:?}");
    }

    #[test]
    fn rename_is_atomic_and_durable_with_its_directory() {
        let mut t = Tree::new();
        let cur = t.create_file(ROOT, name("CURRENT")).unwrap();
        t.write(cur, 0, b"old").unwrap();
        t.sync(cur).unwrap();
        t.sync(ROOT).unwrap();
        let tmp = t.create_file(ROOT, name("CURRENT.tmp")).unwrap();
        t.write(tmp, 0, b"new").unwrap();
        t.sync(tmp).unwrap();
        t.rename(ROOT, name("CURRENT.tmp"), ROOT, name("CURRENT"), false).unwrap();
        assert_eq!(contents(&t, ROOT, "CURRENT").unwrap(), b"new");
        assert_eq!(contents(&t, ROOT, "CURRENT.tmp"), None);
        let mut outcomes = HashSet::new();
        for mode in CutMode::ALL {
            for seed in 0..50 {
                let (img, _) = t.crash_image(mode, seed);
                let got = contents(&img, ROOT, "CURRENT").unwrap();
                assert!(got == b"old" || got == b"new", "CURRENT is one or the other, whole: {got:?}");
                if got == b"new" {
                    assert_eq!(contents(&img, ROOT, "CURRENT.tmp"), None, "the rename moved the name");
                }
                outcomes.insert(got);
            }
        }
        assert_eq!(outcomes.len(), 2, "an unsynced rename may or may not survive");
        t.sync(ROOT).unwrap();
        for mode in CutMode::ALL {
            let (img, _) = t.crash_image(mode, 7);
            assert_eq!(contents(&img, ROOT, "CURRENT").unwrap(), b"new");
            assert_eq!(img.list(ROOT).unwrap().1.len(), 1);
        }
    }

    #[test]
    fn an_unlinked_file_comes_back_until_the_directory_is_synced() {
        let mut t = Tree::new();
        let a = t.create_file(ROOT, name("old.log")).unwrap();
        t.write(a, 0, b"bytes").unwrap();
        t.sync(a).unwrap();
        t.sync(ROOT).unwrap();
        t.unlink(ROOT, name("old.log")).unwrap();
        assert_eq!(t.lookup(ROOT, name("old.log")), Err(Errno::ENOENT));
        let (img, _) = t.crash_image(CutMode::Drop, 0);
        assert_eq!(contents(&img, ROOT, "old.log").unwrap(), b"bytes");
        t.sync(ROOT).unwrap();
        let (img, _) = t.crash_image(CutMode::Drop, 0);
        assert_eq!(contents(&img, ROOT, "old.log"), None);
    }

    #[test]
    fn length_changes_are_durable_only_when_synced() {
        let mut t = Tree::new();
        let wal = t.create_file(ROOT, name("wal")).unwrap();
        t.sync(ROOT).unwrap();
        t.set_len(wal, 4096).unwrap();
        t.sync(wal).unwrap();
        t.write(wal, 0, b"record").unwrap();
        let (img, _) = t.crash_image(CutMode::Drop, 0);
        assert_eq!(contents(&img, ROOT, "wal").unwrap(), vec![0; 4096], "reserved zeros, the write lost");
        t.sync(wal).unwrap();
        t.set_len(wal, 3).unwrap();
        let (img, _) = t.crash_image(CutMode::Drop, 0);
        assert_eq!(&contents(&img, ROOT, "wal").unwrap()[..6], b"record");
    }

    #[test]
    fn directories_keep_their_own_names() {
        let mut t = Tree::new();
        let d = t.mkdir(ROOT, name("db")).unwrap();
        let f = t.create_file(d, name("x")).unwrap();
        t.write(f, 0, b"x").unwrap();
        t.sync(f).unwrap();
        t.sync(d).unwrap();
        let (img, _) = t.crash_image(CutMode::Drop, 0);
        assert_eq!(img.lookup(ROOT, name("db")), Err(Errno::ENOENT), "db's own name was never synced");
        t.sync(ROOT).unwrap();
        let (img, _) = t.crash_image(CutMode::Drop, 0);
        let d2 = img.lookup(ROOT, name("db")).unwrap();
        assert_eq!(contents(&img, d2, "x").unwrap(), b"x");
        assert_eq!(t.rmdir(ROOT, name("db")), Err(Errno::ENOTEMPTY));
    }
}
