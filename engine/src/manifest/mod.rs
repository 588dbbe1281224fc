//! The manifest: which tables are live at which level, changed atomically by appending checksummed
//! [`VersionEdit`]s to a log and syncing it. `CURRENT` names the live manifest and is replaced by
//! write-to-temp, sync, rename, sync directory. Every open starts a fresh manifest holding one snapshot
//! edit, so a manifest never grows past one session plus [`Options::max_manifest_size`](crate::Options).

mod edit;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{OpenError, StorageError};
use crate::format::coding::read_u32_at;
use crate::format::names;
use crate::format::{MANIFEST_FORMAT_VERSION, MANIFEST_MAGIC};
use crate::io::Storage;
use crate::log::{read_log, LogWriter};
use crate::version::{TableContext, Version};

pub(crate) use edit::VersionEdit;

pub(crate) struct VersionSet {
    ctx: TableContext,
    manifest: LogWriter,
    manifest_number: u64,
    next_file: u64,
    log_number: u64,
    last_sequence: u64,
    current: Arc<Version>,
    max_manifest_size: u64,
    /// Set by the first failed manifest write: the manifest on disk may then differ from the one edits
    /// would go to (a failed roll), so no further edit is made until the database is reopened.
    failed: bool,
}

/// The state read back from an existing manifest.
struct Recovered {
    version: Version,
    next_file: u64,
    log_number: u64,
    last_sequence: u64,
    old_manifest: PathBuf,
}

impl VersionSet {
    /// Opens the manifest named by `CURRENT`, or starts an empty one if there is none, and in both cases
    /// writes a fresh manifest. `min_next_file` is one past the largest file number found in the directory.
    pub fn open(ctx: TableContext, min_next_file: u64, max_manifest_size: u64) -> Result<Self, OpenError> {
        let current_path = ctx.dir.join(names::CURRENT);
        let exists = ctx.storage.exists(&current_path).map_err(|e| StorageError::io(&current_path, e))?;
        let recovered = if exists { Some(Self::recover(&ctx)?) } else { None };
        let (version, next_file, log_number, last_sequence, old) = match recovered {
            Some(r) => (r.version, r.next_file, r.log_number, r.last_sequence, Some(r.old_manifest)),
            None => (Version::default(), 1, 0, 0, None),
        };
        let next_file = next_file.max(min_next_file).max(1);
        let manifest_path = ctx.dir.join(names::manifest_name(next_file));
        let manifest = LogWriter::create(&*ctx.storage, &manifest_path, MANIFEST_MAGIC, MANIFEST_FORMAT_VERSION)?;
        let mut set = VersionSet {
            ctx,
            manifest,
            manifest_number: next_file,
            next_file: next_file + 1,
            log_number,
            last_sequence,
            current: Arc::new(version),
            max_manifest_size,
            failed: false,
        };
        set.write_snapshot()?;
        if let Some(old) = old {
            let _ = set.ctx.storage.remove(&old);
        }
        Ok(set)
    }

