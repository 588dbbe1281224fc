//! Opening a directory, step by step: lock it, recover the manifest, replay the WALs it does not cover into
//! the memtable ([`crate::wal::replay`]), go on appending to the newest WAL, and remove leftovers.

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};

use crate::error::{OpenError, StorageError};
use crate::format::names::{self, FileKind};
use crate::io::FileLock;
use crate::log::LOG_FILE_HEADER_LEN;
use crate::manifest::VersionSet;
use crate::memtable::Memtable;
use crate::options::Options;
use crate::snapshot::SnapshotList;
use crate::stats::Counters;
use crate::version::TableContext;
use crate::wal::{replay_wals, WalState};

use super::write::CommitQueue;
use super::{lock_path, new_cache, BgState, Inner, View};

pub(super) fn open(opts: Options, dir: &Path) -> Result<(Inner, Box<dyn FileLock>), OpenError> {
    let storage = opts.storage.clone();
    let io_err = |e: io::Error| StorageError::io(dir, e);
    if !storage.exists(dir).map_err(io_err)? {
        if !opts.create_if_missing {
            return Err(OpenError::NotFound { path: dir.to_path_buf() });
        }
        storage.create_dir_all(dir).map_err(io_err)?;
    }
    let lock_file = lock_path(dir);
    let lock = storage.lock(&lock_file).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => OpenError::Locked { path: lock_file.clone() },
        _ => StorageError::io(&lock_file, e).into(),
    })?;
    let listing = storage.list(dir).map_err(io_err)?;
    let exists = listing.iter().any(|n| n == names::CURRENT);
    if !exists && !opts.create_if_missing {
        return Err(OpenError::NotFound { path: dir.to_path_buf() });
    }
    if exists && opts.error_if_exists {
        return Err(OpenError::AlreadyExists { path: dir.to_path_buf() });
    }
    let max_number = listing
        .iter()
        .filter_map(|n| match names::parse(n)? {
            FileKind::Wal(n) | FileKind::Table(n) | FileKind::Manifest(n) => Some(n),
            FileKind::Temp => None,
        })
        .max()
        .unwrap_or(0);
    let (retire, retired) = std::sync::mpsc::channel();
    let ctx = TableContext {
        storage: storage.clone(),
        dir: dir.to_path_buf(),
        cache: new_cache(&opts),
        retire: Some(retire),
    };
    let mut versions = VersionSet::open(ctx.clone(), max_number + 1, opts.max_manifest_size)?;
    let counters = Counters::default();
    let mem = Memtable::new(opts.memtable_size);
    let replayed = replay_wals(&*storage, dir, &listing, versions.log_number(), &mem, &counters)?;
    let last_seq = replayed.last_seq.max(versions.last_sequence());

    // Commits go on into the newest WAL, after its last intact record (as LevelDB's reuse_logs): the
    // replayed memtable stays as it is, so an open costs the replay alone, and no WAL is left behind.
    let reused = replayed.wals.last().filter(|w| w.valid_len >= LOG_FILE_HEADER_LEN as u64);
    let (wal, wal_number) = match reused {
        Some(w) => {
            let path = names::wal(dir, w.number);
            (WalState::reopen(&*storage, &path, w.valid_len, w.file_len, w.marked)?, w.number)
        }
        None => {
            let number = versions.new_file_number();
            let wal = WalState::create(&*storage, &names::wal(dir, number))?;
            storage.sync_dir(dir).map_err(io_err)?;
            (wal, number)
        }
    };
    for w in replayed.wals.iter().filter(|w| w.records == 0 && w.number != wal_number) {
        let _ = storage.remove(&names::wal(dir, w.number));
    }

    let version = versions.current();
    let live: HashSet<u64> = version.tables().map(|(_, t)| t.meta.number).collect();
    let (log_number, manifest) = (versions.log_number(), versions.manifest_number());
    for name in &listing {
        let obsolete = match names::parse(name) {
            Some(FileKind::Table(n)) => !live.contains(&n),
            Some(FileKind::Wal(n)) => n < log_number,
            Some(FileKind::Manifest(n)) => n != manifest,
            Some(FileKind::Temp) => true,
            None => false,
        };
        if obsolete {
            let _ = storage.remove(&dir.join(name));
        }
    }

    let inner = Inner {
        dir: dir.to_path_buf(),
        storage,
        ctx,
        view: ArcSwap::from_pointee(View { mem: Arc::new(mem), imms: Vec::new(), version }),
        view_writer: Mutex::new(()),
        spare_mem: Mutex::new(None),
        versions: Mutex::new(versions),
        wal: Mutex::new(wal),
        commit: CommitQueue::default(),
        last_seq: AtomicU64::new(last_seq),
        snapshots: SnapshotList::default(),
        bg: Mutex::new(BgState::default()),
        bg_cv: Condvar::new(),
        compaction_lock: Mutex::new(()),
        retired: Mutex::new(Some(retired)),
        wal_pins: AtomicUsize::new(0),
        poison: Mutex::new(None),
        poisoned: AtomicBool::new(false),
        buffered_dirty: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        counters,
        opts,
    };
    Ok((inner, lock))
}
