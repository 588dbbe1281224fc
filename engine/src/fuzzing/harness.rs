//! What the model harnesses share: a small database over [`MemStorage`] and the decoding of an input into
//! operations.

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};

use crate::compaction::LeveledPolicy;
use crate::io::MemStorage;
use crate::options::{Durability, Options};
use crate::Db;

/// Options for a database on `fs` that flushes, compacts and rewrites its manifest after a few operations,
/// with every commit durable (`Immediate`), so that a power cut keeps exactly what was acknowledged.
pub fn options(fs: &MemStorage) -> Options {
    Db::builder()
        .storage(Arc::new(fs.clone()))
        .durability(Durability::Immediate)
        .memtable_size(4 * 1024)
        .table_size(4 * 1024)
        .block_size(256)
        .block_cache_size(64 * 1024)
        .compaction_policy(Arc::new(LeveledPolicy::new(2, 8 * 1024, 2)))
        .max_manifest_size(1024)
}

/// Decodes operations from `u` until the input runs out, at most `max` of them: an input's bytes all count
/// (a continue-flag per element, as `arbitrary_iter` has, would end random inputs after two operations on
/// average).
pub fn ops<'a, 'u, T: Arbitrary<'a>>(
    u: &'u mut Unstructured<'a>,
    max: usize,
) -> impl Iterator<Item = T> + use<'a, 'u, T> {
    std::iter::from_fn(move || if u.is_empty() { None } else { T::arbitrary(u).ok() }).take(max)
}
