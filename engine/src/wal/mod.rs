//! The write-ahead log: where every commit goes before it is acknowledged, until its memtable is flushed to
//! a table. Format: `docs/format/wal.md`.
//!
//! A WAL file is a record log ([`crate::log`], the framed, checksummed container the manifest shares) whose
//! records each carry one encoded write batch ([`crate::batch`]) or a sync marker. This module holds what is
//! the WAL's own:
//!
//! * [`format`](mod@format): its magic number, format version and reservation step;
//! * [`marker`]: the sync markers that tell damage in synced bytes from a torn tail;
//! * [`writer`]: [`WalState`], the live WAL (create, reopen, append behind a marker, seal at close);
//! * [`replay`]: reading the WALs at open and applying their batches to the memtable.
//!
//! When a WAL is created, switched or removed is the database's (`db/write.rs`, `db/background.rs`), and
//! the order of the steps of open is `db/recovery.rs`'s.

pub(crate) mod format;
pub(crate) mod marker;
pub(crate) mod replay;
pub(crate) mod writer;

use std::path::Path;

use crate::error::StorageError;
use crate::format::names::{self, FileKind};
use crate::log::{read_log, LogContents};

pub(crate) use format::WAL_FORMAT_VERSION;
use format::WAL_MAGIC;
pub(crate) use marker::marker_synced_through;
pub(crate) use replay::replay_wals;
pub(crate) use writer::WalState;

/// The numbers of the WALs named in `listing` (a data directory's entries) that an open replays: those from
/// `log_number` on (older ones are covered by tables), oldest first.
pub(crate) fn live_wals(listing: &[String], log_number: u64) -> Vec<u64> {
    let mut wals: Vec<u64> = listing
        .iter()
        .filter_map(|n| match names::parse(n) {
            Some(FileKind::Wal(n)) if n >= log_number => Some(n),
            _ => None,
        })
        .collect();
    wals.sort_unstable();
    wals
}

/// Reads a whole WAL file with the record log's reading rules, its sync markers deciding whether damage
/// followed by intact records is corruption or a torn tail (`docs/format/wal.md`, "Reading rules").
pub(crate) fn read_wal<'a>(bytes: &'a [u8], path: &Path) -> Result<LogContents<'a>, StorageError> {
    read_log(bytes, path, WAL_MAGIC, WAL_FORMAT_VERSION, &|_, payload| marker_synced_through(payload))
}
