//! The open blocks a [`Metrics`](super::Metrics) handle wrote last, with the state of their codes, so that
//! the next append to one goes on from that state instead of decoding the block again. An entry is used
//! only if the block's stored bytes are the ones remembered: a write that did not commit, or one by another
//! handle or process since, makes it miss, and the block is decoded as usual.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::block::Builder;

/// Bytes of block values and streams kept at most; past it the entries are dropped.
const BUDGET: usize = 16 << 20;

/// Open blocks by key: their bytes as written and the builder that wrote them.
#[derive(Default)]
pub(crate) struct OpenBlocks {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Vec<u8>, (Vec<u8>, Builder)>,
    bytes: usize,
}

impl std::fmt::Debug for OpenBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inner.lock().map_or(0, |e| e.map.len());
        f.debug_struct("OpenBlocks").field("blocks", &n).finish()
    }
}

impl OpenBlocks {
    /// The builder of block `key` if its stored bytes are `value`, as written last through this cache; the
    /// entry is removed either way.
    pub(crate) fn take(&self, key: &[u8], value: &[u8]) -> Option<Builder> {
        let mut e = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (bytes, builder) = e.map.remove(key)?;
        e.bytes = e.bytes.saturating_sub(2 * bytes.len());
        (bytes == value).then_some(builder)
    }

    /// Remembers that block `key` is being written as `value` by `builder`.
    pub(crate) fn put(&self, key: Vec<u8>, value: Vec<u8>, builder: Builder) {
        let mut e = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let size = 2 * value.len();
        if e.bytes + size > BUDGET {
            e.map.clear();
            e.bytes = 0;
        }
        e.bytes += size;
        if let Some((old, _)) = e.map.insert(key, (value, builder)) {
            e.bytes = e.bytes.saturating_sub(2 * old.len());
        }
    }
}
