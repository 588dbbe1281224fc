//! Opening a directory: lock it, recover the manifest, replay the WALs it does not cover into the memtable,
//! go on appending to the newest WAL, and remove leftovers.

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::batch;
use crate::error::{OpenError, StorageError};
use crate::format::coding::read_u32_at;
use crate::format::names::{self, FileKind};
use crate::format::{LOG_FILE_HEADER_LEN, WAL_FORMAT_VERSION, WAL_MAGIC, WAL_RESERVE_BYTES};
use crate::io::{FileLock, Storage};
use crate::log::{read_log, written_len, LogWriter};
use crate::manifest::VersionSet;
use crate::memtable::{Memtable, Put};
use crate::options::Options;
use crate::snapshot::SnapshotList;
use crate::stats::Counters;
use crate::version::TableContext;

use super::write::{CommitQueue, WalState};
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
    let ctx = TableContext { storage: storage.clone(), dir: dir.to_path_buf(), cache: new_cache(&opts) };
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
            let writer = LogWriter::reopen(&*storage, &names::wal(dir, w.number), w.valid_len, w.file_len)?
                .reserve_ahead(WAL_RESERVE_BYTES);
            (WalState::reopened(writer, w.marked), w.number)
        }
        None => {
            let number = versions.new_file_number();
            let writer = LogWriter::create(&*storage, &names::wal(dir, number), WAL_MAGIC, WAL_FORMAT_VERSION)?
                .reserve_ahead(WAL_RESERVE_BYTES);
            storage.sync_dir(dir).map_err(io_err)?;
            (WalState::new(writer), number)
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
        view: RwLock::new(Arc::new(View { mem: Arc::new(mem), imms: Vec::new(), version })),
        versions: Mutex::new(versions),
        wal: Mutex::new(wal),
        commit: CommitQueue::default(),
        last_seq: AtomicU64::new(last_seq),
        snapshots: SnapshotList::default(),
        bg: Mutex::new(BgState::default()),
        bg_cv: Condvar::new(),
        compaction_lock: Mutex::new(()),
        poison: Mutex::new(None),
        poisoned: AtomicBool::new(false),
        buffered_dirty: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        counters,
        opts,
    };
    Ok((inner, lock))
}

/// A WAL read at open.
struct ReplayedWal {
    number: u64,
    /// Length of its intact prefix (after any torn tail was cut off).
    valid_len: u64,
    /// Length of the file: `valid_len`, or more if reserved space follows the records.
    file_len: u64,
    records: usize,
    /// How much of it sync markers vouch for: its valid length if it ends with a marker, else the largest
    /// `synced_through` of its markers (0 if none). Appends and close add a marker when it is short of the
    /// synced length, so records a crashed session left unvouched are covered again.
    marked: u64,
}

/// What replay found.
struct Replayed {
    last_seq: u64,
    wals: Vec<ReplayedWal>,
}