    fn recover(ctx: &TableContext) -> Result<Recovered, OpenError> {
        let current_path = ctx.dir.join(names::CURRENT);
        let current = ctx.storage.read(&current_path).map_err(|e| StorageError::io(&current_path, e))?;
        let name = std::str::from_utf8(&current)
            .ok()
            .and_then(|s| s.strip_suffix('\n'))
            .filter(|n| matches!(names::parse(n), Some(names::FileKind::Manifest(_))))
            .ok_or_else(|| StorageError::corruption(&current_path, 0, "CURRENT does not name a manifest"))?;
        let path = ctx.dir.join(name);
        let bytes = ctx.storage.read(&path).map_err(|e| match e.kind() {
            // A damaged CURRENT can name a manifest that never existed: that is CURRENT's fault.
            std::io::ErrorKind::NotFound => {
                StorageError::corruption(&current_path, 0, format!("CURRENT names {name}, which does not exist"))
            }
            _ => StorageError::io(&path, e),
        })?;
        if let Some(found) = read_u32_at(&bytes, 8).filter(|v| *v > MANIFEST_FORMAT_VERSION) {
            return Err(OpenError::UnsupportedVersion { file: path, found, supported: MANIFEST_FORMAT_VERSION });
        }
        // Every edit is synced before the next is written: an intact edit after damage proves it synced.
        let log = read_log(&bytes, &path, MANIFEST_MAGIC, MANIFEST_FORMAT_VERSION, &|_, _| Some(u64::MAX))?;
        if log.records.is_empty() {
            return Err(StorageError::corruption(&path, 0, "manifest holds no complete edit").into());
        }
        let (mut version, mut next_file, mut log_number, mut last_sequence) = (Version::default(), 0, 0, 0);
        for (offset, payload) in log.records {
            let edit = VersionEdit::decode(payload).map_err(|e| {
                StorageError::corruption(&path, offset + 8 + e.offset as u64, format!("manifest edit: {}", e.reason))
            })?;
            next_file = edit.next_file.unwrap_or(next_file);
            log_number = edit.log_number.unwrap_or(log_number);
            last_sequence = edit.last_sequence.unwrap_or(last_sequence).max(last_sequence);
            version = version.apply(&edit.removed, &edit.added, ctx).0;
        }
        let names: std::collections::HashSet<String> =
            ctx.storage.list(&ctx.dir).map_err(|e| StorageError::io(&ctx.dir, e))?.into_iter().collect();
        for (_, t) in version.tables() {
            let file = names::table(&ctx.dir, t.meta.number);
            let present = file.file_name().and_then(|n| n.to_str()).is_some_and(|n| names.contains(n));
            if !present {
                return Err(StorageError::corruption(&file, 0, "table named by the manifest is missing").into());
            }
        }
        Ok(Recovered { version, next_file, log_number, last_sequence, old_manifest: path })
    }

    pub fn current(&self) -> Arc<Version> {
        self.current.clone()
    }

    pub fn new_file_number(&mut self) -> u64 {
        let n = self.next_file;
        self.next_file += 1;
        n
    }

    /// The next file number [`VersionSet::new_file_number`] would hand out.
    pub fn next_file_number(&self) -> u64 {
        self.next_file
    }

    pub fn log_number(&self) -> u64 {
        self.log_number
    }

    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    pub fn manifest_number(&self) -> u64 {
        self.manifest_number
    }

    /// Makes `edit` durable in the manifest, then installs the version it produces and marks the tables it
    /// removes obsolete. On error nothing is installed.
    pub fn log_and_apply(&mut self, mut edit: VersionEdit) -> Result<Arc<Version>, StorageError> {
        if self.failed {
            return Err(StorageError::io(
                &self.ctx.dir,
                std::io::Error::other("an earlier manifest write failed; reopen the database"),
            ));
        }
        edit.next_file = Some(self.next_file);
        let (version, removed) = self.current.apply(&edit.removed, &edit.added, &self.ctx);
        let old = (self.current.clone(), self.log_number, self.last_sequence);
        self.current = Arc::new(version);
        self.log_number = edit.log_number.unwrap_or(self.log_number);
        self.last_sequence = edit.last_sequence.unwrap_or(self.last_sequence).max(self.last_sequence);
        let result = if self.manifest.len() > self.max_manifest_size {
            self.roll()
        } else {
            self.manifest.append_record(&edit.encode()).and_then(|()| self.manifest.sync().map(drop)).and_then(|()| {
                // The seal: an empty edit, synced after the edit it follows. Nothing acts on an edit (WALs and
                // tables are removed after this returns) before its seal is durable, so at recovery damage
                // followed by an intact record is corruption, and a damaged last edit is a torn append that
                // nothing relied on. Without it, damage to the last edit would be dropped as a torn tail
                // although the WALs it retired are gone.
                self.manifest.append_record(&[])?;
                self.manifest.sync().map(drop)
            })
        };
        if let Err(e) = result {
            (self.current, self.log_number, self.last_sequence) = old;
            self.failed = true;
            return Err(e);
        }
        for t in removed {
            t.mark_obsolete();
        }
        Ok(self.current.clone())
    }

