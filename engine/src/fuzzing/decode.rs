//! Decoders fed with arbitrary bytes the way the engine would read them from disk. None of them may panic.

use std::path::Path;
use std::sync::Arc;

use crate::batch;
use crate::format::{MANIFEST_FORMAT_VERSION, MANIFEST_MAGIC};
use crate::io::{MemStorage, Storage};
use crate::iter::Source;
use crate::log::read_log;
use crate::manifest::VersionEdit;
use crate::table::{BlockCache, TableIter, TableReader};
use crate::wal::read_wal;

/// Decodes `bytes` as a WAL file: records, then every batch in them. Returns the number of batch entries
/// decoded.
pub fn decode_wal(bytes: &[u8]) -> usize {
    let mut decoded_entries = 0;
    if let Ok(log) = read_wal(bytes, Path::new("fuzz.wal")) {
        for (_, payload) in log.records {
            if let Ok(decoded) = batch::decode(payload) {
                let mut entries = decoded.entries;
                for entry in entries.by_ref() {
                    if entry.is_err() {
                        break;
                    }
                    decoded_entries += 1;
                }
                let _ = entries.finish();
            }
        }
    }
    decoded_entries
}

/// Decodes `bytes` as a manifest file: records, then every version edit in them. Returns the number of
/// edits that decoded.
pub fn decode_manifest(bytes: &[u8]) -> usize {
    let Ok(log) =
        read_log(bytes, Path::new("MANIFEST-000001"), MANIFEST_MAGIC, MANIFEST_FORMAT_VERSION, &|_, _| Some(u64::MAX))
    else {
        return 0;
    };
    log.records.into_iter().filter(|(_, payload)| VersionEdit::decode(payload).is_ok()).count()
}

/// Opens `bytes` as a table, verifies it, and walks it both ways. Returns the number of entries walked.
pub fn decode_table(bytes: &[u8]) -> usize {
    let fs = MemStorage::new();
    let dir = Path::new("/fuzz");
    let path = dir.join("000001.sst");
    let written = fs.create_dir_all(dir).and_then(|()| fs.create(&path)).and_then(|mut f| f.append(bytes));
    if written.is_err() {
        return 0;
    }
    let Ok(reader) = TableReader::open(&fs, &path, 1, Arc::new(BlockCache::new(1 << 20))) else { return 0 };
    let reader = Arc::new(reader);
    let _ = reader.verify();
    let mut walked = 0;
    for reverse in [false, true] {
        let mut it = TableIter::new(reader.clone(), reverse);
        if it.seek(None).is_err() {
            continue;
        }
        for _ in 0..10_000 {
            if it.key().is_none() {
                break;
            }
            walked += 1;
            if it.advance().is_err() {
                break;
            }
        }
    }
    walked
}
