//! The database: open and recovery, reads, and the handle users hold.

mod background;
mod check;
mod checkpoint;
mod ingest;
mod recovery;
mod snapshot;
#[cfg(test)]
mod tests;
mod write;

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::{ArcSwap, Guard};
use parking_lot::{Condvar, Mutex};

use crate::batch::WriteBatch;
use crate::error::{Error, OpenError, StorageError, WriteError};
use crate::format::names;
use crate::io::{FileLock, Storage};
use crate::iter::{prefix_upper_bound, Iter, MemSource, MergingIter, Source};
use crate::manifest::VersionSet;
use crate::memtable::{Lookup, Memtable};
use crate::options::{Options, WriteOptions};
use crate::snapshot::SnapshotList;
use crate::stats::{Counters, LevelStats, Stats};
use crate::table::{BlockCache, BlockValue};
use crate::version::{TableContext, Version};
use crate::wal::WalState;

pub use self::check::{Check, CheckReport, Finding, TornWal};
pub use self::checkpoint::CheckpointInfo;
pub use self::snapshot::Snapshot;
use self::write::CommitQueue;

/// What readers see: the active memtable, frozen memtables (oldest first) and the tables.
pub(crate) struct View {
    pub mem: Arc<Memtable>,
    pub imms: Vec<Arc<Memtable>>,
    pub version: Arc<Version>,
}

impl View {
    /// The memtables, newest first: the active one, then the frozen ones from the last frozen.
    pub fn memtables(&self) -> impl Iterator<Item = &Arc<Memtable>> {
        std::iter::once(&self.mem).chain(self.imms.iter().rev())
    }
}

/// State shared with the background threads.
#[derive(Debug, Default)]
pub(crate) struct BgState {
    pub shutdown: bool,
    pub compaction_wanted: bool,
    /// Manual compactions (`Db::compact`) under way: background compactions wait for them, whose full merge
    /// makes their work moot.
    pub manual_compactions: usize,
}

pub(crate) struct Inner {
    pub opts: Options,
    pub dir: PathBuf,
    pub storage: Arc<dyn Storage>,
    pub ctx: TableContext,
    /// What reads read: loaded without a lock. Replaced whole, under `view_writer`, by a memtable switch and
    /// by each install of a flush or compaction.
    pub view: ArcSwap<View>,
    /// Held while a new view is built from the current one and stored ([`Inner::replace_view`]).
    pub view_writer: Mutex<()>,
    /// An empty memtable made ahead by the flush thread, which the next memtable switch takes instead of
    /// making one while writers wait (`Inner::prepare_memtable`).
    pub spare_mem: Mutex<Option<Arc<Memtable>>>,
    pub versions: Mutex<VersionSet>,
    pub wal: Mutex<WalState>,
    pub commit: CommitQueue,
    pub last_seq: AtomicU64,
    pub snapshots: SnapshotList,
    pub bg: Mutex<BgState>,
    pub bg_cv: Condvar,
    pub compaction_lock: Mutex<()>,
    /// Obsolete tables sent to be retired (`TableContext::retire`), taken by the thread that retires them.
    pub retired: Mutex<Option<std::sync::mpsc::Receiver<crate::version::ToRetire>>>,
    /// Checkpoints copying WALs right now: while any is, flushes leave the WALs they retire in place.
    pub wal_pins: AtomicUsize,
    pub poison: Mutex<Option<String>>,
    pub poisoned: AtomicBool,
    pub buffered_dirty: AtomicBool,
    pub closed: AtomicBool,
    pub counters: Counters,
}

/// Shuts the engine down when the last [`Db`] handle goes.
struct Owner {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    lock: Mutex<Option<Box<dyn FileLock>>>,
}

