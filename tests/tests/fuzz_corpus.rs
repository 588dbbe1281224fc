//! The fuzz targets' seed corpus (`fuzz/corpus/TARGET/seed-*`): how it is made, and that it is what the
//! generator makes, small, and meaningful. The committed corpus is also replayed through every target's
//! function (`cairn_engine::fuzzing`), so the model harnesses run in the normal test run without a fuzzer.
//!
//! Regenerate the corpus after a format change with
//! `cargo test -p cairn-tests --test fuzz_corpus -- --ignored regenerate_fuzz_corpus`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_engine::{fuzzing, Compression, Db, LeveledPolicy, MemStorage, Storage, WriteBatch};

const TARGETS: [&str; 6] =
    ["wal_decode", "manifest_decode", "table_decode", "metrics_block_decode", "engine_model", "collection_model"];
/// Budget for the whole committed corpus.
const MAX_CORPUS_BYTES: usize = 100 * 1024;

/// Seeds by target, then by file name.
type Corpus = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn open(fs: &MemStorage, compression: Compression) -> Db {
    Db::builder()
        .storage(Arc::new(fs.clone()))
        .compression(compression)
        .memtable_size(1 << 20)
        .block_size(256)
        .max_manifest_size(512)
        // Only explicit compactions, so that the files do not depend on background timing (none for size,
        // none for tombstones).
        .compaction_policy(Arc::new(LeveledPolicy::new(100, 1 << 30, 10).tombstone_ratio(f64::INFINITY)))
        .open(Path::new("/db"))
        .unwrap()
}

/// The contents of the files of a database whose name `pick` accepts.
fn files(fs: &MemStorage, pick: impl Fn(&str) -> bool) -> Vec<Vec<u8>> {
    fs.files()
        .into_iter()
        .filter(|(p, _)| pick(&p.file_name().unwrap().to_string_lossy()))
        .map(|(p, _)| fs.read(&p).unwrap())
        .collect()
}

fn text(i: u32) -> Vec<u8> {
    format!("{{\"job\":{i},\"status\":\"RUNNING\",\"host\":\"gpu-{}\",\"queue\":\"default\"}}", i % 7).into_bytes()
}

/// The newest WAL of an open database, with the space reserved after its records cut to 64 zero bytes:
/// enough to exercise the reader's end-of-records rule, small enough for the corpus.
fn newest_wal(fs: &MemStorage) -> Vec<u8> {
    let mut wal = files(fs, |n| n.ends_with(".wal")).pop().unwrap();
    let written = wal.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert!(wal.len() >= written + 64, "the open WAL has space reserved after its records");
    wal.truncate(written + 64);
    wal
}

/// Deterministic bytes (xorshift), the raw material of operation sequences.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Makes the whole seed corpus: real WAL, manifest and table files written by the engine, and byte strings
/// that decode into operation sequences for the model targets.
fn generate() -> Corpus {
    let mut corpus = Corpus::new();
    let mut add = |target: &str, name: &str, bytes: Vec<u8>| {
        corpus.entry(target.to_owned()).or_default().insert(format!("seed-{name}"), bytes);
    };

    // Tables: uncompressed, zstd-compressed, compressed against a dictionary (format version 2), with
    // tombstones, and one written by a compaction.
    let dictionary = Compression::ZstdDictionary { level: 3, dictionary_size: 512 };
    for (name, compression, n) in
        [("plain", Compression::None, 30), ("zstd", Compression::Zstd { level: 3 }, 30), ("dictionary", dictionary, 60)]
    {
        let fs = MemStorage::new();
        let db = open(&fs, compression);
        for i in 0..n {
            db.put(format!("job/{i:04}"), text(i)).unwrap();
        }
        db.flush().unwrap();
        add("table_decode", name, files(&fs, |n| n.ends_with(".sst")).pop().unwrap());
        drop(db);
    }
    let fs = MemStorage::new();
    let db = open(&fs, Compression::Zstd { level: 1 });
    let mut batch = WriteBatch::new();
    for i in 0..40 {
        batch.put(format!("run/{:03}/status", i % 20), text(i));
    }
    db.write(batch).unwrap();
    db.flush().unwrap();
    for i in (0..20).step_by(3) {
        db.delete(format!("run/{i:03}/status")).unwrap();
    }
    db.put(b"run/big", vec![b'x'; 700]).unwrap();
    db.flush().unwrap();
    let mut tables = files(&fs, |n| n.ends_with(".sst"));
    add("table_decode", "tombstones", tables.pop().unwrap());
    add("manifest_decode", "flushes", files(&fs, |n| n.starts_with("MANIFEST-")).pop().unwrap());
    db.compact().unwrap();
    add("table_decode", "compacted", files(&fs, |n| n.ends_with(".sst")).pop().unwrap());
    for i in 0..12 {
        db.put(format!("run/{i:03}/status"), text(i)).unwrap();
        db.flush().unwrap();
    }
    db.compact().unwrap();
    add("manifest_decode", "rewritten", files(&fs, |n| n.starts_with("MANIFEST-")).pop().unwrap());
    drop(db);

    // WALs: single puts and deletes; batches; a large value.
    let fs = MemStorage::new();
    let db = open(&fs, Compression::None);
    for i in 0..25 {
        db.put(format!("job/{i:04}"), text(i)).unwrap();
        if i % 4 == 0 {
            db.delete(format!("job/{:04}", i / 2)).unwrap();
        }
    }
    add("wal_decode", "puts", newest_wal(&fs));
    add("manifest_decode", "fresh", files(&fs, |n| n.starts_with("MANIFEST-")).pop().unwrap());
    drop(db);
    let fs = MemStorage::new();
    let db = open(&fs, Compression::None);
    for b in 0..6u32 {
        let mut batch = WriteBatch::new();
        for i in 0..8 {
            batch.put(format!("exp/{b}/run/{i}"), text(b * 8 + i));
        }
        batch.delete(format!("exp/{b}/run/0"));
        db.write(batch).unwrap();
    }
    db.put(b"model/v1/weights", vec![7u8; 1500]).unwrap();
    add("wal_decode", "batches", newest_wal(&fs));
    drop(db);

    // Metrics blocks, as the metrics store encodes them.
    for (name, bytes) in cairn_store::fuzzing::metrics_block_seeds() {
        add("metrics_block_decode", name, bytes);
    }

    // Operation sequences: any bytes decode into operations. Of the deterministic noise inputs, the first
    // six that exercise what matters (judged on what the input decodes to, not on background timing).
    let engine = (1..).map(|k| noise(k, 1500)).filter(|bytes| {
        let s = fuzzing::engine_model(bytes);
        s.crashes >= 1 && s.writes_under_fault >= 5 && s.reads >= 10
    });
    for (i, bytes) in engine.take(6).enumerate() {
        add("engine_model", &format!("ops-{i}"), bytes);
    }
    let collection = (1..).map(|k| noise(k + 1000, 1500)).filter(|bytes| {
        let s = cairn_store::fuzzing::collection_model(bytes);
        s.crashes >= 1 && s.rejected >= 1 && s.transactions >= 1 && s.together >= 1 && s.pages > s.queries + 2
    });
    for (i, bytes) in collection.take(6).enumerate() {
        add("collection_model", &format!("ops-{i}"), bytes);
    }
    corpus
}

