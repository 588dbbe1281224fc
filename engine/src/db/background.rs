//! Background work: flushing frozen memtables, compacting, and syncing buffered WAL writes.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::compaction::merge::{merge, DropRules, TableSettings};
use crate::compaction::{CompactionTask, LevelInfo, TableInfo};
use crate::error::StorageError;
use crate::format::key;
use crate::format::names::{self, FileKind};
use crate::iter::{MemSource, Source};
use crate::manifest::VersionEdit;
use crate::memtable::Memtable;
use crate::stats::Counters;
use crate::table::TableIter;
use crate::version::NUM_LEVELS;
use crate::version::{LevelIter, TableHandle, ToRetire, Version};

use super::{Inner, View};

pub(super) fn spawn(inner: &Arc<Inner>) -> io::Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    type Job = fn(&Inner);
    let jobs: [(&str, Job); 4] = [
        ("cairn-flush", flush_loop),
        ("cairn-compact", compaction_loop),
        ("cairn-sync", sync_loop),
        ("cairn-retire", retire_loop),
    ];
    for (name, job) in jobs {
        let inner = inner.clone();
        threads.push(thread::Builder::new().name(name.to_owned()).spawn(move || job(&inner))?);
    }
    Ok(threads)
}

fn flush_loop(inner: &Inner) {
    loop {
        let imm = {
            let mut bg = inner.bg.lock();
            loop {
                if bg.shutdown {
                    return;
                }
                if !inner.poisoned.load(Ordering::Acquire) {
                    let view = inner.current_view();
                    if let Some(imm) = view.imms.first() {
                        break imm.clone();
                    }
                    // The active memtable's seeks start from fingers this thread rebuilds as it grows (by
                    // half, found here within one wait); a frozen memtable keeps its last.
                    if view.mem.fingers_due() {
                        let mem = view.mem.clone();
                        drop(view);
                        parking_lot::MutexGuard::unlocked(&mut bg, || mem.build_fingers());
                        continue;
                    }
                }
                inner.bg_cv.wait_for(&mut bg, Duration::from_millis(200));
            }
        };
        // A switch just froze `imm`: the next one takes a memtable made now, off the writers' path.
        inner.prepare_memtable();
        if let Err(e) = inner.flush_memtable(&imm) {
            inner.set_poison(&format!("flush failed: {e}"));
        }
    }
}

fn compaction_loop(inner: &Inner) {
    loop {
        {
            let mut bg = inner.bg.lock();
            // The request is left in place while a manual compaction runs, and taken up after it.
            while !bg.shutdown && (!bg.compaction_wanted || bg.manual_compactions > 0) {
                inner.bg_cv.wait_for(&mut bg, Duration::from_millis(500));
            }
            if bg.shutdown {
                return;
            }
            bg.compaction_wanted = false;
        }
        loop {
            let stop = {
                let bg = inner.bg.lock();
                bg.shutdown || bg.manual_compactions > 0
            };
            if stop || inner.poisoned.load(Ordering::Acquire) {
                break;
            }
            match inner.compact_once() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    inner.set_poison(&format!("compaction failed: {e}"));
                    break;
                }
            }
        }
    }
}

/// Unmaps and removes obsolete tables as they come, until shutdown sends `Stop`; what comes after is
/// retired by whoever lets go of it.
fn retire_loop(inner: &Inner) {
    let Some(retired) = inner.retired.lock().take() else { return };
    // Dropping a table retires it.
    while let Ok(message) = retired.recv() {
        match message {
            ToRetire::Table(table) => drop(table),
            ToRetire::Barrier(done) => {
                let _ = done.send(());
            }
            ToRetire::Stop => break,
        }
    }
    // What was sent before the stop: tables are retired (dropped) here, barriers answered.
    while let Ok(message) = retired.try_recv() {
        if let ToRetire::Barrier(done) = message {
            let _ = done.send(());
        }
    }
}

fn sync_loop(inner: &Inner) {
    let mut bg = inner.bg.lock();
    while !bg.shutdown {
        inner.bg_cv.wait_for(&mut bg, inner.opts.sync_interval);
        if inner.buffered_dirty.swap(false, Ordering::AcqRel) {
            match inner.wal.lock().writer.sync() {
                Ok(true) => Counters::add(&inner.counters.wal_syncs, 1),
                Ok(false) => {}
                Err(e) => inner.set_poison(&format!("background WAL sync failed: {e}")),
            }
        }
    }
}