impl Owner {
    fn shutdown(&self) -> Result<(), StorageError> {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        inner.bg.lock().shutdown = true;
        inner.bg_cv.notify_all();
        if let Some(retire) = &inner.ctx.retire {
            let _ = retire.send(crate::version::ToRetire::Stop);
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        // A poisoned WAL may end in a partial append the writer does not know about: sync, but append nothing.
        // The first failure is what close reports: a sync that succeeds now does not make the writes after it
        // durable (Linux may have dropped the dirty pages the failed fdatasync was about).
        let poisoned = inner.poisoned.load(Ordering::Acquire);
        let synced = if poisoned { inner.wal.lock().writer.sync() } else { inner.wal.lock().seal(&*inner.storage) };
        if matches!(synced, Ok(true)) {
            Counters::add(&inner.counters.wal_syncs, 1);
        }
        self.lock.lock().take();
        if poisoned {
            return Err(StorageError::Poisoned { cause: inner.poison.lock().clone().unwrap_or_default() });
        }
        synced.map(drop)
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// An open database. Cheap to clone; every clone is the same database and may be used from any thread. The
/// database closes when the last clone is dropped or when [`Db::close`] is called.
///
/// ```
/// # fn main() -> Result<(), cairn_engine::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let db = cairn_engine::Db::open(dir.path())?;
/// db.put(b"job/1", b"PENDING")?;
/// assert_eq!(db.get(b"job/1")?, Some(b"PENDING".to_vec()));
/// let mut batch = cairn_engine::WriteBatch::new();
/// batch.put(b"job/2", b"RUNNING").delete(b"job/1");
/// db.write(batch)?;
/// let keys: Vec<Vec<u8>> = db.prefix(b"job/")?.map(|kv| kv.map(|(k, _)| k)).collect::<Result<_, _>>()?;
/// assert_eq!(keys, vec![b"job/2".to_vec()]);
/// db.close()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Db {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("dir", &self.owner.inner.dir).finish_non_exhaustive()
    }
}

impl Options {
    /// Opens (or creates) the database in directory `path` with these options.
    pub fn open(self, path: impl AsRef<Path>) -> Result<Db, OpenError> {
        Db::open_with(self, path.as_ref())
    }
}

impl Db {
    /// Opens the database in `path` with default [`Options`], creating it if missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Db, OpenError> {
        Options::default().open(path)
    }

    /// Options to adjust before [`Options::open`].
    pub fn builder() -> Options {
        Options::default()
    }

    pub(crate) fn open_with(opts: Options, dir: &Path) -> Result<Db, OpenError> {
        opts.validate()?;
        let (inner, lock) = recovery::open(opts, dir)?;
        let inner = Arc::new(inner);
        let threads = background::spawn(&inner).map_err(|e| StorageError::io(dir, e))?;
        Ok(Db { owner: Arc::new(Owner { inner, threads: Mutex::new(threads), lock: Mutex::new(Some(lock)) }) })
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.owner.inner
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StorageError> {
        self.get_with(key, <[u8]>::to_vec)
    }

    /// `f` applied to the value of `key`, if present, read in place: in the memtable, in the cached block
    /// that holds it, or (a value alone in its block, when the cache has no room for it) in the table's
    /// map, with no copy. [`Db::get`] is `get_with(key, <[u8]>::to_vec)`; a reader that
    /// only looks at the value (parses it, sums it, copies part of it) saves the allocation and the copy.
    /// `f` runs while the reader holds the block; it should not call back into the database.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let db = cairn_engine::Db::open(dir.path())?;
    /// db.put(b"job/1", b"PENDING")?;
    /// assert_eq!(db.get_with(b"job/1", |v| v.len())?, Some(7));
    /// assert_eq!(db.get_with(b"job/2", |v| v.len())?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_with<R>(&self, key: impl AsRef<[u8]>, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, StorageError> {
        self.inner().get_with_at(key.as_ref(), None, f)
    }

