//! Large batches written straight to tables instead of through the WAL and the memtable.
//!
//! A batch of at least [`Options::ingest_threshold`](crate::Options::ingest_threshold) bytes is sorted,
//! written to new tables and synced; the manifest edit that adds them is its commit point, as for a flush.
//! So that the new tables hold the newest versions of their keys, the memtable is frozen and every frozen
//! memtable flushed first, and the tables join the deepest level with nothing overlapping them at or above
//! it (level 0, as the newest level-0 tables, if a level-0 table overlaps or a compaction is running: an
//! ingest never waits for one); the commit leader holds the queue meanwhile, so no other write can slip in.
//! After a crash the batch is either in the manifest (whole) or its tables are orphans that the next open
//! removes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::batch::{Condition, WriteBatch};
use crate::compaction::merge::{merge, DropRules};
use crate::error::{StorageError, WriteError};
use crate::format::key;
use crate::iter::Source;
use crate::manifest::VersionEdit;
use crate::stats::Counters;
use crate::version::{TableMeta, NUM_LEVELS};

use super::Inner;

/// Bytes of user key reserved per operation of an ingested batch before its keys are copied out; longer
/// keys grow the buffer. An estimate: finding the keys' total length would take a pass over the whole
/// batch, a cache miss per operation.
const KEY_ROOM: usize = 32;

/// The operations of a stamped batch as a sorted source: internal keys in order, values read in place.
struct BatchSource {
    batch: WriteBatch,
    /// Every internal key, back to back (one allocation for the batch, not one per key).
    keys: Vec<u8>,
    /// One per operation, sorted by internal key.
    entries: Vec<BatchEntry>,
    pos: usize,
}

/// An operation of a [`BatchSource`]: where its internal key is in `keys` and its value in the batch.
#[derive(Debug, Clone, Copy)]
struct BatchEntry {
    /// [`key::window`] of the user key: unequal windows order two entries without reading their keys,
    /// which lie all over `keys` once the entries are sorted.
    window: u64,
    key_at: usize,
    value_at: usize,
    key_len: u32,
    value_len: u32,
}

impl BatchSource {
    /// Sorts the operations of `batch`, stamped with `first_seq`.
    fn new(mut batch: WriteBatch, first_seq: u64) -> Self {
        let base = batch.stamp(first_seq).as_ptr() as usize;
        let mut keys = Vec::with_capacity(batch.len() * (key::TRAILER_LEN + KEY_ROOM));
        let mut entries = Vec::with_capacity(batch.len());
        for (seq, (kind, user_key, value)) in (first_seq..).zip(batch.entries().flatten()) {
            let key_at = keys.len();
            key::append_internal_key(&mut keys, user_key, key::make_trailer(seq, kind));
            // A value is a slice of the batch's own buffer (an empty one may not be): keep its position,
            // so that the source can own the batch.
            let value_at = if value.is_empty() { 0 } else { (value.as_ptr() as usize).saturating_sub(base) };
            entries.push(BatchEntry {
                window: key::window(user_key, 0),
                key_at,
                value_at,
                key_len: (keys.len() - key_at) as u32,
                value_len: value.len() as u32,
            });
        }
        entries.sort_unstable_by(|a, b| a.window.cmp(&b.window).then_with(|| key::compare(a.key(&keys), b.key(&keys))));
        Self { batch, keys, entries, pos: 0 }
    }
}

impl BatchEntry {
    /// The entry's internal key, in its source's `keys`.
    fn key<'k>(&self, keys: &'k [u8]) -> &'k [u8] {
        keys.get(self.key_at..self.key_at + self.key_len as usize).unwrap_or_default()
    }
}

impl Source for BatchSource {
    fn seek(&mut self, target: Option<&[u8]>) -> Result<(), StorageError> {
        self.pos = match target {
            None => 0,
            Some(t) => self.entries.partition_point(|e| key::compare(e.key(&self.keys), t).is_lt()),
        };
        Ok(())
    }

    fn advance(&mut self) -> Result<(), StorageError> {
        self.pos += 1;
        Ok(())
    }

    fn key(&self) -> Option<&[u8]> {
        self.entries.get(self.pos).map(|e| e.key(&self.keys))
    }