/// Replays every WAL numbered `>= log_number` into `mem`, oldest first. A torn tail is cut off the newest
/// WAL; damage anywhere else is corruption.
fn replay_wals(
    storage: &dyn Storage,
    dir: &Path,
    listing: &[String],
    log_number: u64,
    mem: &Memtable,
    counters: &Counters,
) -> Result<Replayed, OpenError> {
    let mut wals: Vec<u64> = listing
        .iter()
        .filter_map(|n| match names::parse(n) {
            Some(FileKind::Wal(n)) if n >= log_number => Some(n),
            _ => None,
        })
        .collect();
    wals.sort_unstable();
    let mut last_seq = 0u64;
    let mut replayed = Vec::with_capacity(wals.len());
    for (i, number) in wals.iter().enumerate() {
        let path = names::wal(dir, *number);
        let bytes = storage.read(&path).map_err(|e| StorageError::io(&path, e))?;
        if unsynced_header(&bytes, &path) {
            // Nothing was ever committed to it: drop it like a torn tail. It may sit before a newer WAL when
            // the power failed again before its removal at the last open reached the disk.
            Counters::add(&counters.recovered_torn_bytes, bytes.len() as u64);
            replayed.push(ReplayedWal { number: *number, valid_len: 0, file_len: 0, records: 0, marked: 0 });
            continue;
        }
        if let Some(found) = read_u32_at(&bytes, 8).filter(|v| *v > WAL_FORMAT_VERSION) {
            return Err(OpenError::UnsupportedVersion { file: path, found, supported: WAL_FORMAT_VERSION });
        }
        let log = read_log(&bytes, &path, WAL_MAGIC, WAL_FORMAT_VERSION, &|_, p| batch::marker_synced_through(p))?;
        let mut file_len = bytes.len() as u64;
        if let Some(reason) = &log.torn_tail {
            if i + 1 != wals.len() {
                return Err(StorageError::corruption(
                    &path,
                    log.valid_len,
                    format!("damaged WAL before the newest: {reason}"),
                )
                .into());
            }
            storage.truncate(&path, log.valid_len).map_err(|e| StorageError::io(&path, e))?;
            file_len = log.valid_len;
            Counters::add(&counters.recovered_torn_bytes, (written_len(&bytes) as u64).saturating_sub(log.valid_len));
        }
        let mut marked = 0;
        for (i, (offset, payload)) in log.records.iter().enumerate() {
            if let Some(synced) = batch::marker_synced_through(payload) {
                marked = marked.max(synced);
                if i + 1 == log.records.len() && *offset + 8 + payload.len() as u64 == log.valid_len {
                    marked = log.valid_len;
                }
            }
        }
        replayed.push(ReplayedWal {
            number: *number,
            valid_len: log.valid_len,
            file_len,
            records: log.records.len(),
            marked,
        });
        let mut puts = Vec::new();
        for (offset, payload) in log.records {
            let bad = |at: usize, reason: &str| {
                StorageError::corruption(&path, offset + 8 + at as u64, format!("WAL batch: {reason}"))
            };
            let decoded = batch::decode(payload).map_err(|e| bad(e.offset, e.reason))?;
            if let Some(synced) = batch::marker_synced_through(payload) {
                if synced > offset {
                    return Err(bad(0, "sync marker claims bytes after itself").into());
                }
                continue;
            }
            if decoded.count == 0 {
                return Err(bad(0, "empty batch").into());
            }
            if decoded.first_seq <= last_seq {
                return Err(bad(0, "sequence numbers do not ascend").into());
            }
            let mut seq = decoded.first_seq;
            let mut entries = decoded.entries;
            for entry in entries.by_ref() {
                let (kind, key, value) = entry.map_err(|e| bad(e.offset, e.reason))?;
                puts.push(Put::new(key, seq, kind, value));
                seq += 1;
            }
            entries.finish().map_err(|e| bad(e.offset, e.reason))?;
            last_seq = seq - 1;
        }
        // A WAL's entries in one sorted insert: into an empty memtable, each is an append.
        mem.insert_all(&mut puts);
    }
    Ok(Replayed { last_seq, wals: replayed })
}

/// Whether `bytes`, a WAL, are no longer than a WAL header and not an intact one: the file was being
/// created when the machine stopped, its header written but not yet synced (its name can still be durable:
/// another thread may have synced the directory, or the header's sync failed). A WAL gets records only
/// after its header is synced, so such a file never held a commit. A damaged header followed by records is
/// still corruption.
fn unsynced_header(bytes: &[u8], path: &Path) -> bool {
    if bytes.len() > LOG_FILE_HEADER_LEN {
        return false;
    }
    let intact = bytes.len() == LOG_FILE_HEADER_LEN
        && read_u32_at(bytes, 8).is_some_and(|v| (1..=WAL_FORMAT_VERSION).contains(&v))
        && read_log(bytes, path, WAL_MAGIC, WAL_FORMAT_VERSION, &|_, p| batch::marker_synced_through(p))
            .is_ok_and(|log| log.torn_tail.is_none());
    !intact
}
