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
    /// Entries in the table (every version of every key, tombstones included).
    pub entries: u64,
    /// Entries that are tombstones. 0 for tables written before the count was recorded, until a
    /// compaction rewrites them.
    pub deletions: u64,
    /// Whether some entry is newer than the oldest live snapshot. A compaction must then keep the
    /// tombstones that snapshot may need, so compacting the table for its tombstones may reclaim nothing.
    pub pinned: bool,
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

impl TableInfo {
    /// A table as a policy sees it (for policies' own tests; the engine fills every field).
    pub fn new(number: u64, size: u64, smallest: impl Into<Vec<u8>>, largest: impl Into<Vec<u8>>) -> Self {
        Self {
            number,
            size,
            entries: 0,
            deletions: 0,
            pinned: false,
            smallest: smallest.into(),
            largest: largest.into(),
        }
    }

    /// With these entry and tombstone counts.
    pub fn with_deletions(mut self, entries: u64, deletions: u64) -> Self {
        self.entries = entries;
        self.deletions = deletions;
        self
    }

    /// Whether the table's user-key range meets `[lo, hi]`.
    pub fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.smallest.as_slice() <= hi && self.largest.as_slice() >= lo
    }
}

/// A compaction to run: merge `inputs` (table numbers at `level`) into `output_level`.
///
/// * `output_level == level + 1`: the engine adds the tables of `output_level` that hold a key of an input
///   (tables inside the inputs' key range that hold none of their keys stay, and no output runs across
///   them). For level 0, whose tables overlap each other, it takes the oldest level-0 tables (at least one,
///   then as many as fit in [`Options::max_compaction_bytes`](crate::Options::max_compaction_bytes) with
///   the level-1 tables that hold their keys). Deeper levels take the named tables in key order while they
///   fit, at least one. A single input that overlaps nothing below is moved instead of rewritten.
/// * `output_level == level` (level 1 or deeper, exactly one input): the table is rewritten in place,
///   dropping the versions no snapshot sees and the tombstones that hide nothing deeper. Used to reclaim
///   the space of tombstones at the bottom of the tree.
///
/// The engine ignores other tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionTask {
    /// The level the inputs are taken from.
    pub level: usize,
    /// Table numbers at `level`.
    pub inputs: Vec<u64>,
    /// Where the merged tables go: `level + 1`, or `level` for a rewrite in place.
    pub output_level: usize,
}

/// Chooses what to compact. Called by the background compaction thread after every flush and
/// compaction, until it returns `None`.
pub trait CompactionPolicy: Send + Sync + std::fmt::Debug {
    /// The next compaction worth running, if any. `levels` has one entry per level, from 0.
    fn choose(&self, levels: &[LevelInfo]) -> Option<CompactionTask>;
}
