//! Smoke test of the side-by-side benchmark (`cairn_bench::compare`): tiny data, every engine, every
//! workload set. It checks that the engines return the same answers, that the crash test and the isolated
//! children work, and that the reports (one run, and several runs with their medians) are well formed. It
//! never looks at a time.

use std::path::PathBuf;
use std::time::Duration;

use cairn_bench::compare::{run, run_repeated, Config, EngineKind, EngineSpec, WorkloadSet};
use cairn_bench::DEFAULT_SEED;
use serde_json::Value;

fn config(dir: &std::path::Path, engines: Vec<EngineSpec>, sets: Vec<WorkloadSet>, isolate: bool) -> Config {
    Config {
        n: 2_000,
        // 102 jobs for each paged owner: two pages of the owner paging.
        jobs: 5_100,
        quick: true,
        engines,
        sets,
        dir: dir.to_path_buf(),
        cache_bytes: 8 << 20,
        seed: DEFAULT_SEED,
        // Long enough for some commits and reads on every engine, short enough for the test suite.
        sustained: Duration::from_millis(300),
        exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_compare"))),
        isolate,
        json_path: None,
    }
}

fn number_or_null(row: &Value, field: &str) -> Option<f64> {
    let v = &row[field];
    assert!(v.is_null() || v.is_number(), "{field} must be a number or null in {row}");
    v.as_f64()
}

#[test]
fn every_engine_returns_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    // native_db takes part when the crate is built with `--features native_db`.
    let mut engines: Vec<EngineSpec> =
        EngineKind::ALL.into_iter().filter(|k| k.available()).map(EngineSpec::durable).collect();
    engines.push(EngineSpec::nosync(EngineKind::Cairn));
    engines.push(EngineSpec::nosync(EngineKind::Sqlite));
    let cfg = config(&dir.path().join("data"), engines.clone(), WorkloadSet::ALL.to_vec(), false);
    let report = run(&cfg).unwrap();
    assert!(report.answers_match(), "engines disagreed: {:#?}", report.mismatches);

    let json_path = dir.path().join("bench").join("compare.json");
    report.write_json(&json_path).unwrap();
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert!(json["machine"]["cpus"].as_u64().unwrap() >= 1, "{}", json["machine"]);
    for field in ["os", "date"] {
        assert!(json["machine"][field].is_string(), "machine.{field}");
    }
    assert!(json["machine"]["memory_bytes"].is_u64() || json["machine"]["memory_bytes"].is_null());
    // Whether glibc put the heap on huge pages moves the reads, so the report says how it was set.
    assert_eq!(json["machine"]["glibc_tunables"].as_str(), std::env::var("GLIBC_TUNABLES").ok().as_deref());
    let thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled");
    assert_eq!(json["machine"]["transparent_huge_pages"].is_string(), thp.exists(), "{}", json["machine"]);
    assert_eq!(json["n"], 2_000);
    assert_eq!(json["answers_match"], true);
    assert_eq!(json["sustained_secs"], 0.3);

    let results = json["results"].as_array().unwrap();
    let names: Vec<String> = engines.iter().map(|e| e.to_string()).collect();
    for row in results {
        let engine = row["engine"].as_str().unwrap();
        assert!(names.iter().any(|n| n == engine), "unknown engine {engine}");
        assert!(!row["workload"].as_str().unwrap().is_empty());
        if let Some(s) = number_or_null(row, "seconds") {
            assert!(s >= 0.0);
        }
        number_or_null(row, "ops_per_sec");
        number_or_null(row, "peak_rss_bytes");
        if let Some(b) = number_or_null(row, "bytes_on_disk") {
            assert!(b > 0.0, "{row}");
        }
        assert!(row["seconds"].is_number() || row["bytes_on_disk"].is_number(), "{row}");
        let latency = &row["latency"];
        if row["set"] == "sustained" {
            // Percentiles in order, counted operations equal to the row's.
            let at = |f: &str| latency[f].as_f64().unwrap_or_else(|| panic!("latency.{f} in {row}"));
            assert!(at("count") >= 1.0 && at("count") == row["ops"].as_f64().unwrap(), "{row}");
            assert!(at("p50_us") <= at("p99_us") && at("p99_us") <= at("p999_us"), "{row}");
            assert!(at("p999_us") <= at("max_us"), "{row}");
        } else {
            assert!(latency.is_null(), "{row}");
        }
    }
    // Every engine but native_db ran every key-value workload; Cairn, SQLite and native_db ran the
    // collection workloads.
    let rows_of = |engine: &str, set: &str| results.iter().filter(|r| r["engine"] == engine && r["set"] == set).count();
    let has_docs = |name: &str| ["cairn", "sqlite", "native_db"].iter().any(|p| name.starts_with(p));
    let kv_rows = rows_of("cairn", "kv");
    let docs_rows = rows_of("cairn", "docs");
    assert!(kv_rows >= 13, "{kv_rows} key-value workloads");
    assert!(docs_rows >= 7, "{docs_rows} collection workloads");
    for name in &names {
        let kv = name != "native_db";
        assert_eq!(rows_of(name, "kv"), if kv { kv_rows } else { 0 }, "{name}");
        assert_eq!(rows_of(name, "kv4k"), usize::from(kv), "{name}");
        assert_eq!(rows_of(name, "sustained"), if kv { 2 } else { 0 }, "{name}");
        assert_eq!(rows_of(name, "docs"), if has_docs(name) { docs_rows } else { 0 }, "{name}");
    }
    // Both bulk loads, for every key-value engine.
    for workload in ["bulk load (cairn: table ingest)", "bulk load (cairn: WAL and memtable)"] {
        let timed = results.iter().filter(|r| r["workload"] == workload && r["seconds"].is_number()).count();
        assert_eq!(timed, kv_engines_of(&names), "{workload}");
    }
    // Read workloads carry checksums, equal across engines. After the crash only durable engines must
    // have kept every commit, so only they carry one there.
    let kv_engines = names.iter().filter(|n| *n != "native_db").count();
    let durable = names.iter().filter(|n| !n.ends_with("-nosync") && *n != "native_db").count();
    let docs_engines = names.iter().filter(|n| has_docs(n)).count();
    for (workload, engines) in [
        ("random reads", kv_engines),
        ("range reads (10 items)", kv_engines),
        ("random reads (4 KiB values)", kv_engines),
        ("reopen after kill (open + 1 read)", durable),
        ("jobs: scheduler query (top 50 PENDING)", docs_engines),
        ("jobs: claim (4 threads)", docs_engines),
        ("jobs: page by owner (100 per page)", docs_engines),
        ("jobs: get by id", docs_engines),
        ("jobs: scheduler query (top 50 PENDING, while updated)", docs_engines),
    ] {
        let sums: Vec<&str> =
            results.iter().filter(|r| r["workload"] == workload).filter_map(|r| r["checksum"].as_str()).collect();
        assert_eq!(sums.len(), engines, "{workload}");
        assert!(sums.iter().all(|s| *s == sums[0]), "{workload}: {sums:?}");
    }

    let markdown = report.markdown();
    assert!(markdown.contains("| workload | ops |"), "{markdown}");
    for name in &names {
        assert!(markdown.contains(&format!(" {name} |")), "{name} missing from\n{markdown}");
    }
    assert!(markdown.contains("Cairn's ratio to each peer"));
    assert!(markdown.contains("Latency of every operation of the sustained workload"), "{markdown}");
}