    /// Starts a new manifest holding the whole current state.
    fn roll(&mut self) -> Result<(), StorageError> {
        let number = self.new_file_number();
        let path = self.ctx.dir.join(names::manifest_name(number));
        let old = self.ctx.dir.join(names::manifest_name(self.manifest_number));
        self.manifest = LogWriter::create(&*self.ctx.storage, &path, MANIFEST_MAGIC, MANIFEST_FORMAT_VERSION)?;
        self.manifest_number = number;
        self.write_snapshot()?;
        let _ = self.ctx.storage.remove(&old);
        Ok(())
    }

    /// Writes one edit describing the whole state to the (new, empty) manifest, syncs it and points
    /// `CURRENT` at it.
    fn write_snapshot(&mut self) -> Result<(), StorageError> {
        let state = ManifestState {
            version: &self.current,
            next_file: self.next_file,
            log_number: self.log_number,
            last_sequence: self.last_sequence,
        };
        write_snapshot(&*self.ctx.storage, &self.ctx.dir, &mut self.manifest, self.manifest_number, &state)
    }
}

/// The whole state a manifest describes.
pub(crate) struct ManifestState<'a> {
    pub version: &'a Version,
    pub next_file: u64,
    pub log_number: u64,
    pub last_sequence: u64,
}

/// Writes one edit describing `state` to `manifest` (new and empty, number `manifest_number`, in `dir`),
/// syncs it and points `CURRENT` at it: how every manifest starts, and how a checkpoint's copy gets its own.
pub(crate) fn write_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    manifest: &mut LogWriter,
    manifest_number: u64,
    state: &ManifestState<'_>,
) -> Result<(), StorageError> {
    let mut edit = VersionEdit {
        log_number: Some(state.log_number),
        next_file: Some(state.next_file),
        last_sequence: Some(state.last_sequence),
        ..VersionEdit::default()
    };
    for (level, t) in state.version.tables() {
        edit.added.push((level, t.meta.clone()));
    }
    manifest.append_record(&edit.encode())?;
    manifest.sync()?;
    storage.sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    let tmp = dir.join("CURRENT.tmp");
    let current = dir.join(names::CURRENT);
    let mut f = storage.create(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
    f.append(format!("{}\n", names::manifest_name(manifest_number)).as_bytes())
        .and_then(|()| f.sync())
        .map_err(|e| StorageError::io(&tmp, e))?;
    drop(f);
    storage.rename(&tmp, &current).map_err(|e| StorageError::io(&current, e))?;
    storage.sync_dir(dir).map_err(|e| StorageError::io(dir, e))
}

/// Creates the manifest file numbered `number` in `dir`, its header written and synced.
pub(crate) fn create_manifest(storage: &dyn Storage, dir: &Path, number: u64) -> Result<LogWriter, StorageError> {
    LogWriter::create(storage, &dir.join(names::manifest_name(number)), MANIFEST_MAGIC, MANIFEST_FORMAT_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{FaultKind, FaultOp, MemStorage, Storage};
    use crate::table::BlockCache;

    /// Regression (found by the I/O-error test): a manifest roll that failed after creating the new manifest
    /// left the version set writing to a manifest `CURRENT` did not name; a later edit then committed there
    /// and deleted tables the named manifest still referenced. Every edit after a failure must be refused.
    #[test]
    fn edits_are_refused_after_a_failed_manifest_write() {
        let fs = MemStorage::new();
        let dir = PathBuf::from("/db");
        fs.create_dir_all(&dir).unwrap();
        let ctx =
            TableContext { storage: Arc::new(fs.clone()), dir, cache: Arc::new(BlockCache::new(0)), retire: None };
        let mut set = VersionSet::open(ctx, 1, 0).unwrap();
        fs.fail(FaultOp::SyncDir, 0, FaultKind::NoSpace);
        let edit = VersionEdit { last_sequence: Some(5), ..VersionEdit::default() };
        assert!(set.log_and_apply(edit.clone()).is_err(), "the roll's directory sync fails");
        assert!(set.log_and_apply(edit).is_err(), "and nothing is written after it");
        assert_eq!(set.last_sequence(), 0);
    }
}
