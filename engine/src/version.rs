//! Versions: the set of live tables per level at one moment, and the reads that walk it.

use std::cmp::Ordering;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{mpsc, Arc, OnceLock};

use parking_lot::Mutex;

use crate::error::StorageError;
use crate::format::key;
use crate::format::names;
use crate::io::Storage;
use crate::iter::Source;
use crate::memtable::Lookup;
use crate::table::{BlockCache, BlockValue, TableIter, TableReader};

/// Number of levels; level 0 holds overlapping tables flushed from memtables.
pub(crate) const NUM_LEVELS: usize = 7;

/// What the manifest knows about one table (recorded by a version edit, `manifest/edit.rs`). Keys are
/// internal keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableMeta {
    pub number: u64,
    pub size: u64,
    pub entries: u64,
    /// Entries that are tombstones. Tables added by a tag-4 record (written before the count existed, or
    /// holding no tombstone) read as 0.
    pub deletions: u64,
    pub min_seq: u64,
    pub max_seq: u64,
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
}

/// What tables need to open themselves.
#[derive(Debug, Clone)]
pub(crate) struct TableContext {
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    pub cache: Arc<BlockCache>,
    /// Where obsolete tables go to be unmapped and removed, off the thread that let go of them (a
    /// background thread of the database); without it (or once that thread is gone) they are retired on
    /// the spot.
    pub retire: Option<mpsc::Sender<ToRetire>>,
}

impl TableContext {
    /// Opens table `number`'s reader: maps it, and loads and verifies its footer, filter and index.
    pub fn open(&self, number: u64) -> Result<Arc<TableReader>, StorageError> {
        let path = names::table(&self.dir, number);
        Ok(Arc::new(TableReader::open(&*self.storage, &path, number, self.cache.clone())?))
    }
}

/// What the thread that retires obsolete tables is sent.
pub(crate) enum ToRetire {
    /// A table to unmap and remove.
    Table(Retired),
    /// Answered once every table sent before it is retired.
    Barrier(mpsc::SyncSender<()>),
    /// Shutdown: tables let go of after it are retired by whoever lets go of them.
    Stop,
}

/// An obsolete table's file and its open reader. Dropping it unmaps the file and removes it: the file
/// system then frees the table's blocks, which can wait on the disk (a synchronous discard) for tens of
/// milliseconds, and so is done by a background thread rather than by the reader or writer that dropped
/// the last version holding the table.
pub(crate) struct Retired {
    path: PathBuf,
    storage: Arc<dyn Storage>,
    reader: Option<Arc<TableReader>>,
}

impl Drop for Retired {
    fn drop(&mut self) {
        drop(self.reader.take());
        // A failure leaves an orphan that the next open removes.
        let _ = self.storage.remove(&self.path);
    }
}

/// A live table. Its reader opens on first use; once the table leaves the current version and the last
/// reader lets go of it, its file is removed.
pub(crate) struct TableHandle {
    pub meta: TableMeta,
    path: PathBuf,
    ctx: TableContext,
    reader: OnceLock<Arc<TableReader>>,
    open_lock: Mutex<()>,
    obsolete: AtomicBool,
}

impl std::fmt::Debug for TableHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableHandle").field("meta", &self.meta).finish_non_exhaustive()
    }
}

impl TableHandle {
    pub fn new(meta: TableMeta, ctx: &TableContext) -> Self {
        Self {
            path: names::table(&ctx.dir, meta.number),
            meta,
            ctx: ctx.clone(),
            reader: OnceLock::new(),
            open_lock: Mutex::new(()),
            obsolete: AtomicBool::new(false),
        }
    }

    /// The table's reader, opened on first use unless it was given one ([`TableHandle::adopt`]).
    pub fn reader(&self) -> Result<&Arc<TableReader>, StorageError> {
        if let Some(r) = self.reader.get() {
            return Ok(r);
        }
        let _guard = self.open_lock.lock();
        if let Some(r) = self.reader.get() {
            return Ok(r);
        }
        let r = self.ctx.open(self.meta.number)?;
        Ok(self.reader.get_or_init(|| r))
    }

    /// Gives the table `reader`, opened beforehand by [`TableContext::open`], if it has none yet.
    pub fn adopt(&self, reader: Arc<TableReader>) {
        let _ = self.reader.set(reader);
    }

