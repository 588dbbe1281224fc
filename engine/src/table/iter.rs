//! A cursor over one table, forward or reverse.

use std::sync::Arc;

use crate::error::StorageError;
use crate::iter::Source;

use super::block::BlockIter;
use super::reader::TableReader;

pub(crate) struct TableIter {
    table: Arc<TableReader>,
    reverse: bool,
    /// Whether blocks read from the file go into the block cache.
    fill_cache: bool,
    block_idx: usize,
    block: Option<BlockIter>,
}

impl TableIter {
    pub fn new(table: Arc<TableReader>, reverse: bool) -> Self {
        Self { table, reverse, fill_cache: true, block_idx: 0, block: None }
    }

    /// A forward cursor for a compaction: it takes blocks the cache holds, but leaves the blocks it reads
    /// from the file out of it. Its table is deleted once the compaction is installed, and the blocks of a
    /// whole table passing through the cache would evict the blocks that readers use.
    pub fn for_compaction(table: Arc<TableReader>) -> Self {
        Self { fill_cache: false, ..Self::new(table, false) }
    }

    fn load(&mut self, i: usize) -> Result<bool, StorageError> {
        if i >= self.table.block_count() {
            self.block = None;
            return Ok(false);
        }
        self.block_idx = i;
        self.block = Some(BlockIter::new(self.table.read_block(i, self.fill_cache)?));
        Ok(true)
    }

    /// Moves across block boundaries until positioned on an entry or exhausted.
    fn settle(&mut self) -> Result<(), StorageError> {
        while let Some(b) = &self.block {
            if b.valid() {
                return Ok(());
            }
            if self.reverse {
                match self.block_idx.checked_sub(1) {
                    Some(prev) => {
                        if self.load(prev)? {
                            if let Some(b) = &mut self.block {
                                b.seek_to_last();
                            }
                        }
                    }
                    None => self.block = None,
                }
            } else if self.load(self.block_idx + 1)? {
                if let Some(b) = &mut self.block {
                    b.seek_to_first();
                }
            }
        }
        Ok(())
    }
}

impl Source for TableIter {
    fn seek(&mut self, target: Option<&[u8]>) -> Result<(), StorageError> {
        let count = self.table.block_count();
        match (target, self.reverse) {
            (None, false) => {
                if self.load(0)? {
                    if let Some(b) = &mut self.block {
                        b.seek_to_first();
                    }
                }
            }
            (None, true) => {
                if let Some(last) = count.checked_sub(1) {
                    if self.load(last)? {
                        if let Some(b) = &mut self.block {
                            b.seek_to_last();
                        }
                    }
                } else {
                    self.block = None;
                }
            }
            (Some(t), false) => {
                if self.load(self.table.index()?.find_block(t))? {
                    if let Some(b) = &mut self.block {
                        b.seek(t);
                    }
                }
            }
            (Some(t), true) => {
                let i = self.table.index()?.find_block(t).min(count.saturating_sub(1));
                if self.load(i)? {
                    if let Some(b) = &mut self.block {
                        b.seek_for_prev(t);
                    }
                }
            }
        }
        self.settle()
    }

    fn prepare_seek(&self, target: &[u8]) {
        if !self.reverse {
            self.table.prepare_seek(target);
        }
    }

    fn advance(&mut self) -> Result<(), StorageError> {
        if let Some(b) = &mut self.block {
            if self.reverse {
                b.prev();
            } else {
                b.next();
            }
        }
        self.settle()
    }

    fn key(&self) -> Option<&[u8]> {
        self.block.as_ref().filter(|b| b.valid()).map(BlockIter::key)
    }

    fn value(&self) -> &[u8] {
        self.block.as_ref().map(BlockIter::value).unwrap_or_default()
    }
}
