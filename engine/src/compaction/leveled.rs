//! The leveled policy: level 0 merges into level 1 once it holds enough tables; each deeper level has a
//! byte budget ten times the one above it and, once over budget, pushes one table at a time (round-robin
//! across its key range) into the next level.
//!
//! Deletes reclaim space through tombstone density: when no level is over its budget, a table whose
//! tombstones make up at least the tombstone ratio of its entries is compacted anyway. It goes into the
//! next level if a deeper level may hold the keys its tombstones hide, and is rewritten in place otherwise,
//! which drops them. A table pushed for size that could drop its tombstones that way is rewritten in
//! place too, instead of being moved down with them.

use parking_lot::Mutex;

use super::{CompactionPolicy, CompactionTask, LevelInfo, TableInfo};

/// Default of [`LeveledPolicy::tombstone_ratio`].
const DEFAULT_TOMBSTONE_RATIO: f64 = 0.5;

/// Leveled compaction, as in LevelDB, plus compaction by tombstone density.
#[derive(Debug)]
pub struct LeveledPolicy {
    level0_trigger: usize,
    level1_bytes: u64,
    multiplier: u64,
    tombstone_ratio: f64,
    /// Per level, the largest key of the last table pushed down, so the next pick starts after it.
    cursors: Mutex<Vec<Vec<u8>>>,
}

impl Default for LeveledPolicy {
    fn default() -> Self {
        Self::new(4, 256 << 20, 10)
    }
}

impl LeveledPolicy {
    /// A leveled policy: compact level 0 at `level0_trigger` tables (default 4); level 1 may hold
    /// `level1_bytes` (default 256 MiB) and each deeper level `multiplier` (default 10) times more.
    /// The tombstone ratio is 0.5 (see [`LeveledPolicy::tombstone_ratio`]).
    pub fn new(level0_trigger: usize, level1_bytes: u64, multiplier: u64) -> Self {
        Self {
            level0_trigger: level0_trigger.max(1),
            level1_bytes: level1_bytes.max(1),
            multiplier: multiplier.max(2),
            tombstone_ratio: DEFAULT_TOMBSTONE_RATIO,
            cursors: Mutex::new(Vec::new()),
        }
    }

    /// Share of a table's entries that, once tombstones, gets the table compacted even though no level is
    /// over its budget (tables newer than the oldest live snapshot wait for it). Lower reclaims the space
    /// of deletes sooner for more compaction work; a ratio above 1 turns this off. Default: 0.5.
    pub fn tombstone_ratio(mut self, ratio: f64) -> Self {
        self.tombstone_ratio = ratio;
        self
    }

    fn budget(&self, level: usize) -> u64 {
        let mut b = self.level1_bytes;
        for _ in 1..level {
            b = b.saturating_mul(self.multiplier);
        }
        b
    }

    /// Whether the table's tombstones are dense enough to compact it for them, and a compaction now may
    /// drop them.
    fn dense(&self, t: &TableInfo) -> bool {
        t.deletions > 0 && !t.pinned && t.deletions as f64 >= self.tombstone_ratio * t.entries as f64
    }

    /// The task that reclaims the tombstones of `table` at `level` (1 or deeper): a rewrite in place if no
    /// deeper level may hold the keys they hide, else a push into the next level.
    fn reclaim(levels: &[LevelInfo], level: usize, table: &TableInfo) -> CompactionTask {
        let deeper =
            levels.iter().skip(level + 1).any(|l| l.tables.iter().any(|t| t.overlaps(&table.smallest, &table.largest)));
        let output_level = if deeper && level + 1 < levels.len() { level + 1 } else { level };
        CompactionTask { level, inputs: vec![table.number], output_level }
    }
}

fn level0_task(info: &LevelInfo) -> CompactionTask {
    CompactionTask { level: 0, inputs: info.tables.iter().map(|t| t.number).collect(), output_level: 1 }
}

