//! Runs the built `cairn` binary against temporary data directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cairn(args: &[&str], data: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(args).arg("--data").arg(data);
    cmd.output().expect("the cairn binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cairn` and asserts it succeeded; returns its stdout.
fn ok(args: &[&str], data: &Path) -> String {
    let out = cairn(args, data);
    assert!(
        out.status.success(),
        "cairn {args:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn demo(data: &Path) -> String {
    ok(&["demo", "--jobs", "2000"], data)
}

/// The line of the demo's per-status table that starts with `status`.
fn status_count(demo_output: &str, status: &str) -> String {
    demo_output
        .lines()
        .find(|l| l.trim_start().starts_with(status))
        .unwrap_or_else(|| panic!("no {status} line in:\n{demo_output}"))
        .to_owned()
}

#[test]
fn demo_loads_and_queries_jobs_and_can_run_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = demo(dir.path());
    assert!(first.contains("loaded 2,000 jobs (4,000 keys)"), "{first}");
    assert!(first.contains("10 highest-priority PENDING jobs"), "{first}");
    assert!(first.contains(r#""id":1000"#), "{first}");
    assert!(status_count(&first, "total").ends_with(" 2,000"), "{first}");

    // The top-10 list is in descending priority.
    let priorities: Vec<u32> = first
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("priority "))
        .map(|l| l.split_whitespace().next().and_then(|p| p.parse().ok()).expect("a priority"))
        .collect();
    assert_eq!(priorities.len(), 10, "{first}");
    assert!(priorities.windows(2).all(|w| w[0] >= w[1]), "{priorities:?}");

    // A second run overwrites the same keys: the counts do not change.
    let second = demo(dir.path());
    for status in ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "total"] {
        assert_eq!(status_count(&first, status), status_count(&second, status));
    }
}

#[test]
fn stats_check_and_compact_on_a_demo_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    demo(dir.path());

    let stats = ok(&["stats"], dir.path());
    assert!(stats.contains("last sequence    4,000"), "{stats}");
    assert!(stats.contains("L0"), "{stats}");
    assert!(stats.contains("write amp"), "{stats}");

    let json: serde_json::Value = serde_json::from_str(&ok(&["stats", "--json"], dir.path())).expect("stats --json is JSON");
    assert_eq!(json["last_sequence"], 4000);
    assert!(json["levels"].as_array().is_some_and(|l| !l.is_empty()), "{json}");
    // Open writes the replayed WAL to a level-0 table: nothing waits in the memtable.
    assert_eq!(json["memtable_bytes"].as_u64(), Some(0), "{json}");
    assert!(json["levels"][0]["tables"].as_u64().is_some_and(|n| n >= 1), "{json}");
    assert!(json["write_amplification"].is_number(), "{json}");

    let compact = ok(&["compact"], dir.path());
    assert!(compact.contains("before") && compact.contains("after"), "{compact}");
    let json: serde_json::Value = serde_json::from_str(&ok(&["stats", "--json"], dir.path())).expect("stats --json is JSON");
    assert!(json["table_count"].as_u64().is_some_and(|n| n >= 1), "{json}");
    assert_eq!(json["memtable_bytes"].as_u64(), Some(0), "{json}");

    let check = ok(&["check"], dir.path());
    assert!(check.starts_with("ok: 4,000 entries"), "{check}");

    // Everything survived the compaction.
    let again = demo(dir.path());
    assert!(status_count(&again, "total").ends_with(" 2,000"), "{again}");
}

#[test]
fn check_reports_a_flipped_byte_with_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    demo(dir.path());
    ok(&["compact"], dir.path());
    assert!(ok(&["check"], dir.path()).starts_with("ok: "));

    let largest: PathBuf = std::fs::read_dir(dir.path())
        .expect("list the data directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|p| std::fs::metadata(p).expect("stat a table").len())
        .expect("compaction wrote a table");
    let mut bytes = std::fs::read(&largest).expect("read the table");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&largest, bytes).expect("write the table back");

    let out = cairn(&["check"], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {stderr}", text(&out.stdout));
    assert!(stderr.contains("corruption"), "{stderr}");
    let name = largest.file_name().and_then(|n| n.to_str()).expect("a file name");
    assert!(stderr.contains(name), "{stderr} should name {name}");
    assert!(stderr.contains("offset"), "{stderr}");
}

#[test]
fn inspecting_a_missing_database_fails_without_creating_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nothing-here");
    for cmd in ["stats", "check", "compact"] {
        let out = cairn(&[cmd], &missing);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("no database at"), "{cmd}: {stderr}");
    }
    assert!(!missing.exists());
}

#[test]
fn usage_errors_exit_with_status_2() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).output().expect("runs");
    for args in [&[][..], &["frobnicate"], &["stats"], &["demo", "--data", "x", "--jobs", "many"], &["demo", "--data", "x", "--jobs", "0"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(text(&help.stdout).contains("demo"));
}
