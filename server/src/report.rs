//! What the command-line tool and the server both report, in one place so that neither imports the other:
//! the engine's figures (`cairn stats --json`, `GET /v1/stats`), a check's report (`cairn check --json`,
//! `POST /v1/admin/check`) and a backup's (`cairn backup`, `POST /v1/admin/backup`), as JSON.

use std::path::Path;

use cairn_engine::{CheckpointInfo, Finding, Stats};
use cairn_store::StoreCheckReport;
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

/// A check's report as JSON: every counter, finding and the torn WAL tail, under the names of their fields,
/// and `healthy`.
pub fn check_json(report: &StoreCheckReport) -> Value {
    let r = &report.engine;
    let findings = |list: &[Finding]| -> Vec<Value> {
        list.iter().map(|f| json!({"file": f.file, "offset": f.offset, "message": f.message})).collect()
    };
    let torn = r.torn_wal.as_ref().map(|t| {
        json!({
            "file": t.file,
            "file_len": t.file_len,
            "valid_len": t.valid_len,
            "dropped_bytes": t.dropped_bytes,
            "dropped_records": t.dropped_records,
            "dropped_batches": t.dropped_batches,
            "dropped_entries": t.dropped_entries,
            "reason": t.reason,
        })
    });
    json!({
        "dir": r.dir,
        "healthy": report.is_healthy(),
        "problems": findings(&r.problems),
        "warnings": findings(&r.warnings),
        "torn_wal": torn,
        "repaired": r.repaired,
        "manifest": r.manifest,
        "manifest_edits": r.manifest_edits,
        "tables": r.tables,
        "table_blocks": r.table_blocks,
        "table_entries": r.table_entries,
        "wal_files": r.wal_files,
        "wal_batches": r.wal_batches,
        "wal_entries": r.wal_entries,
        "wal_markers": r.wal_markers,
        "live_keys": r.live_keys,
        "collections": report.collections,
        "index_entries": report.index_entries,
        "blobs": report.blobs,
        "blob_bytes": report.blob_bytes,
        "metric_series": report.metric_series,
        "metric_points": report.metric_points,
    })
}

/// What a backup made, as JSON.
pub fn checkpoint_json(info: &CheckpointInfo) -> Value {
    json!({
        "dir": info.dir,
        "last_sequence": info.last_sequence,
        "tables": info.tables,
        "table_bytes": info.table_bytes,
        "wal_files": info.wal_files,
        "wal_bytes": info.wal_bytes,
    })
}