impl CompactionPolicy for LeveledPolicy {
    fn choose(&self, levels: &[LevelInfo]) -> Option<CompactionTask> {
        let last = levels.len().checked_sub(1)?;
        let mut best: Option<(f64, usize)> = None;
        for info in levels.iter().take(last) {
            let score = if info.level == 0 {
                info.tables.len() as f64 / self.level0_trigger as f64
            } else {
                info.bytes() as f64 / self.budget(info.level) as f64
            };
            if score >= 1.0 && best.is_none_or(|(s, _)| score > s) {
                best = Some((score, info.level));
            }
        }
        let Some((_, level)) = best else {
            // Nothing over budget: the table with the most tombstones worth reclaiming, if any.
            let mut pick: Option<(usize, &TableInfo)> = None;
            for info in levels {
                for t in &info.tables {
                    if self.dense(t) && pick.is_none_or(|(_, p)| t.deletions > p.deletions) {
                        pick = Some((info.level, t));
                    }
                }
            }
            let (level, table) = pick?;
            return Some(if level == 0 { level0_task(levels.first()?) } else { Self::reclaim(levels, level, table) });
        };
        let info = levels.get(level)?;
        if level == 0 {
            return Some(level0_task(info));
        }
        let mut cursors = self.cursors.lock();
        if cursors.len() < levels.len() {
            cursors.resize(levels.len(), Vec::new());
        }
        let cursor = cursors.get_mut(level)?;
        // A table dense with tombstones goes first: pushed down, it cancels the data they hide. Otherwise
        // round-robin.
        let densest = info.tables.iter().filter(|t| self.dense(t)).max_by_key(|t| t.deletions);
        let table = match densest {
            Some(t) => t,
            None => {
                let t = info
                    .tables
                    .iter()
                    .find(|t| cursor.is_empty() || t.smallest > *cursor)
                    .or_else(|| info.tables.first())?;
                cursor.clone_from(&t.largest);
                t
            }
        };
        if self.dense(table) {
            // Rewritten in place when that drops its tombstones, rather than moved down with them.
            let task = Self::reclaim(levels, level, table);
            if task.output_level == level {
                return Some(task);
            }
        }
        Some(CompactionTask { level, inputs: vec![table.number], output_level: level + 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compaction::TableInfo;

    fn table(number: u64, size: u64, lo: &str, hi: &str) -> TableInfo {
        TableInfo::new(number, size, lo, hi)
    }

    fn levels(l0: Vec<TableInfo>, l1: Vec<TableInfo>) -> Vec<LevelInfo> {
        let mut out = vec![LevelInfo { level: 0, tables: l0 }, LevelInfo { level: 1, tables: l1 }];
        out.extend((2..7).map(|level| LevelInfo { level, tables: Vec::new() }));
        out
    }

    #[test]
    fn level0_compacts_at_trigger() {
        let p = LeveledPolicy::new(2, 1000, 10);
        assert_eq!(p.choose(&levels(vec![table(1, 10, "a", "b")], vec![])), None);
        let task = p.choose(&levels(vec![table(2, 10, "a", "b"), table(1, 10, "a", "c")], vec![])).unwrap();
        assert_eq!(task, CompactionTask { level: 0, inputs: vec![2, 1], output_level: 1 });
    }

    #[test]
    fn deeper_levels_push_tables_round_robin() {
        let p = LeveledPolicy::new(4, 100, 10);
        let l1 = vec![table(1, 60, "a", "c"), table(2, 60, "d", "f")];
        let first = p.choose(&levels(vec![], l1.clone())).unwrap();
        let second = p.choose(&levels(vec![], l1.clone())).unwrap();
        let third = p.choose(&levels(vec![], l1)).unwrap();
        assert_eq!((first.inputs[0], second.inputs[0], third.inputs[0]), (1, 2, 1));
        assert_eq!(first.output_level, 2);
    }

    fn level(level: usize, tables: Vec<TableInfo>) -> Vec<LevelInfo> {
        (0..7).map(|l| LevelInfo { level: l, tables: if l == level { tables.clone() } else { Vec::new() } }).collect()
    }

    #[test]
    fn a_level0_table_of_tombstones_compacts_below_the_trigger() {
        let p = LeveledPolicy::new(4, 1000, 10);
        let sparse = table(1, 10, "a", "z").with_deletions(10, 4);
        assert_eq!(p.choose(&level(0, vec![sparse.clone()])), None);
        let dense = table(2, 10, "a", "z").with_deletions(10, 5);
        let task = p.choose(&level(0, vec![dense.clone(), sparse])).unwrap();
        assert_eq!(task, CompactionTask { level: 0, inputs: vec![2, 1], output_level: 1 });
        let mut pinned = dense;
        pinned.pinned = true;
        assert_eq!(p.choose(&level(0, vec![pinned])), None, "a snapshot may need its tombstones");
        let off = LeveledPolicy::new(4, 1000, 10).tombstone_ratio(1.5);
        assert_eq!(off.choose(&level(0, vec![table(3, 10, "a", "z").with_deletions(10, 10)])), None);
    }

    #[test]
    fn tombstones_go_down_to_their_keys_and_are_rewritten_away_at_the_bottom() {
        let p = LeveledPolicy::new(4, 1000, 10);
        // Nothing deeper: rewritten in place, whatever the level.
        for l in [1, 3, 6] {
            let task = p.choose(&level(l, vec![table(5, 10, "c", "f").with_deletions(8, 6)])).unwrap();
            assert_eq!(task, CompactionTask { level: l, inputs: vec![5], output_level: l });
        }
        // Older data two levels down: pushed into the next level.
        let mut levels = level(1, vec![table(5, 10, "c", "f").with_deletions(8, 6)]);
        levels[3].tables.push(table(9, 100, "a", "d"));
        assert_eq!(p.choose(&levels).unwrap(), CompactionTask { level: 1, inputs: vec![5], output_level: 2 });
        // The table with the most tombstones goes first.
        let mut levels =
            level(2, vec![table(5, 10, "a", "b").with_deletions(8, 6), table(6, 10, "c", "d").with_deletions(20, 19)]);
        levels[1].tables.push(table(7, 10, "e", "f").with_deletions(4, 4));
        assert_eq!(p.choose(&levels).unwrap().inputs, vec![6]);
    }

    #[test]
    fn a_table_pushed_for_size_is_not_moved_down_with_tombstones_it_could_drop() {
        let p = LeveledPolicy::new(4, 100, 10);
        let l1 = vec![table(1, 60, "a", "c").with_deletions(10, 9), table(2, 60, "d", "f")];
        let first = p.choose(&levels(vec![], l1.clone())).unwrap();
        assert_eq!(first, CompactionTask { level: 1, inputs: vec![1], output_level: 1 });
        let rest = vec![table(2, 60, "d", "f"), table(3, 60, "g", "h")];
        let second = p.choose(&levels(vec![], rest)).unwrap();
        assert_eq!(second, CompactionTask { level: 1, inputs: vec![2], output_level: 2 });
    }

    #[test]
    fn an_over_budget_level_pushes_its_densest_table_first() {
        let p = LeveledPolicy::new(4, 100, 10);
        let l1 = vec![table(1, 60, "a", "c"), table(2, 60, "d", "f").with_deletions(10, 6), table(3, 60, "g", "h")];
        let mut levels = levels(vec![], l1);
        levels[2].tables.push(table(9, 100, "a", "z"));
        assert_eq!(p.choose(&levels).unwrap(), CompactionTask { level: 1, inputs: vec![2], output_level: 2 });
    }
}