    /// Whether the table's reader is open.
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.reader.get().is_some()
    }

    pub fn smallest_user(&self) -> &[u8] {
        key::user_key(&self.meta.smallest)
    }

    pub fn largest_user(&self) -> &[u8] {
        key::user_key(&self.meta.largest)
    }

    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, AtomicOrdering::Release);
    }

    fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.smallest_user() <= hi && self.largest_user() >= lo
    }
}

impl Drop for TableHandle {
    fn drop(&mut self) {
        if self.obsolete.load(AtomicOrdering::Acquire) {
            let retired =
                Retired { path: self.path.clone(), storage: self.ctx.storage.clone(), reader: self.reader.take() };
            // Without a retiring thread (or once it is gone) the table is retired here.
            if let Some(to) = &self.ctx.retire {
                let _ = to.send(ToRetire::Table(retired));
            }
        }
    }
}

/// The live tables: level 0 newest first (tables may overlap), deeper levels sorted by key and disjoint.
#[derive(Debug, Default)]
pub(crate) struct Version {
    pub levels: [Vec<Arc<TableHandle>>; NUM_LEVELS],
    /// The newest sequence number in any of the tables (0 without tables).
    pub max_seq: u64,
    /// The newest sequence number ever written to a table of this version or of one before it (by a flush or
    /// an ingest): every write with a greater sequence is in a memtable. Unlike `max_seq` it never falls
    /// (a compaction may drop a table's newest entries).
    pub written_through: u64,
}

impl Version {
    /// The version after a version edit that removes the tables `removed` and adds `added` (each with its
    /// level), and the tables it drops (for the caller to mark obsolete once the edit is durable). A table
    /// the edit moves to another level keeps its handle and is not dropped.
    pub fn apply(
        &self,
        removed: &[(usize, u64)],
        added: &[(usize, TableMeta)],
        ctx: &TableContext,
    ) -> (Version, Vec<Arc<TableHandle>>) {
        let mut levels = self.levels.clone();
        let mut dropped = Vec::new();
        for (level, number) in removed {
            if let Some(tables) = levels.get_mut(*level) {
                if let Some(pos) = tables.iter().position(|t| t.meta.number == *number) {
                    dropped.push(tables.remove(pos));
                }
            }
        }
        for (level, meta) in added {
            // A table removed and added by the same edit moved between levels: it stays live.
            let moved = dropped.iter().position(|t| t.meta.number == meta.number).map(|i| dropped.swap_remove(i));
            if let Some(tables) = levels.get_mut(*level) {
                tables.push(moved.unwrap_or_else(|| Arc::new(TableHandle::new(meta.clone(), ctx))));
            }
        }
        for (i, tables) in levels.iter_mut().enumerate() {
            if i == 0 {
                tables.sort_by_key(|t| std::cmp::Reverse(t.meta.number));
            } else {
                tables.sort_by(|a, b| key::compare(&a.meta.smallest, &b.meta.smallest));
            }
        }
        let max_seq = levels.iter().flatten().map(|t| t.meta.max_seq).max().unwrap_or(0);
        let written_through = added.iter().map(|(_, t)| t.max_seq).fold(self.written_through, u64::max);
        (Version { levels, max_seq, written_through }, dropped)
    }

    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels.get(level).map_or(0, |t| t.iter().map(|t| t.meta.size).sum())
    }

    pub fn tables(&self) -> impl Iterator<Item = (usize, &Arc<TableHandle>)> {
        self.levels.iter().enumerate().flat_map(|(l, ts)| ts.iter().map(move |t| (l, t)))
    }

    /// Tables of `level` whose user-key range meets `[lo, hi]`.
    pub fn overlapping(&self, level: usize, lo: &[u8], hi: &[u8]) -> Vec<Arc<TableHandle>> {
        self.levels.get(level).map_or_else(Vec::new, |ts| ts.iter().filter(|t| t.overlaps(lo, hi)).cloned().collect())
    }

    /// Whether any level deeper than `level` may hold `user_key`.
    pub fn deeper_may_contain(&self, level: usize, user_key: &[u8]) -> bool {
        self.levels.iter().skip(level + 1).any(|ts| find_in_level(ts, user_key).is_some())
    }

    /// The newest version of `user_key` at `seq` in the tables; `hash` is its
    /// [`key_hash`](crate::format::key::key_hash).
    pub fn get(&self, user_key: &[u8], seq: u64, hash: u64) -> Result<Lookup<BlockValue<'_>>, StorageError> {
        for (level, tables) in self.levels.iter().enumerate() {
            if level == 0 {
                for t in tables {
                    if t.overlaps(user_key, user_key) {
                        match t.reader()?.get(user_key, seq, hash)? {
                            Lookup::Absent => {}
                            found => return Ok(found),
                        }
                    }
                }
            } else if let Some(t) = find_in_level(tables, user_key) {
                match t.reader()?.get(user_key, seq, hash)? {
                    Lookup::Absent => {}
                    found => return Ok(found),
                }
            }
        }
        Ok(Lookup::Absent)
    }

    /// Adds to `out` one source per level-0 table and one per deeper non-empty level. A level's source shares
    /// the version instead of copying its list of tables, which may be long.
    pub fn add_sources(self: &Arc<Self>, out: &mut Vec<Box<dyn Source>>, reverse: bool) -> Result<(), StorageError> {
        for (level, tables) in self.levels.iter().enumerate() {
            if level == 0 {
                for t in tables {
                    out.push(Box::new(TableIter::new(t.reader()?.clone(), reverse)));
                }
            } else if !tables.is_empty() {
                out.push(Box::new(LevelIter::over_level(self.clone(), level, reverse)));
            }
        }
        Ok(())
    }
}