impl Inner {
    pub(super) fn table_settings(&self, table_size: u64) -> TableSettings {
        TableSettings {
            block_size: self.opts.block_size,
            compression: self.opts.compression,
            bits_per_key: self.opts.bloom_bits_per_key,
            table_size,
            cache_blocks: None,
            partitions: None,
            cuts: Vec::new(),
        }
    }

    pub(super) fn next_file_number(&self) -> u64 {
        self.versions.lock().new_file_number()
    }

    /// Installs `edit` and the view that goes with it, under the version-set lock so that flushes and
    /// compactions install in the order they were logged.
    ///
    /// The tables the edit adds are opened first, before the lock is taken: loading a table's index and
    /// filter takes milliseconds for a large table, which the first read of it would otherwise wait for. A
    /// table that fails to open here opens on first use, which reports the failure to that read.
    pub(super) fn install(&self, edit: VersionEdit, flushed: Option<&Arc<Memtable>>) -> Result<(), StorageError> {
        let opened: Vec<_> = edit
            .added
            .iter()
            .filter(|(_, meta)| !edit.removed.iter().any(|(_, n)| *n == meta.number))
            .filter_map(|(_, meta)| self.ctx.open(meta.number).ok())
            .collect();
        let mut versions = self.versions.lock();
        let version = versions.log_and_apply(edit)?;
        for reader in opened {
            if let Some((_, t)) = version.tables().find(|(_, t)| t.meta.number == reader.number()) {
                t.adopt(reader);
            }
        }
        self.replace_view(|view| {
            let mut imms = view.imms.clone();
            if let Some(m) = flushed {
                imms.retain(|i| !Arc::ptr_eq(i, m));
            }
            View { mem: view.mem.clone(), imms, version }
        });
        Ok(())
    }

    /// Writes a frozen memtable to a level-0 table and retires the WALs it covered.
    pub(super) fn flush_memtable(&self, imm: &Arc<Memtable>) -> Result<(), StorageError> {
        let sources: Vec<Box<dyn Source>> = vec![Box::new(MemSource::new(imm.clone(), false))];
        let rules = DropRules { smallest_snapshot: self.oldest_snapshot(), tombstones_below: None };
        // A flush's blocks are the newest data, the likeliest to be read next: they go into the block cache as
        // they are written (compactions' outputs do not, so as not to push out what readers use).
        let cache_blocks = self.opts.cache_flushed_blocks.then(|| self.ctx.cache.clone());
        let settings = TableSettings { cache_blocks, ..self.table_settings(u64::MAX) };
        let outputs = merge(&*self.storage, &self.dir, sources, &settings, &rules, &mut || self.next_file_number())?;
        self.storage.sync_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
        let written: u64 = outputs.iter().map(|m| m.size).sum();
        let log_number = imm.next_wal();
        let edit = VersionEdit {
            log_number: Some(log_number),
            last_sequence: Some(self.last_seq.load(Ordering::Acquire)),
            added: outputs.into_iter().map(|m| (0, m)).collect(),
            ..VersionEdit::default()
        };
        self.install(edit, Some(imm))?;
        // A checkpoint copying WALs removes them when it is done (see `checkpoint`).
        if self.wal_pins.load(Ordering::Acquire) == 0 {
            self.remove_files(|kind| matches!(kind, FileKind::Wal(n) if n < log_number));
        }
        Counters::add(&self.counters.flushes, 1);
        Counters::add(&self.counters.flush_bytes, written);
        self.bg.lock().compaction_wanted = true;
        self.bg_cv.notify_all();
        Ok(())
    }

    /// Waits until the tables let go of so far are retired (unmapped and their files removed), when a
    /// background thread retires them.
    pub(super) fn wait_for_retired(&self) {
        let Some(to) = &self.ctx.retire else { return };
        let (done, answered) = std::sync::mpsc::sync_channel(1);
        // Once the thread is gone the barrier is dropped unanswered, and so is `done`: no wait.
        if to.send(ToRetire::Barrier(done)).is_ok() {
            let _ = answered.recv();
        }
    }

