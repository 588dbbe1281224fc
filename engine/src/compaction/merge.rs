//! The merge at the heart of flushes and compactions: sources in, sorted tables out, with versions that no
//! snapshot can see and tombstones that hide nothing dropped on the way.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::StorageError;
use crate::format::key::{self, ValueKind};
use crate::format::names;
use crate::io::Storage;
use crate::iter::{MergingIter, Source};
use crate::table::{BlockCache, Compression};
use crate::table::{TableBuilder, TableSummary};
use crate::version::TableMeta;
use crate::version::Version;

/// How the merged tables are written.
pub(crate) struct TableSettings {
    pub block_size: usize,
    pub compression: Compression,
    pub bits_per_key: u32,
    /// Outputs are cut at the first key boundary past this size.
    pub table_size: u64,
    /// The cache the outputs' data blocks go into as they are written, if any
    /// ([`TableBuilder::cache_blocks`]).
    pub cache_blocks: Option<Arc<BlockCache>>,
    /// Outputs never hold keys of two partitions ([`Options::table_partitions`](crate::Options::table_partitions)).
    pub partitions: Option<fn(&[u8]) -> usize>,
    /// User keys, ascending, before which an output is cut: no output holds keys on both sides of one.
    pub cuts: Vec<Vec<u8>>,
}

/// What may be dropped.
pub(crate) struct DropRules<'a> {
    /// Versions shadowed by a newer version at or below this sequence are invisible to every reader.
    pub smallest_snapshot: u64,
    /// If set, tombstones at or below `smallest_snapshot` are dropped when no table of a level deeper than
    /// the given one may hold their key. Unset for flushes, whose output lands above older level-0 tables.
    pub tombstones_below: Option<(&'a Version, usize)>,
}

fn meta(number: u64, s: TableSummary) -> TableMeta {
    TableMeta {
        number,
        size: s.size,
        entries: s.entries,
        deletions: s.deletions,
        min_seq: s.min_seq,
        max_seq: s.max_seq,
        smallest: s.smallest,
        largest: s.largest,
    }
}

/// Merges `sources` into new tables in `dir`, numbered by `next_number`. On error, outputs written so far
/// are removed.
pub(crate) fn merge(
    storage: &dyn Storage,
    dir: &Path,
    sources: Vec<Box<dyn Source>>,
    settings: &TableSettings,
    rules: &DropRules<'_>,
    next_number: &mut dyn FnMut() -> u64,
) -> Result<Vec<TableMeta>, StorageError> {
    let mut outputs = Vec::new();
    let result = merge_into(storage, dir, sources, settings, rules, next_number, &mut outputs);
    if result.is_err() {
        for m in &outputs {
            let _ = storage.remove(&names::table(dir, m.number));
        }
    }
    result.map(|()| outputs)
}

/// A merge gives up its core about this often, if another thread is waiting for one.
const YIELD_EVERY: Duration = Duration::from_millis(1);
/// Entries merged between two looks at the clock.
const ENTRIES_PER_CLOCK: u32 = 64;

/// Makes a long merge yield its core every [`YIELD_EVERY`] of running.
///
/// On a machine with few cores a flush or a compaction runs beside the threads that read and commit. The
/// scheduler lets a running thread finish its slice (up to a scheduler tick: 4 ms at 250 Hz) before a
/// thread waiting on the same core runs, so a read or a commit woken behind a merge could wait that long for
/// a CPU. A merge that yields every millisecond lets such a thread run first; the merge keeps its
/// fair share of the CPU, and a yield with nobody waiting returns at once.
struct Pacer<C: FnMut() -> Instant, Y: FnMut()> {
    now: C,
    yield_now: Y,
    since: Instant,
    entries: u32,
}

impl<C: FnMut() -> Instant, Y: FnMut()> Pacer<C, Y> {
    fn new(mut now: C, yield_now: Y) -> Self {
        let since = now();
        Self { now, yield_now, since, entries: 0 }
    }

    /// Called once per entry merged.
    fn entry(&mut self) {
        self.entries += 1;
        if self.entries < ENTRIES_PER_CLOCK {
            return;
        }
        self.entries = 0;
        let now = (self.now)();
        if now.duration_since(self.since) >= YIELD_EVERY {
            (self.yield_now)();
            self.since = (self.now)();
        }
    }
}