/// The table of a sorted, disjoint level that may hold `user_key`.
fn find_in_level<'a>(tables: &'a [Arc<TableHandle>], user_key: &[u8]) -> Option<&'a Arc<TableHandle>> {
    let i = tables.partition_point(|t| t.largest_user() < user_key);
    tables.get(i).filter(|t| t.smallest_user() <= user_key)
}

/// The sorted, disjoint tables a [`LevelIter`] walks.
enum LevelTables {
    Owned(Vec<Arc<TableHandle>>),
    /// One level of a shared version.
    Level(Arc<Version>, usize),
}

impl std::ops::Deref for LevelTables {
    type Target = [Arc<TableHandle>];

    fn deref(&self) -> &[Arc<TableHandle>] {
        match self {
            LevelTables::Owned(t) => t,
            LevelTables::Level(v, level) => v.levels.get(*level).map_or(&[], Vec::as_slice),
        }
    }
}

/// A cursor over the concatenation of a level's disjoint tables, opening them as it reaches them.
pub(crate) struct LevelIter {
    tables: LevelTables,
    reverse: bool,
    /// Its tables are a compaction's inputs (see [`TableIter::for_compaction`]).
    compaction: bool,
    idx: usize,
    cur: Option<TableIter>,
}

impl LevelIter {
    /// A forward cursor over a compaction's input `tables`, sorted and disjoint, each read as
    /// [`TableIter::for_compaction`] reads its table.
    pub fn for_compaction(tables: Vec<Arc<TableHandle>>) -> Self {
        Self { tables: LevelTables::Owned(tables), reverse: false, compaction: true, idx: 0, cur: None }
    }

    /// Over one level (1 or deeper) of `version`.
    fn over_level(version: Arc<Version>, level: usize, reverse: bool) -> Self {
        Self { tables: LevelTables::Level(version, level), reverse, compaction: false, idx: 0, cur: None }
    }

    fn open(&mut self, idx: usize, target: Option<&[u8]>) -> Result<(), StorageError> {
        self.idx = idx;
        self.cur = match self.tables.get(idx) {
            Some(t) => {
                let reader = t.reader()?.clone();
                let mut it = if self.compaction {
                    TableIter::for_compaction(reader)
                } else {
                    TableIter::new(reader, self.reverse)
                };
                it.seek(target)?;
                Some(it)
            }
            None => None,
        };
        Ok(())
    }

    fn settle(&mut self) -> Result<(), StorageError> {
        while let Some(cur) = &self.cur {
            if cur.key().is_some() {
                return Ok(());
            }
            if self.reverse {
                match self.idx.checked_sub(1) {
                    Some(prev) => self.open(prev, None)?,
                    None => self.cur = None,
                }
            } else {
                self.open(self.idx + 1, None)?;
            }
        }
        Ok(())
    }
}

impl Source for LevelIter {
    fn seek(&mut self, target: Option<&[u8]>) -> Result<(), StorageError> {
        let idx = match (target, self.reverse) {
            (None, false) => Some(0),
            (None, true) => self.tables.len().checked_sub(1),
            (Some(t), false) => {
                Some(self.tables.partition_point(|h| key::compare(&h.meta.largest, t) == Ordering::Less))
            }
            (Some(t), true) => {
                self.tables.partition_point(|h| key::compare(&h.meta.smallest, t) != Ordering::Greater).checked_sub(1)
            }
        };
        match idx {
            Some(i) => self.open(i, target)?,
            None => self.cur = None,
        }
        self.settle()
    }