    /// Removes files of the given kinds; failures leave orphans for the next open.
    pub(super) fn remove_files(&self, pick: impl Fn(FileKind) -> bool) {
        let Ok(list) = self.storage.list(&self.dir) else { return };
        for name in list {
            if names::parse(&name).is_some_and(&pick) {
                let _ = self.storage.remove(&self.dir.join(name));
            }
        }
    }

    /// Asks the policy for one compaction and runs it. Returns whether one ran.
    pub(super) fn compact_once(&self) -> Result<bool, StorageError> {
        let _running = self.compaction_lock.lock();
        let version = self.versions.lock().current();
        let oldest_snapshot = self.oldest_snapshot();
        let levels: Vec<LevelInfo> = version
            .levels
            .iter()
            .enumerate()
            .map(|(level, tables)| LevelInfo {
                level,
                tables: tables
                    .iter()
                    .map(|t| TableInfo {
                        number: t.meta.number,
                        size: t.meta.size,
                        entries: t.meta.entries,
                        deletions: t.meta.deletions,
                        pinned: t.meta.max_seq > oldest_snapshot,
                        smallest: t.smallest_user().to_vec(),
                        largest: t.largest_user().to_vec(),
                    })
                    .collect(),
            })
            .collect();
        let Some(task) = self.opts.compaction_policy.choose(&levels) else { return Ok(false) };
        self.run_task(&version, &task)
    }

    fn run_task(&self, version: &Version, task: &CompactionTask) -> Result<bool, StorageError> {
        let level = task.level;
        let output_level = task.output_level;
        if output_level >= NUM_LEVELS {
            return Ok(false);
        }
        let Some(tables) = version.levels.get(level) else { return Ok(false) };
        if output_level == level {
            return self.rewrite_in_place(version, level, task);
        }
        if output_level != level + 1 {
            return Ok(false);
        }
        let cap = self.opts.compaction_cap();
        let bytes = |ts: &[Arc<TableHandle>]| ts.iter().map(|t| t.meta.size).sum::<u64>();
        // Level-0 tables overlap, so they go oldest first: a newer one left behind stays above the output,
        // where it belongs. Deeper levels take the named tables in key order. Either way as many as fit in
        // the cap together with the tables below them, and at least one.
        let candidates: Vec<_> = if level == 0 {
            tables.iter().rev().cloned().collect()
        } else {
            tables.iter().filter(|t| task.inputs.contains(&t.meta.number)).cloned().collect()
        };
        let mut inputs: Vec<Arc<TableHandle>> = Vec::new();
        // The tables below that hold an input's key are merged; the others stay, even inside the inputs'
        // key range (a level-0 table holds keys from across the key space, most of it empty of them).
        let mut below: Vec<Arc<TableHandle>> = Vec::new();
        for t in candidates {
            let mut wider = below.clone();
            for b in version.overlapping(output_level, t.smallest_user(), t.largest_user()) {
                if !wider.iter().any(|w| w.meta.number == b.meta.number)
                    && holds_key_in(&t, b.smallest_user(), b.largest_user())?
                {
                    wider.push(b);
                }
            }
            inputs.push(t);
            if inputs.len() > 1 && bytes(&inputs) + bytes(&wider) > cap {
                inputs.pop();
                break;
            }
            below = wider;
        }
        if inputs.is_empty() {
            return Ok(false);
        }
        below.sort_by(|a, b| key::compare(&a.meta.smallest, &b.meta.smallest));
        let lo = inputs.iter().map(|t| t.smallest_user()).min().unwrap_or_default();
        let hi = inputs.iter().map(|t| t.largest_user()).max().unwrap_or_default();
        let mut edit = VersionEdit::default();
        edit.removed.extend(inputs.iter().map(|t| (level, t.meta.number)));
        edit.removed.extend(below.iter().map(|t| (output_level, t.meta.number)));
        if level > 0 && inputs.len() == 1 && version.overlapping(output_level, lo, hi).is_empty() {
            edit.added.extend(inputs.iter().map(|t| (output_level, t.meta.clone())));
            self.install(edit, None)?;
            Counters::add(&self.counters.trivial_moves, 1);
            Counters::add(&self.counters.compactions, 1);
            return Ok(true);
        }
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        for t in &inputs {
            sources.push(Box::new(TableIter::for_compaction(t.reader()?.clone())));
        }
        if !below.is_empty() {
            sources.push(Box::new(LevelIter::for_compaction(below.clone())));
        }
        let read: u64 = inputs.iter().chain(&below).map(|t| t.meta.size).sum();
        // The tables that stay keep the level disjoint: no output runs across one.
        let cuts = version
            .levels
            .get(output_level)
            .into_iter()
            .flatten()
            .filter(|t| !below.iter().any(|b| b.meta.number == t.meta.number))
            .map(|t| t.smallest_user().to_vec())
            .collect();
        self.merge_and_install(version, sources, output_level, edit, read, cuts)?;
        Ok(true)
    }

