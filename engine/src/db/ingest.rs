//! Large batches written straight to tables instead of through the WAL and the memtable.
//!
//! A batch of at least [`Options::ingest_threshold`](crate::Options::ingest_threshold) bytes is sorted,
//! written to new tables and synced; the manifest edit that adds them is its commit point, as for a flush.
//! So that the new tables hold the newest versions of their keys, the memtable is frozen and every frozen
//! memtable flushed first, and the tables join the deepest level with nothing overlapping them at or above
//! it (level 0, as the newest level-0 tables, if a level-0 table overlaps); the commit leader holds the
//! queue meanwhile, so no other write can slip in. After a crash the batch is either in the manifest
//! (whole) or its tables are orphans that the next open removes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::batch::{Condition, WriteBatch};
use crate::compaction::merge::{merge, DropRules};
use crate::error::{StorageError, WriteError};
use crate::format::key;
use crate::iter::Source;
use crate::manifest::{TableMeta, VersionEdit, NUM_LEVELS};
use crate::stats::Counters;

use super::Inner;

/// The operations of a stamped batch as a sorted source: internal keys in order, values read in place.
struct BatchSource {
    batch: WriteBatch,
    /// (internal key, value offset, value length), sorted by internal key.
    entries: Vec<(Vec<u8>, usize, usize)>,
    pos: usize,
}

impl BatchSource {
    /// Sorts the operations of `batch`, stamped with `first_seq`.
    fn new(mut batch: WriteBatch, first_seq: u64) -> Self {
        let base = batch.stamp(first_seq).as_ptr() as usize;
        let mut entries = Vec::with_capacity(batch.len());
        for (seq, (kind, user_key, value)) in (first_seq..).zip(batch.entries().flatten()) {
            let ikey = key::internal_key(user_key, key::make_trailer(seq, kind));
            // A value is a slice of the batch's own buffer (an empty one may not be): keep its position,
            // so that the source can own the batch.
            let at = if value.is_empty() { 0 } else { (value.as_ptr() as usize).saturating_sub(base) };
            entries.push((ikey, at, value.len()));
        }
        entries.sort_unstable_by(|a, b| key::compare(&a.0, &b.0));
        Self { batch, entries, pos: 0 }
    }
}

impl Source for BatchSource {
    fn seek(&mut self, target: Option<&[u8]>) -> Result<(), StorageError> {
        self.pos = match target {
            None => 0,
            Some(t) => self.entries.partition_point(|e| key::compare(&e.0, t).is_lt()),
        };
        Ok(())
    }

    fn advance(&mut self) -> Result<(), StorageError> {
        self.pos += 1;
        Ok(())
    }

    fn key(&self) -> Option<&[u8]> {
        self.entries.get(self.pos).map(|e| e.0.as_slice())
    }

    fn value(&self) -> &[u8] {
        self.entries.get(self.pos).and_then(|&(_, at, len)| self.batch.payload().get(at..at + len)).unwrap_or_default()
    }
}

impl Inner {
    /// Whether a batch this size, committed without conditions, goes to tables directly.
    pub(super) fn wants_ingest(&self, batch: &WriteBatch, conditions: &[Condition]) -> bool {
        conditions.is_empty() && batch.encoded_len() >= self.opts.ingest_threshold && !batch.is_empty()
    }

    /// Commits `batch` as new tables (see the module documentation). Returns the batch's last sequence
    /// number.
    pub(super) fn ingest(&self, batch: WriteBatch) -> Result<u64, WriteError> {
        self.make_room(true)?;
        self.wait_for_flushes()?;
        let first_seq = self.last_seq.load(Ordering::Acquire) + 1;
        let last_seq = first_seq + u64::from(batch.count()) - 1;
        let user_bytes = batch.encoded_len() as u64;
        let source: Vec<Box<dyn Source>> = vec![Box::new(BatchSource::new(batch, first_seq))];
        // No reader can see part of the batch, so an older version of a key inside it is shadowed for all.
        let rules = DropRules { smallest_snapshot: last_seq, tombstones_below: None };
        let outputs =
            merge(&*self.storage, &self.dir, source, &self.table_settings(self.opts.table_size), &rules, &mut || {
                self.next_file_number()
            })?;
        self.storage.sync_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
        let written: u64 = outputs.iter().map(|m| m.size).sum();
        // No compaction may change the levels between choosing one and installing there.
        let _no_compaction = self.compaction_lock.lock();
        let level = self.ingest_level(&outputs);
        let edit = VersionEdit {
            last_sequence: Some(last_seq),
            added: outputs.into_iter().map(|m| (level, m)).collect(),
            ..VersionEdit::default()
        };
        self.install(edit, None)?;
        self.last_seq.store(last_seq, Ordering::Release);
        let c = &self.counters;
        Counters::add(&c.user_bytes, user_bytes);
        Counters::add(&c.commits, 1);
        Counters::add(&c.ingests, 1);
        Counters::add(&c.flush_bytes, written);
        self.bg.lock().compaction_wanted = true;
        self.bg_cv.notify_all();
        Ok(last_seq)
    }

    /// The deepest level that the new tables can join: no table at it or above overlaps their key range,
    /// so every older version of their keys sits deeper and reads meet the new ones first. Level 0 if a
    /// level-0 table overlaps. An ingest into an empty store lands at the bottom level, where it needs no
    /// compaction and reads probe one table per key instead of each level-0 table.
    fn ingest_level(&self, outputs: &[TableMeta]) -> usize {
        let lo = outputs.iter().map(|m| key::user_key(&m.smallest)).min().unwrap_or_default();
        let hi = outputs.iter().map(|m| key::user_key(&m.largest)).max().unwrap_or_default();
        let version = self.versions.lock().current();
        (0..NUM_LEVELS).take_while(|&level| version.overlapping(level, lo, hi).is_empty()).last().unwrap_or(0)
    }

    /// Waits until no frozen memtable is left to flush.
    fn wait_for_flushes(&self) -> Result<(), WriteError> {
        let mut bg = self.bg.lock();
        loop {
            if let Some(e) = self.poison_error() {
                return Err(e);
            }
            if self.current_view().imms.is_empty() {
                return Ok(());
            }
            self.bg_cv.notify_all();
            self.bg_cv.wait_for(&mut bg, Duration::from_millis(20));
        }
    }
}
