//! WAL replay: the part of opening a database that reads the WALs the manifest does not cover, oldest
//! first, applies their batches to the memtable and cuts a torn tail off the newest. Deciding what to do
//! with the WALs afterwards (which to append to, which to delete) is `db/recovery.rs`'s. See
//! `docs/format/wal.md`, "Recovery (replay)".

use std::path::Path;

use crate::batch;
use crate::error::{OpenError, StorageError};
use crate::format::coding::read_u32_at;
use crate::format::names;
use crate::io::Storage;
use crate::log::{written_len, LOG_FILE_HEADER_LEN};
use crate::memtable::{Memtable, Put};
use crate::stats::Counters;

use super::marker::marker_synced_through;
use super::read_wal;
use super::WAL_FORMAT_VERSION;

/// A WAL read at open.
pub(crate) struct ReplayedWal {
    pub number: u64,
    /// Length of its intact prefix (after any torn tail was cut off).
    pub valid_len: u64,
    /// Length of the file: `valid_len`, or more if reserved space follows the records.
    pub file_len: u64,
    /// Number of intact records, sync markers included.
    pub records: usize,
    /// How much of it sync markers vouch for: its valid length if it ends with a marker, else the largest
    /// `synced_through` of its markers (0 if none). Appends and close add a marker when it is short of the
    /// synced length, so records a crashed session left unvouched are covered again.
    pub marked: u64,
}

/// What replay found.
pub(crate) struct Replayed {
    /// The last sequence number replayed (0 if none).
    pub last_seq: u64,
    /// Every WAL read, oldest first.
    pub wals: Vec<ReplayedWal>,
}

/// Replays every WAL numbered `>= log_number` into `mem`, oldest first. A torn tail is cut off the newest
/// WAL that holds records (see [`only_headers_after`]); damage anywhere else is corruption.
pub(crate) fn replay_wals(
    storage: &dyn Storage,
    dir: &Path,
    listing: &[String],
    log_number: u64,
    mem: &Memtable,
    counters: &Counters,
) -> Result<Replayed, OpenError> {
    let wals = super::live_wals(listing, log_number);
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
        let log = read_wal(&bytes, &path)?;
        let mut file_len = bytes.len() as u64;
        if let Some(reason) = &log.torn_tail {
            if !only_headers_after(storage, dir, &wals[i + 1..]) {
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
            if let Some(synced) = marker_synced_through(payload) {
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
            if let Some(synced) = marker_synced_through(payload) {
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

/// Whether every WAL in `newer` holds no record: an intact header (and reserved zeros) alone, or a header
/// never synced. A torn
/// tail is accepted in a WAL followed only by such WALs: nothing was committed after it. The engine syncs a
/// WAL before it creates the next one, so it never leaves a torn WAL before a newer one; a data directory
/// written by an earlier build, which created the next WAL first, can hold one after a power cut.
pub(crate) fn only_headers_after(storage: &dyn Storage, dir: &Path, newer: &[u64]) -> bool {
    newer.iter().all(|number| {
        let path = names::wal(dir, *number);
        storage.read(&path).is_ok_and(|bytes| {
            unsynced_header(&bytes, &path)
                || read_wal(&bytes, &path).is_ok_and(|log| log.records.is_empty() && log.torn_tail.is_none())
        })
    })
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
        && read_wal(bytes, path).is_ok_and(|log| log.torn_tail.is_none());
    !intact
}