    /// Rewrites the one table a task names at `level` (1 or deeper) into the same level: its outputs cover
    /// no more than its key range, so the level stays disjoint.
    fn rewrite_in_place(&self, version: &Version, level: usize, task: &CompactionTask) -> Result<bool, StorageError> {
        let [number] = task.inputs[..] else { return Ok(false) };
        if level == 0 {
            return Ok(false);
        }
        let Some(table) = version.levels.get(level).and_then(|ts| ts.iter().find(|t| t.meta.number == number)) else {
            return Ok(false);
        };
        let edit = VersionEdit { removed: vec![(level, number)], ..VersionEdit::default() };
        let sources: Vec<Box<dyn Source>> = vec![Box::new(TableIter::for_compaction(table.reader()?.clone()))];
        self.merge_and_install(version, sources, level, edit, table.meta.size, Vec::new())?;
        Ok(true)
    }

    fn merge_and_install(
        &self,
        version: &Version,
        sources: Vec<Box<dyn Source>>,
        output_level: usize,
        mut edit: VersionEdit,
        bytes_read: u64,
        cuts: Vec<Vec<u8>>,
    ) -> Result<(), StorageError> {
        let rules =
            DropRules { smallest_snapshot: self.oldest_snapshot(), tombstones_below: Some((version, output_level)) };
        let settings =
            TableSettings { partitions: self.opts.table_partitions, cuts, ..self.table_settings(self.opts.table_size) };
        let outputs = merge(&*self.storage, &self.dir, sources, &settings, &rules, &mut || self.next_file_number())?;
        self.storage.sync_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
        let written: u64 = outputs.iter().map(|m| m.size).sum();
        edit.added.extend(outputs.into_iter().map(|m| (output_level, m)));
        self.install(edit, None)?;
        let c = &self.counters;
        Counters::add(&c.compactions, 1);
        Counters::add(&c.compaction_bytes_read, bytes_read);
        Counters::add(&c.compaction_bytes_written, written);
        Ok(())
    }

    /// Merges every table into one sorted run at the deepest level in use (at least level 1).
    pub(super) fn compact_all(&self) -> Result<(), StorageError> {
        let _running = self.compaction_lock.lock();
        let version = self.versions.lock().current();
        let tables: Vec<_> = version.tables().map(|(l, t)| (l, t.clone())).collect();
        if tables.is_empty() {
            return Ok(());
        }
        let output_level = tables.iter().map(|(l, _)| *l).max().unwrap_or(1).max(1);
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        for (level, ts) in version.levels.iter().enumerate() {
            if level == 0 {
                for t in ts {
                    sources.push(Box::new(TableIter::for_compaction(t.reader()?.clone())));
                }
            } else if !ts.is_empty() {
                sources.push(Box::new(LevelIter::for_compaction(ts.clone())));
            }
        }
        let edit = VersionEdit {
            removed: tables.iter().map(|(l, t)| (*l, t.meta.number)).collect(),
            ..VersionEdit::default()
        };
        let read = tables.iter().map(|(_, t)| t.meta.size).sum();
        self.merge_and_install(&version, sources, output_level, edit, read, Vec::new())
    }
}

/// Whether `table` holds an entry (of any version, tombstones included) whose user key is in `[lo, hi]`: one
/// seek, so callers ask only about ranges that meet the table's.
fn holds_key_in(table: &TableHandle, lo: &[u8], hi: &[u8]) -> Result<bool, StorageError> {
    let mut iter = TableIter::for_compaction(table.reader()?.clone());
    iter.seek(Some(&key::internal_key(lo, key::seek_trailer(u64::MAX))))?;
    Ok(iter.key().is_some_and(|k| key::user_key(k) <= hi))
}