fn kv_engines_of(names: &[String]) -> usize {
    names.iter().filter(|n| *n != "native_db").count()
}

#[test]
fn repeated_runs_give_each_ratio_and_the_median() {
    let dir = tempfile::tempdir().unwrap();
    let engines = vec![EngineSpec::durable(EngineKind::Cairn), EngineSpec::durable(EngineKind::Redb)];
    let cfg = config(dir.path(), engines, vec![WorkloadSet::Kv4k, WorkloadSet::Sustained], true);
    let repeated = run_repeated(&cfg, 2).unwrap();
    assert!(repeated.answers_match(), "{:?}", repeated.mismatches());
    assert_eq!(repeated.runs.len(), 2);

    let json = repeated.json();
    let json: Value = serde_json::from_str(&serde_json::to_string(&json).unwrap()).unwrap();
    assert_eq!(json["answers_match"], true);
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        assert_eq!(run["results"].as_array().unwrap().len(), 6, "{run}");
        assert!(run["sets"].as_array().unwrap().iter().all(|s| s["peak_rss_bytes"].is_u64()), "{run}");
    }
    // One median per row and peer: the large-value reads and the sustained commits and reads, against redb.
    let medians = json["medians"].as_array().unwrap();
    assert_eq!(medians.len(), 3, "{medians:?}");
    for m in medians {
        assert_eq!(m["peer"], "redb");
        let ratios = m["ratios"].as_array().unwrap();
        assert_eq!(ratios.len(), 2);
        let values: Vec<f64> = ratios.iter().map(|r| r.as_f64().unwrap()).collect();
        let median = m["median"].as_f64().unwrap();
        assert!((median - (values[0] + values[1]) / 2.0).abs() < 1e-9, "{m}");
    }

    let markdown = repeated.markdown();
    assert!(markdown.contains("run 2 of 2"), "{markdown}");
    assert!(markdown.contains("2 runs one after another"), "{markdown}");
    assert!(markdown.contains("Peak RSS (VmHWM) of each set in run 1 / run 2"), "{markdown}");
}

#[test]
fn isolated_children_report_peak_rss() {
    let dir = tempfile::tempdir().unwrap();
    let engines = vec![EngineSpec::durable(EngineKind::Cairn), EngineSpec::durable(EngineKind::Lmdb)];
    let cfg = config(dir.path(), engines, vec![WorkloadSet::Kv], true);
    let report = run(&cfg).unwrap();
    assert!(report.answers_match(), "{:?}", report.mismatches);
    assert_eq!(report.outcomes.len(), 2);
    for o in &report.outcomes {
        let peak = o.peak_rss_bytes.unwrap_or_else(|| panic!("{}: no peak RSS", o.engine));
        assert!(peak >= o.baseline_rss_bytes.unwrap_or(0), "{}", o.engine);
    }
    assert!(report.markdown().contains("Peak RSS"));
}