    fn prepare_seek(&self, target: &[u8]) {
        if self.reverse || self.compaction {
            return;
        }
        let idx = self.tables.partition_point(|h| key::compare(&h.meta.largest, target) == Ordering::Less);
        if let Some(Ok(reader)) = self.tables.get(idx).map(|t| t.reader()) {
            reader.prepare_seek(target);
        }
    }

    fn advance(&mut self) -> Result<(), StorageError> {
        if let Some(cur) = &mut self.cur {
            cur.advance()?;
        }
        self.settle()
    }

    fn key(&self) -> Option<&[u8]> {
        self.cur.as_ref()?.key()
    }

    fn value(&self) -> &[u8] {
        self.cur.as_ref().map(|c| c.value()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::key::{internal_key, make_trailer, ValueKind};
    use crate::io::MemStorage;

    fn meta(number: u64, lo: &str, hi: &str) -> TableMeta {
        TableMeta {
            number,
            size: 100,
            entries: 1,
            deletions: 0,
            min_seq: 1,
            max_seq: 1,
            smallest: internal_key(lo.as_bytes(), make_trailer(1, ValueKind::Put)),
            largest: internal_key(hi.as_bytes(), make_trailer(1, ValueKind::Put)),
        }
    }

    /// Regression: a trivial move (remove from level 1, add to level 2 in one edit) marked the moved table
    /// obsolete, and its file was deleted while still live.
    #[test]
    fn a_moved_table_is_not_dropped() {
        let ctx = TableContext {
            storage: Arc::new(MemStorage::new()),
            dir: PathBuf::from("/d"),
            cache: Arc::new(BlockCache::new(0)),
            retire: None,
        };
        let (v1, dropped) = Version::default().apply(&[], &[(1, meta(7, "a", "c")), (1, meta(8, "d", "f"))], &ctx);
        assert!(dropped.is_empty());
        let (v2, dropped) = v1.apply(&[(1, 7)], &[(2, meta(7, "a", "c"))], &ctx);
        assert!(dropped.is_empty(), "the moved table must not be dropped");
        assert!(Arc::ptr_eq(&v1.levels[1][0], &v2.levels[2][0]));
        let (v3, dropped) = v2.apply(&[(1, 8)], &[], &ctx);
        assert_eq!(dropped.len(), 1);
        assert!(v3.levels[1].is_empty());
        assert!(v3.deeper_may_contain(1, b"b") && !v3.deeper_may_contain(2, b"b"));
    }

    #[test]
    fn an_obsolete_table_is_retired_by_whoever_receives_it_not_by_its_last_holder() {
        let storage = Arc::new(MemStorage::new());
        let (retire, retired) = mpsc::channel();
        let ctx = TableContext {
            storage: storage.clone(),
            dir: PathBuf::from("/d"),
            cache: Arc::new(BlockCache::new(0)),
            retire: Some(retire),
        };
        let path = names::table(&ctx.dir, 7);
        storage.create_dir_all(&ctx.dir).unwrap();
        storage.create(&path).unwrap().append(b"table").unwrap();
        let (v1, _) = Version::default().apply(&[], &[(1, meta(7, "a", "c"))], &ctx);
        let (v2, dropped) = v1.apply(&[(1, 7)], &[], &ctx);
        assert!(v2.levels[1].is_empty());
        dropped.iter().for_each(|t| t.mark_obsolete());
        // The last holders let go: the file stays until the table is retired.
        drop((v1, dropped));
        assert!(storage.exists(&path).unwrap(), "the last holder does not remove the file");
        let table = retired.try_recv().expect("the table is handed over");
        assert!(matches!(table, ToRetire::Table(_)));
        drop(table);
        assert!(!storage.exists(&path).unwrap(), "retiring removes it");
        // Without a receiver, the last holder retires it.
        storage.create(&path).unwrap().append(b"table").unwrap();
        drop(retired);
        let (v1, _) = Version::default().apply(&[], &[(1, meta(7, "a", "c"))], &ctx);
        let (_, dropped) = v1.apply(&[(1, 7)], &[], &ctx);
        dropped.iter().for_each(|t| t.mark_obsolete());
        drop((v1, dropped));
        assert!(!storage.exists(&path).unwrap());
    }
}