    fn value(&self) -> &[u8] {
        self.entries
            .get(self.pos)
            .and_then(|e| self.batch.payload().get(e.value_at..e.value_at + e.value_len as usize))
            .unwrap_or_default()
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
        self.make_room(true, batch.encoded_len())?;
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
        // No compaction may change the levels between choosing one and installing there. A compaction
        // running now is not waited for (every writer waits behind the leader): the tables then join level 0
        // as its newest tables, which is right whatever that compaction installs.
        let no_compaction = self.compaction_lock.try_lock();
        let level = if no_compaction.is_some() { self.ingest_level(&outputs) } else { 0 };
        let edit = VersionEdit {
            last_sequence: Some(last_seq),
            added: outputs.into_iter().map(|m| (level, m)).collect(),
            ..VersionEdit::default()
        };
        self.install(edit, None)?;
        drop(no_compaction);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::key::ValueKind;

    /// The sort by window, then by key, yields internal-key order: keys that share their first eight
    /// bytes (and so their windows), keys shorter than a window, and several writes of one key, the
    /// latest first.
    #[test]
    fn a_batch_source_yields_internal_key_order_and_seeks() {
        let mut batch = WriteBatch::new();
        let users: Vec<Vec<u8>> = (0..300u32)
            .map(|i| match i % 4 {
                0 => format!("shared-prefix/{:05}", (i * 7919) % 1000).into_bytes(),
                1 => format!("s{}", i % 13).into_bytes(),
                2 => vec![0xff; (i % 11) as usize + 1],
                _ => format!("shared-p{}", i % 17).into_bytes(),
            })
            .collect();
        for (i, u) in users.iter().enumerate() {
            if i % 9 == 0 {
                batch.delete(u);
            } else {
                batch.put(u, i.to_string());
            }
        }
        let first_seq = 100;
        let mut want: Vec<(Vec<u8>, Vec<u8>)> = users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let (kind, value) = if i % 9 == 0 {
                    (ValueKind::Delete, Vec::new())
                } else {
                    (ValueKind::Put, i.to_string().into_bytes())
                };
                (key::internal_key(u, key::make_trailer(first_seq + i as u64, kind)), value)
            })
            .collect();
        want.sort_by(|a, b| key::compare(&a.0, &b.0));
        let mut source = BatchSource::new(batch, first_seq);
        source.seek(None).unwrap();
        let mut got = Vec::new();
        while let Some(k) = source.key() {
            got.push((k.to_vec(), source.value().to_vec()));
            source.advance().unwrap();
        }
        assert_eq!(got, want);
        for (i, (k, _)) in want.iter().enumerate() {
            source.seek(Some(k)).unwrap();
            assert_eq!(source.key(), Some(k.as_slice()), "seek to entry {i}");
        }
        source.seek(Some(&key::internal_key(&[0xff; 40], 0))).unwrap();
        assert_eq!(source.key(), None);
    }

    /// Regression: an ingest waited for a running compaction while holding commit leadership, so every
    /// writer stalled behind the compaction. With the compaction lock held elsewhere, the ingest must finish,
    /// into level 0, its batch shadowing older versions of its keys.
    #[test]
    fn an_ingest_does_not_wait_for_a_running_compaction() {
        use std::sync::mpsc;
        use std::sync::Arc;

        let fs = crate::io::MemStorage::new();
        let db = crate::Db::builder()
            .storage(Arc::new(fs))
            .ingest_threshold(4 * 1024)
            .open(std::path::Path::new("/db"))
            .unwrap();
        db.put(b"k0500", b"old").unwrap();
        db.flush().unwrap();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (held_tx, held_rx) = mpsc::channel::<()>();
        let inner = db.inner().clone();
        // A compaction in progress, as far as the ingest can tell: the lock is held until the ingest is done,
        // or for 30 s if the ingest waits for it (then the test fails below).
        let holder = std::thread::spawn(move || {
            let _running = inner.compaction_lock.lock();
            held_tx.send(()).unwrap();
            done_rx.recv_timeout(std::time::Duration::from_secs(30)).is_ok()
        });
        held_rx.recv().unwrap();
        let mut batch = WriteBatch::new();
        for i in 0..1000 {
            batch.put(format!("k{i:04}"), vec![b'v'; 40]);
        }
        db.write(batch).unwrap();
        done_tx.send(()).unwrap();
        assert!(holder.join().unwrap(), "the ingest waited for the compaction lock");
        assert_eq!(db.stats().ingested_batches, 1);
        assert_eq!(db.get(b"k0500").unwrap(), Some(vec![b'v'; 40]));
        assert!(db.stats().levels[0].tables >= 2, "{:?}", db.stats().levels);
    }
}