fn committed() -> Corpus {
    let mut corpus = Corpus::new();
    for target in TARGETS {
        let dir = corpus_dir().join(target);
        let seeds = corpus.entry(target.to_owned()).or_default();
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("seed-") {
                seeds.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    corpus
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand after a format change"]
fn regenerate_fuzz_corpus() {
    for (target, seeds) in generate() {
        let dir = corpus_dir().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with("seed-") {
                std::fs::remove_file(path).unwrap();
            }
        }
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn committed_corpus_is_what_the_generator_makes_and_small() {
    let generated = generate();
    for (target, seeds) in generate() {
        for (name, bytes) in seeds {
            assert!(generated[&target][&name] == bytes, "{target}/{name}: the generator is not deterministic");
        }
    }
    let committed = committed();
    assert_eq!(
        committed.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "a seed directory per target"
    );
    for (target, seeds) in &generated {
        let names: Vec<_> = seeds.keys().collect();
        assert_eq!(committed[target].keys().collect::<Vec<_>>(), names, "{target}: regenerate the corpus");
        for (name, bytes) in seeds {
            assert!(committed[target][name] == *bytes, "{target}/{name} differs from the generator's: regenerate");
            assert!(bytes.len() <= 8 * 1024, "{target}/{name}: {} bytes is more than a small seed", bytes.len());
        }
    }
    let total: usize = committed.values().flat_map(|s| s.values()).map(Vec::len).sum();
    assert!(total <= MAX_CORPUS_BYTES, "the corpus is {total} bytes");
}

#[test]
fn file_seeds_decode_to_real_contents() {
    let committed = committed();
    for (name, bytes) in &committed["wal_decode"] {
        assert!(fuzzing::decode_wal(bytes) >= 25, "wal_decode/{name} decodes to too few entries");
    }
    for (name, bytes) in &committed["manifest_decode"] {
        assert!(fuzzing::decode_manifest(bytes) >= 1, "manifest_decode/{name} holds no edit");
    }
    for (name, bytes) in &committed["table_decode"] {
        // Both directions walk every entry (the smallest table holds 8).
        assert!(fuzzing::decode_table(bytes) >= 2 * 8, "table_decode/{name} walks too few entries");
    }
    for (name, bytes) in &committed["metrics_block_decode"] {
        // As it is and with its checksum recomputed (the same bytes): every point twice.
        assert!(
            cairn_store::fuzzing::decode_metrics_block(bytes) >= 2,
            "metrics_block_decode/{name} decodes to too few points"
        );
    }
}

#[test]
fn model_seeds_replay_without_the_fuzzer() {
    let committed = committed();
    let mut engine = fuzzing::EngineSummary::default();
    for bytes in committed["engine_model"].values() {
        engine += fuzzing::engine_model(bytes);
    }
    println!("engine_model seeds: {engine:?}");
    assert!(engine.ops >= 200 && engine.writes >= 50 && engine.reads >= 50, "{engine:?}");
    assert!(
        engine.flushes > 0
            && engine.crashes > 0
            && engine.faults > 0
            && engine.failed_writes + engine.refused_writes > 0,
        "{engine:?}"
    );

    let mut coll = cairn_store::fuzzing::CollectionSummary::default();
    for bytes in committed["collection_model"].values() {
        coll += cairn_store::fuzzing::collection_model(bytes);
    }
    println!("collection_model seeds: {coll:?}");
    assert!(coll.ops >= 150 && coll.writes >= 30 && coll.queries >= 20, "{coll:?}");
    assert!(coll.rejected > 0 && coll.transactions > 0 && coll.together > 0 && coll.crashes > 0, "{coll:?}");
}
