//! The leveled policy: level 0 merges into level 1 once it holds enough tables; each deeper level has a
//! byte budget ten times the one above it and, once over budget, pushes one table at a time (round-robin
//! across its key range) into the next level.

use parking_lot::Mutex;

use super::{CompactionPolicy, CompactionTask, LevelInfo};

/// Leveled compaction, as in LevelDB.
#[derive(Debug)]
pub struct LeveledPolicy {
    level0_trigger: usize,
    level1_bytes: u64,
    multiplier: u64,
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
    pub fn new(level0_trigger: usize, level1_bytes: u64, multiplier: u64) -> Self {
        Self {
            level0_trigger: level0_trigger.max(1),
            level1_bytes: level1_bytes.max(1),
            multiplier: multiplier.max(2),
            cursors: Mutex::new(Vec::new()),
        }
    }

    fn budget(&self, level: usize) -> u64 {
        let mut b = self.level1_bytes;
        for _ in 1..level {
            b = b.saturating_mul(self.multiplier);
        }
        b
    }
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
        let (_, level) = best?;
        let info = levels.get(level)?;
        if level == 0 {
            return Some(CompactionTask {
                level: 0,
                inputs: info.tables.iter().map(|t| t.number).collect(),
                output_level: 1,
            });
        }
        let mut cursors = self.cursors.lock();
        if cursors.len() < levels.len() {
            cursors.resize(levels.len(), Vec::new());
        }
        let cursor = cursors.get_mut(level)?;
        let table =
            info.tables.iter().find(|t| cursor.is_empty() || t.smallest > *cursor).or_else(|| info.tables.first())?;
        cursor.clone_from(&table.largest);
        Some(CompactionTask { level, inputs: vec![table.number], output_level: level + 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compaction::TableInfo;

    fn table(number: u64, size: u64, lo: &str, hi: &str) -> TableInfo {
        TableInfo { number, size, smallest: lo.into(), largest: hi.into() }
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
}
