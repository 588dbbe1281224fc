//! Checkpoints: a consistent copy of a live database in another directory, made while it keeps writing
//! (`cairn backup`). Tables never change once written, so they are hard-linked (copied where links are
//! impossible); the WALs the live tables do not cover are copied up to the length the current one had at
//! one instant, which ends at a record boundary; a fresh manifest describes exactly the linked tables. The
//! copy is a database of its own: opening it replays those WAL bytes, so it holds every commit written to
//! the WAL by that instant and nothing after.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::batch;
use crate::error::{Error, OpenError, StorageError};
use crate::format::names::{self, FileKind};
use crate::manifest::{create_manifest, write_snapshot, ManifestState};
use crate::wal::{live_wals, read_wal};

use super::{Db, Inner};

/// What [`Db::checkpoint`] made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointInfo {
    /// The new database's directory.
    pub dir: PathBuf,
    /// Sequence number of the newest commit the copy holds: a [`Db::open`] of it sees every commit up to
    /// this one.
    pub last_sequence: u64,
    /// Tables linked (or copied) into it.
    pub tables: u64,
    /// Their bytes.
    pub table_bytes: u64,
    /// WAL files copied.
    pub wal_files: u64,
    /// Their bytes.
    pub wal_bytes: u64,
}

/// Keeps WALs from being removed after flushes while a checkpoint copies them; the last guard to drop
/// removes those that became obsolete meanwhile.
struct WalPin<'a>(&'a Inner);

impl<'a> WalPin<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.wal_pins.fetch_add(1, Ordering::AcqRel);
        Self(inner)
    }
}

impl Drop for WalPin<'_> {
    fn drop(&mut self) {
        if self.0.wal_pins.fetch_sub(1, Ordering::AcqRel) == 1 {
            let log_number = self.0.versions.lock().log_number();
            self.0.remove_files(|kind| matches!(kind, FileKind::Wal(n) if n < log_number));
        }
    }
}

impl Db {
    /// Makes a consistent copy of the database in `dest`, a directory that must not exist or be empty,
    /// while other threads keep reading and writing (commits wait only for a few microseconds, while the
    /// copy's contents are fixed). Tables are hard links where `dest` is on the same file system, so a
    /// checkpoint costs little space until the live database compacts them away. The copy opens with
    /// [`Db::open`] and passes [`Check`](crate::Check).
    ///
    /// ```
    /// # fn main() -> Result<(), cairn_engine::Error> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = cairn_engine::Db::open(dir.path().join("live"))?;
    /// db.put("job/1", "PENDING")?;
    /// let info = db.checkpoint(dir.path().join("copy"))?;
    /// db.put("job/1", "RUNNING")?;
    /// let copy = cairn_engine::Db::open(&info.dir)?;
    /// assert_eq!(copy.get("job/1")?, Some(b"PENDING".to_vec()));
    /// # Ok(()) }
    /// ```
    pub fn checkpoint(&self, dest: impl AsRef<Path>) -> Result<CheckpointInfo, Error> {
        let inner = self.inner();
        inner.check_open()?;
        let dest = dest.as_ref();
        let storage = &*inner.storage;
        if storage.exists(dest).map_err(|e| StorageError::io(dest, e))?
            && !storage.list(dest).map_err(|e| StorageError::io(dest, e))?.is_empty()
        {
            return Err(OpenError::AlreadyExists { path: dest.to_path_buf() }.into());
        }
        storage.create_dir_all(dest).map_err(|e| StorageError::io(dest, e))?;
        let _pin = WalPin::new(inner);
        // One instant: no append is in progress under the WAL lock, and no flush or compaction installs
        // under the version-set lock (taken in that order, as the commit leader does).
        let (wal_path, wal_len, version, log_number, next_file, manifest_seq) = {
            let wal = inner.wal.lock();
            let versions = inner.versions.lock();
            (
                wal.writer.path().to_path_buf(),
                wal.writer.len(),
                versions.current(),
                versions.log_number(),
                versions.next_file_number(),
                versions.last_sequence(),
            )
        };
        let current_wal = names::parse(&file_name(&wal_path)).and_then(|k| match k {
            FileKind::Wal(n) => Some(n),
            _ => None,
        });
        let mut info = CheckpointInfo { dir: dest.to_path_buf(), last_sequence: manifest_seq, ..Default::default() };
        for (_, t) in version.tables() {
            let name = names::table(&inner.dir, t.meta.number);
            storage.link(&name, &names::table(dest, t.meta.number)).map_err(|e| StorageError::io(&name, e))?;
            info.tables += 1;
            info.table_bytes += t.meta.size;
        }
        let listing = storage.list(&inner.dir).map_err(|e| StorageError::io(&inner.dir, e))?;
        // A WAL newer than the current one is being created for the next memtable: it holds nothing yet.
        for n in live_wals(&listing, log_number).into_iter().filter(|&n| current_wal.is_some_and(|c| n <= c)) {
            let from = names::wal(&inner.dir, n);
            let mut bytes = storage.read(&from).map_err(|e| StorageError::io(&from, e))?;
            if Some(n) == current_wal {
                bytes.truncate(wal_len as usize);
            }
            if let Some(seq) = last_sequence_in(&bytes, &from)? {
                info.last_sequence = info.last_sequence.max(seq);
            }
            let to = names::wal(dest, n);
            let mut f = storage.create(&to).map_err(|e| StorageError::io(&to, e))?;
            f.append(&bytes).and_then(|()| f.sync()).map_err(|e| StorageError::io(&to, e))?;
            info.wal_files += 1;
            info.wal_bytes += bytes.len() as u64;
        }
        let mut manifest = create_manifest(storage, dest, next_file)?;
        let state =
            ManifestState { version: &version, next_file: next_file + 1, log_number, last_sequence: manifest_seq };
        write_snapshot(storage, dest, &mut manifest, next_file, &state)?;
        Ok(info)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The sequence number of the last commit in a WAL's bytes, if it holds one.
fn last_sequence_in(bytes: &[u8], path: &Path) -> Result<Option<u64>, StorageError> {
    let contents = read_wal(bytes, path)?;
    Ok(contents
        .records
        .iter()
        .filter_map(|(_, payload)| batch::decode(payload).ok())
        .filter(|b| b.count > 0)
        .map(|b| b.first_seq + u64::from(b.count) - 1)
        .max())
}
