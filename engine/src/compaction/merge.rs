//! The merge at the heart of flushes and compactions: sources in, sorted tables out, with versions that no
//! snapshot can see and tombstones that hide nothing dropped on the way.

use std::path::Path;
use std::sync::Arc;

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
    while let Some(ikey) = merged.key() {
        let (ukey, trailer) = key::split(ikey);
        if current.as_deref() != Some(ukey) {
            if builder.as_ref().is_some_and(|(_, b)| b.estimated_size() >= settings.table_size) {
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