fn merge_into(
    storage: &dyn Storage,
    dir: &Path,
    sources: Vec<Box<dyn Source>>,
    settings: &TableSettings,
    rules: &DropRules<'_>,
    next_number: &mut dyn FnMut() -> u64,
    outputs: &mut Vec<TableMeta>,
) -> Result<(), StorageError> {
    let mut merged = MergingIter::new(sources, false);
    merged.seek(None)?;
    let mut builder: Option<(u64, TableBuilder)> = None;
    // The user key of the entries being merged (reused: no allocation per key); `None` before the first.
    let mut current: Option<Vec<u8>> = None;
    let mut newer_seq = u64::MAX;
    let mut pacer = Pacer::new(Instant::now, std::thread::yield_now);
    // The next cut not yet passed, and the partition prefix of the keys of the output being written.
    let mut next_cut = 0;
    let mut partition: Vec<u8> = Vec::new();
    while let Some(ikey) = merged.key() {
        pacer.entry();
        let (ukey, trailer) = key::split(ikey);
        if current.as_deref() != Some(ukey) {
            let mut cut = builder.as_ref().is_some_and(|(_, b)| b.estimated_size() >= settings.table_size);
            while settings.cuts.get(next_cut).is_some_and(|c| c.as_slice() <= ukey) {
                next_cut += 1;
                cut = true;
            }
            if let Some(prefix_len) = settings.partitions {
                let prefix = ukey.get(..prefix_len(ukey)).unwrap_or(ukey);
                if prefix != partition.as_slice() {
                    partition.clear();
                    partition.extend_from_slice(prefix);
                    cut = true;
                }
            }
            if cut {
                if let Some((number, b)) = builder.take() {
                    outputs.push(meta(number, b.finish()?));
                }
            }
            let current = current.get_or_insert_with(Vec::new);
            current.clear();
            current.extend_from_slice(ukey);
            newer_seq = u64::MAX;
        }
        let seq = key::trailer_seq(trailer);
        let shadowed = newer_seq <= rules.smallest_snapshot;
        let dead_tombstone = key::trailer_kind(trailer) == Some(ValueKind::Delete)
            && seq <= rules.smallest_snapshot
            && rules.tombstones_below.is_some_and(|(v, level)| !v.deeper_may_contain(level, ukey));
        newer_seq = seq;
        if !shadowed && !dead_tombstone {
            if builder.is_none() {
                let number = next_number();
                let path = names::table(dir, number);
                let b = TableBuilder::create(
                    storage,
                    &path,
                    settings.block_size,
                    settings.compression,
                    settings.bits_per_key,
                );
                let mut b = b?;
                if let Some(cache) = &settings.cache_blocks {
                    b.cache_blocks(cache.clone(), number);
                }
                builder = Some((number, b));
            }
            if let Some((_, b)) = &mut builder {
                b.add(ikey, merged.value())?;
            }
        }
        merged.advance()?;
    }
    if let Some((number, b)) = builder {
        outputs.push(meta(number, b.finish()?));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_merge_yields_once_per_millisecond_of_running() {
        let start = Instant::now();
        // A clock that advances 10 us per look, and a count of yields.
        let looks = Cell::new(0u32);
        let yields = Cell::new(0u32);
        let clock = || {
            looks.set(looks.get() + 1);
            start + Duration::from_micros(10 * u64::from(looks.get()))
        };
        let mut pacer = Pacer::new(clock, || yields.set(yields.get() + 1));
        for _ in 0..ENTRIES_PER_CLOCK - 1 {
            pacer.entry();
        }
        assert_eq!(looks.get(), 1, "the clock is read once per {ENTRIES_PER_CLOCK} entries");
        // 10,000 looks at the clock: 100 ms of running, so about 100 yields.
        for _ in 0..10_000 * ENTRIES_PER_CLOCK {
            pacer.entry();
        }
        let y = yields.get();
        assert!((90..=100).contains(&y), "{y} yields in 100 ms");
        // After each yield the clock is read again: the next millisecond counts from the yield's end.
        assert_eq!(looks.get(), 1 + 10_000 + y);
    }

    #[test]
    fn a_short_merge_does_not_yield() {
        let yields = Cell::new(0u32);
        let start = Instant::now();
        let mut pacer = Pacer::new(|| start, || yields.set(yields.get() + 1));
        for _ in 0..100 * ENTRIES_PER_CLOCK {
            pacer.entry();
        }
        assert_eq!(yields.get(), 0);
    }
}