    /// Whether `key` was written (set or deleted) by a commit after sequence `after`, up to the latest commit,
    /// if the memtables alone can tell: `Some(false)` if it was not, `Some(true)` if it was, `None` if some of
    /// those commits may have reached tables since (a flush or an ingest wrote sequences above `after`), so
    /// that only a read can tell. It reads no table and no block: a reader that keeps what it read at a
    /// sequence (a cache of decoded values) learns whether it is still current for the cost of a memtable probe.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let db = cairn_engine::Db::open(dir.path())?;
    /// let read_at = db.put(b"job/1", b"PENDING")?;
    /// assert_eq!(db.written_after(b"job/1", read_at)?, Some(false));
    /// db.put(b"job/1", b"RUNNING")?;
    /// assert_eq!(db.written_after(b"job/1", read_at)?, Some(true));
    /// db.flush()?;
    /// assert_eq!(db.written_after(b"job/1", read_at)?, None, "the write is in a table now");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn written_after(&self, key: impl AsRef<[u8]>, after: u64) -> Result<Option<bool>, StorageError> {
        self.inner().written_after(key.as_ref(), after, None)
    }

    /// Sets `key` to `value` with the default durability; returns the commit's sequence number.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64, WriteError> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.write(batch)
    }

    /// Deletes `key` with the default durability; returns the commit's sequence number.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<u64, WriteError> {
        let mut batch = WriteBatch::new();
        batch.delete(key);
        self.write(batch)
    }

    /// Applies `batch` atomically with the default durability. Returns the sequence number of its last
    /// operation: a snapshot at that number sees the whole batch.
    pub fn write(&self, batch: WriteBatch) -> Result<u64, WriteError> {
        self.write_with(batch, WriteOptions::default())
    }

    /// Applies `batch` atomically with the given options.
    pub fn write_with(&self, batch: WriteBatch, opts: WriteOptions) -> Result<u64, WriteError> {
        let inner = self.inner();
        inner.commit(batch, opts.durability.unwrap_or(inner.opts.durability), false, Vec::new())
    }

    /// Applies `batch` atomically if every condition holds, checked in the same step as the write: no other
    /// commit can come between the check and the write. Fails with [`WriteError::ConditionFailed`] naming
    /// the first key that changed, writing nothing. Conditional writes keep group commit.
    pub fn write_if(
        &self,
        batch: WriteBatch,
        conditions: Vec<crate::Condition>,
        opts: WriteOptions,
    ) -> Result<u64, WriteError> {
        let inner = self.inner();
        inner.commit(batch, opts.durability.unwrap_or(inner.opts.durability), false, conditions)
    }

    /// Pairs with keys in `range`, in ascending key order.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Iter, StorageError> {
        let inner = self.inner();
        inner.iter_at(&range, None, false)
    }

    /// Pairs with keys in `range`, in descending key order.
    pub fn range_rev<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Iter, StorageError> {
        let inner = self.inner();
        inner.iter_at(&range, None, true)
    }

    /// Every pair, in ascending key order.
    pub fn iter(&self) -> Result<Iter, StorageError> {
        self.range::<&[u8], _>(..)
    }

    /// Pairs whose key starts with `prefix`, ascending.
    pub fn prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Iter, StorageError> {
        let inner = self.inner();
        inner.prefix_at(prefix.as_ref(), None, false)
    }

    /// Pairs whose key starts with `prefix`, descending.
    pub fn prefix_rev(&self, prefix: impl AsRef<[u8]>) -> Result<Iter, StorageError> {
        let inner = self.inner();
        inner.prefix_at(prefix.as_ref(), None, true)
    }

    /// A consistent read-only view as of the latest commit.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.inner().clone())
    }

    /// Sequence number of the newest commit.
    pub fn last_sequence(&self) -> u64 {
        self.inner().last_seq.load(Ordering::Acquire)
    }

    /// Writes the memtable to a table and waits until every frozen memtable is flushed. Afterwards the WAL
    /// holds nothing a reopen would need to replay.
    pub fn flush(&self) -> Result<(), Error> {
        self.inner().flush()
    }

    /// Flushes, then merges every table into one sorted run at the deepest level in use, dropping versions
    /// no snapshot can see and tombstones that hide nothing.
    ///
    /// Background compactions do not start while it runs (one that is running is finished first): the
    /// flush would otherwise start one that the full merge makes moot, and that the merge waits for. When
    /// it returns, the files of the tables it replaced are removed, unless a snapshot or an iterator still
    /// holds them (they go when it is dropped).
    pub fn compact(&self) -> Result<(), Error> {
        let inner = self.inner();
        inner.bg.lock().manual_compactions += 1;
        let compacted = inner.flush().and_then(|()| {
            inner.compact_all().map_err(|e| {
                inner.set_poison(&e);
                Error::from(e)
            })
        });
        // Work deferred meanwhile (tables flushed by concurrent writers) is looked at now.
        let mut bg = inner.bg.lock();
        bg.manual_compactions -= 1;
        bg.compaction_wanted = true;
        drop(bg);
        inner.bg_cv.notify_all();
        // The replaced tables' space is free when this returns (unless a reader still holds them).
        inner.wait_for_retired();
        compacted
    }

    /// A report on levels, caches and counters.
    pub fn stats(&self) -> Stats {
        self.inner().stats()
    }

    /// Reads every block of every table, checking checksums and key order; returns the number of entries
    /// checked. The first problem found is returned as an error naming file and offset.
    pub fn verify(&self) -> Result<u64, StorageError> {
        let version = self.inner().view.load().version.clone();
        let mut total = 0;
        for (_, t) in version.tables() {
            total += t.reader()?.verify()?;
        }
        Ok(total)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner().dir
    }

    /// The storage the database does its I/O through (the file system, or the one given to
    /// [`Options::storage`](crate::Options::storage)), for files kept beside it such as blob files.
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.inner().storage.clone()
    }

    /// Stops the background threads, syncs the WAL and releases the directory. Other clones of this handle
    /// fail with [`StorageError::Closed`] afterwards. Dropping the last handle does the same, ignoring errors.
    ///
    /// A database that failed earlier (a write, sync or background job: every commit since was refused)
    /// closes with [`StorageError::Poisoned`] naming that first failure, even if the syncs made while closing
    /// succeed.
    pub fn close(self) -> Result<(), StorageError> {
        self.owner.shutdown()
    }
}

