//! Compaction: the choice of what to merge (a [`CompactionPolicy`]) kept apart from the merge itself.

mod leveled;
pub(crate) mod merge;

pub use leveled::LeveledPolicy;

/// A table as a compaction policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableInfo {
    /// The table's file number.
    pub number: u64,
    /// Size of the file in bytes.
    pub size: u64,
    /// Smallest user key in the table.
    pub smallest: Vec<u8>,
    /// Largest user key in the table.
    pub largest: Vec<u8>,
}

/// One level as a compaction policy sees it. Level 0 lists newest first and its tables may overlap; deeper
/// levels are sorted by key and disjoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LevelInfo {
    /// The level's number, from 0.
    pub level: usize,
    /// Its tables.
    pub tables: Vec<TableInfo>,
}

impl LevelInfo {
    /// Total bytes of the level's tables.
    pub fn bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.size).sum()
    }
}

/// A compaction to run: merge `inputs` (table numbers at `level`) into `output_level`, which must be
/// `level + 1` (the engine ignores other tasks). The engine adds the tables of `output_level` that overlap the
/// inputs; for level 0, whose tables overlap each other, it always takes every level-0 table. A single input
/// that overlaps nothing below is moved instead of rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionTask {
    /// The level the inputs are taken from.
    pub level: usize,
    /// Table numbers at `level`.
    pub inputs: Vec<u64>,
    /// Where the merged tables go: `level + 1`.
    pub output_level: usize,
}

/// Chooses what to compact. Called by the background compaction thread after every flush and
/// compaction, until it returns `None`.
pub trait CompactionPolicy: Send + Sync + std::fmt::Debug {
    /// The next compaction worth running, if any. `levels` has one entry per level, from 0.
    fn choose(&self, levels: &[LevelInfo]) -> Option<CompactionTask>;
}
