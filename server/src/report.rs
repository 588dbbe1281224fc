//! What the command-line tool and the server both report, in one place so that neither imports the other:
//! the engine's figures as JSON (`cairn stats --json` and `GET /v1/stats`).

use std::path::Path;

use cairn_engine::Stats;
use serde_json::{json, Value};

/// The engine's figures for the database in `dir` as one JSON object: what `cairn stats --json` prints and
/// `GET /v1/stats` answers.
pub fn stats_json(dir: &Path, s: &Stats) -> Value {
    let levels: Vec<Value> = s
        .levels
        .iter()
        .enumerate()
        .map(|(level, l)| json!({ "level": level, "tables": l.tables, "bytes": l.bytes }))
        .collect();
    json!({
        "data": dir.display().to_string(),
        "levels": levels,
        "table_count": s.table_count(),
        "table_bytes": s.table_bytes(),
        "memtable_bytes": s.memtable_bytes,
        "immutable_memtables": s.immutable_memtables,
        "last_sequence": s.last_sequence,
        "user_bytes_written": s.user_bytes_written,
        "commits": s.commits,
        "write_groups": s.write_groups,
        "wal_bytes_written": s.wal_bytes_written,
        "wal_syncs": s.wal_syncs,
        "flushes": s.flushes,
        "flush_bytes_written": s.flush_bytes_written,
        "compactions": s.compactions,
        "trivial_moves": s.trivial_moves,
        "compaction_bytes_read": s.compaction_bytes_read,
        "compaction_bytes_written": s.compaction_bytes_written,
        "write_slowdowns": s.write_slowdowns,
        "write_stall_micros": s.write_stall_micros,
        "cache_hits": s.cache_hits,
        "cache_misses": s.cache_misses,
        "cache_bytes": s.cache_bytes,
        "recovered_torn_bytes": s.recovered_torn_bytes,
        "write_amplification": s.write_amplification(),
    })
}