impl Inner {
    pub fn current_view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Stores the view `next` builds from the current one, under the view writers' lock: a memtable switch
    /// and an install never lose each other's change.
    pub(super) fn replace_view(&self, next: impl FnOnce(&View) -> View) {
        let _writer = self.view_writer.lock();
        let current = self.view.load();
        self.view.store(Arc::new(next(&current)));
    }

    fn check_open(&self) -> Result<(), StorageError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    /// `f` of the value of `key` at `seq` (or the latest), read in place.
    pub fn get_with_at<R>(
        &self,
        key: &[u8],
        seq: Option<u64>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, StorageError> {
        self.check_open()?;
        let (view, seq) = self.read_point(seq);
        Ok(match lookup(&view, key, seq)? {
            Lookup::Found(v, _) => Some(f(v.as_ref())),
            Lookup::Deleted(_) | Lookup::Absent => None,
        })
    }

    /// Whether `key` was written in `(after, seq]` (`seq` the latest commit if `None`), if the memtables alone
    /// can tell (see [`Db::written_after`](crate::Db::written_after)).
    pub fn written_after(&self, key: &[u8], after: u64, seq: Option<u64>) -> Result<Option<bool>, StorageError> {
        self.check_open()?;
        // The sequence is read before the view: every commit at or below it is then in the view's memtables,
        // or in its tables and at or below their `written_through`.
        let seq = seq.unwrap_or_else(|| self.last_seq.load(Ordering::Acquire));
        if after >= seq {
            return Ok(Some(false));
        }
        let view = self.view.load();
        if after < view.version.written_through {
            return Ok(None);
        }
        let hash = crate::format::key::key_hash(key);
        for mem in view.memtables() {
            match mem.get(key, seq, hash) {
                // The newest write at or below `seq`; older memtables hold only older ones.
                Lookup::Found(_, found) | Lookup::Deleted(found) => return Ok(Some(found > after)),
                Lookup::Absent => {}
            }
        }
        Ok(Some(false))
    }

    pub fn iter_at<K: AsRef<[u8]>, R: RangeBounds<K>>(
        &self,
        range: &R,
        seq: Option<u64>,
        reverse: bool,
    ) -> Result<Iter, StorageError> {
        let own = |b: Bound<&K>| match b {
            Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.iter_bounds(own(range.start_bound()), own(range.end_bound()), seq, reverse)
    }

    pub fn prefix_at(&self, prefix: &[u8], seq: Option<u64>, reverse: bool) -> Result<Iter, StorageError> {
        self.iter_bounds(Bound::Included(prefix.to_vec()), prefix_upper_bound(prefix), seq, reverse)
    }

    fn iter_bounds(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        seq: Option<u64>,
        reverse: bool,
    ) -> Result<Iter, StorageError> {
        self.check_open()?;
        let (view, seq) = self.read_point(seq);
        // One source per memtable, per level-0 table and per deeper non-empty level.
        let levels = &view.version.levels;
        let tables = levels.first().map_or(0, Vec::len) + levels.iter().skip(1).filter(|l| !l.is_empty()).count();
        let mut sources: Vec<Box<dyn Source>> = Vec::with_capacity(1 + view.imms.len() + tables);
        sources.push(Box::new(MemSource::new(view.mem.clone(), reverse)));
        for imm in &view.imms {
            sources.push(Box::new(MemSource::new(imm.clone(), reverse)));
        }
        view.version.add_sources(&mut sources, reverse)?;
        Ok(Iter::new(MergingIter::new(sources, reverse), seq, lower, upper, reverse))
    }

    pub fn register_snapshot(&self) -> u64 {
        self.snapshots.register_latest(&self.last_seq)
    }

    /// Versions shadowed at or below this sequence are invisible to every reader.
    pub fn oldest_snapshot(&self) -> u64 {
        self.snapshots.oldest(&self.last_seq)
    }

    /// The view to read, and the sequence to read at. Without a snapshot the sequence is read *after* the
    /// view, so a compaction installed before the view had a horizon no newer than it.
    fn read_point(&self, seq: Option<u64>) -> (Guard<Arc<View>>, u64) {
        let view = self.view.load();
        let seq = seq.unwrap_or_else(|| self.last_seq.load(Ordering::Acquire));
        (view, seq)
    }

    pub fn set_poison(&self, cause: &dyn std::fmt::Display) {
        let mut p = self.poison.lock();
        if p.is_none() {
            *p = Some(cause.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
        drop(p);
        self.bg_cv.notify_all();
    }

    pub fn poison_error(&self) -> Option<WriteError> {
        if self.closed.load(Ordering::Acquire) {
            return Some(WriteError::Storage(StorageError::Closed));
        }
        if !self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        let cause = self.poison.lock().clone().unwrap_or_default();
        Some(WriteError::Poisoned { cause })
    }

    pub fn stats(&self) -> Stats {
        let view = self.current_view();
        let c = &self.counters;
        let g = Counters::get;
        Stats {
            levels: view
                .version
                .levels
                .iter()
                .enumerate()
                .map(|(l, t)| LevelStats {
                    tables: t.len(),
                    bytes: view.version.level_bytes(l),
                    entries: t.iter().map(|t| t.meta.entries).sum(),
                    tombstones: t.iter().map(|t| t.meta.deletions).sum(),
                })
                .collect(),
            memtable_bytes: view.mem.approximate_size() as u64,
            immutable_memtables: view.imms.len(),
            last_sequence: self.last_seq.load(Ordering::Acquire),
            user_bytes_written: g(&c.user_bytes),
            commits: g(&c.commits),
            write_groups: g(&c.write_groups),
            wal_bytes_written: g(&c.wal_bytes),
            wal_syncs: g(&c.wal_syncs),
            flushes: g(&c.flushes),
            flush_bytes_written: g(&c.flush_bytes),
            ingested_batches: g(&c.ingests),
            compactions: g(&c.compactions),
            trivial_moves: g(&c.trivial_moves),
            compaction_bytes_read: g(&c.compaction_bytes_read),
            compaction_bytes_written: g(&c.compaction_bytes_written),
            write_slowdowns: g(&c.slowdowns),
            write_stall_micros: g(&c.stall_micros),
            cache_hits: self.ctx.cache.hits(),
            cache_misses: self.ctx.cache.misses(),
            cache_bytes: self.ctx.cache.usage() as u64,
            cache_index_filter_bytes: self.ctx.cache.index_filter_usage() as u64,
            recovered_torn_bytes: g(&c.recovered_torn_bytes),
        }
    }
}

/// The newest version of `key` at `seq` in a view: memtables newest first, then the tables.
pub(crate) fn lookup<'v>(view: &'v View, key: &[u8], seq: u64) -> Result<Lookup<ValueRef<'v>>, StorageError> {
    let hash = crate::format::key::key_hash(key);
    for mem in view.memtables() {
        let found = mem.get(key, seq, hash);
        if !found.is_absent() {
            return Ok(found.map(ValueRef::Mem));
        }
    }
    Ok(view.version.get(key, seq, hash)?.map(ValueRef::Block))
}

/// A value found by [`lookup`], read in place: in a memtable of the view, or in a table (a cached block or
/// the table's map).
pub(crate) enum ValueRef<'v> {
    Mem(&'v [u8]),
    Block(BlockValue<'v>),
}

impl AsRef<[u8]> for ValueRef<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            ValueRef::Mem(v) => v,
            ValueRef::Block(b) => b.as_ref(),
        }
    }
}

/// Makes a new block cache sized by the options.
pub(crate) fn new_cache(opts: &Options) -> Arc<BlockCache> {
    Arc::new(BlockCache::new(opts.block_cache_size))
}

/// The lock file of a data directory.
pub(crate) fn lock_path(dir: &Path) -> PathBuf {
    dir.join(names::LOCK)
}
