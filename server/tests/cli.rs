//! Runs the built `cairn` binary against temporary data directories.

use std::collections::BTreeMap;
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

/// The demo's `jobs per status:` table: each status (and `total`) with its count.
fn status_counts(demo_output: &str) -> BTreeMap<String, u64> {
    let table: BTreeMap<String, u64> = demo_output
        .lines()
        .skip_while(|l| *l != "jobs per status:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, count) = l.trim().split_once(' ').unwrap_or_else(|| panic!("malformed status line {l:?}"));
            (name.to_owned(), number(count.trim()))
        })
        .collect();
    assert!(table.contains_key("total"), "no status table in:\n{demo_output}");
    table
}

/// `12,345` as 12345.
fn number(text: &str) -> u64 {
    text.replace(',', "").parse().unwrap_or_else(|_| panic!("{text:?} is not a number"))
}

/// The number that follows `label` on the first line of `output` containing it.
fn figure(output: &str, label: &str) -> u64 {
    let rest = output
        .lines()
        .find_map(|l| l.split_once(label).map(|(_, rest)| rest.trim_start()))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{output}"));
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == ',').collect();
    number(&digits)
}

const STATUSES: [&str; 6] = ["PENDING", "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"];

#[test]
fn demo_loads_and_queries_jobs_and_can_run_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = demo(dir.path());
    assert!(first.contains("loaded 2,000 jobs into collection jobs (6 indexes)"), "{first}");
    assert!(first.contains("10 highest-priority PENDING jobs (plan: index status_priority"), "{first}");
    assert!(first.contains("job-00001000 "), "{first}");

    let counts = status_counts(&first);
    assert_eq!(counts["total"], 2000, "{first}");
    assert_eq!(STATUSES.iter().map(|s| counts[*s]).sum::<u64>(), 2000, "{first}");
    assert!(STATUSES.iter().all(|s| counts[*s] > 0), "{counts:?}");

    // The top-10 list is in descending priority.
    let priorities: Vec<u32> = first
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("priority "))
        .map(|l| l.split_whitespace().next().and_then(|p| p.parse().ok()).expect("a priority"))
        .collect();
    assert_eq!(priorities.len(), 10, "{first}");
    assert!(priorities.windows(2).all(|w| w[0] >= w[1]), "{priorities:?}");

    // A queue job for each QUEUED job, enqueued with it; five claimed, each starting its job on demo-node,
    // most urgent first; every change of the run is in the feed (the queue's writes have no change events);
    // every index entry checks: the jobs' six indexes and the queue jobs' four.
    let queued = counts["QUEUED"];
    assert_eq!(figure(&first, "enqueued"), queued, "{first}");
    assert_claims(&first);
    assert!(first.contains(&format!("queue compute: {} available, 5 running", thousands(queued - 5))), "{first}");
    assert_eq!(figure(&first, "change feed:"), 2005, "{first}");
    assert_eq!(figure(&first, "index check:"), 6 * 2000 + 4 * queued, "{first}");

    // A second run upserts identical jobs (restoring those the first run claimed): the counts do not change.
    // It enqueues nothing (no job is created) and claims the next five queue jobs.
    let second = demo(dir.path());
    assert_eq!(status_counts(&first), status_counts(&second), "{first}\n{second}");
    assert_eq!(figure(&second, "enqueued"), 0, "{second}");
    assert_claims(&second);
    assert!(second.contains(&format!("queue compute: {} available, 10 running", thousands(queued - 10))), "{second}");
    assert_eq!(figure(&second, "change feed:"), 2005, "{second}");
    assert_eq!(figure(&second, "index check:"), 6 * 2000 + 4 * queued, "{second}");
}

/// The demo's claims: five jobs started RUNNING on demo-node, in bands of descending priority (the queue
/// priority is the job's priority in bands of 1,000).
fn assert_claims(demo_output: &str) {
    let claims: Vec<&str> = demo_output.lines().filter(|l| l.contains("node demo-node")).collect();
    assert_eq!(claims.len(), 5, "{demo_output}");
    assert!(claims.iter().all(|l| l.contains(" RUNNING ") && l.contains("queue job")), "{claims:#?}");
    let bands: Vec<u64> = claims
        .iter()
        .map(|l| {
            let priority = l.split_once("priority ").and_then(|(_, rest)| rest.split_whitespace().next());
            priority.and_then(|p| p.parse::<u64>().ok()).expect("a priority") / 1000
        })
        .collect();
    assert!(bands.windows(2).all(|w| w[0] >= w[1]), "{claims:#?}");
}

#[test]
fn stats_check_and_compact_on_a_demo_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = demo(dir.path());
    let last_sequence = figure(&out, "database: last sequence");
    let index_entries = figure(&out, "index check:");
    let changes = figure(&out, "change feed:");
    let queue_jobs = figure(&out, "enqueued");

    let stats = ok(&["stats"], dir.path());
    assert!(stats.contains(&format!("last sequence    {}", thousands(last_sequence))), "{stats}\ndemo:\n{out}");
    assert!(stats.contains("L0"), "{stats}");
    assert!(stats.contains("write amp"), "{stats}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(&["stats", "--json"], dir.path())).expect("stats --json is JSON");
    assert_eq!(json["last_sequence"].as_u64(), Some(last_sequence), "{json}");
    assert!(json["levels"].as_array().is_some_and(|l| !l.is_empty()), "{json}");
    // The demo's last commits are replayed from the WAL into the memtable.
    assert!(json["memtable_bytes"].as_u64().is_some_and(|b| b > 0), "{json}");
    assert!(json["write_amplification"].is_number(), "{json}");

    let compact = ok(&["compact"], dir.path());
    assert!(compact.contains("before") && compact.contains("after"), "{compact}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["stats", "--json"], dir.path())).expect("stats --json is JSON");
    assert!(json["table_count"].as_u64().is_some_and(|n| n >= 1), "{json}");
    assert_eq!(json["memtable_bytes"].as_u64(), Some(0), "{json}");

    // After a full compaction only live keys remain: the catalog entries of the jobs collection and of the
    // queue's two, the 2,000 jobs and the queue jobs, their index entries, the change feed, the collections'
    // record-count entries (one at least, and one per inserting commit not yet folded) and the queue's count
    // entries (one per enqueue and claim not yet folded).
    let check = ok(&["check"], dir.path());
    let live = 3 + 2000 + queue_jobs + index_entries + changes;
    let most = live + 2000 + queue_jobs + 5;
    let found = figure(&check, "contents  ");
    assert!((live + 1..=most).contains(&found), "{found} live keys, expected {live} + count entries\n{check}");
    assert!(check.contains(&format!("3 collections, {} index entries agree", thousands(index_entries))), "{check}");
    assert!(check.ends_with("\nhealthy\n"), "{check}");

    // Everything survived the compaction.
    let again = demo(dir.path());
    assert_eq!(status_counts(&again), status_counts(&out), "{again}");
}

/// `1234567` as `1,234,567`, as the CLI prints counts.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn check_reports_a_flipped_byte_with_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    demo(dir.path());
    ok(&["compact"], dir.path());
    assert!(ok(&["check"], dir.path()).ends_with("\nhealthy\n"));

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
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("not healthy"), "{stderr}");
    let problem = stdout.lines().find(|l| l.starts_with("problem: ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(problem.contains("corruption"), "{problem}");
    let name = largest.file_name().and_then(|n| n.to_str()).expect("a file name");
    assert!(problem.contains(name), "{problem} should name {name}");
    assert!(problem.contains("offset"), "{problem}");
}

#[test]
fn inspecting_a_missing_database_fails_without_creating_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nothing-here");
    for cmd in ["stats", "check", "compact"] {
        let out = cairn(&[cmd], &missing);
        // `check` tells "cannot check" (2) from "checked: not healthy" (1).
        assert_eq!(out.status.code(), Some(if cmd == "check" { 2 } else { 1 }), "{cmd}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("no database at"), "{cmd}: {stderr}");
    }
    assert!(!missing.exists());
}

#[test]
fn usage_errors_exit_with_status_2() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).output().expect("runs");
    for args in [
        &[][..],
        &["frobnicate"],
        &["stats"],
        &["demo", "--data", "x", "--jobs", "many"],
        &["demo", "--data", "x", "--jobs", "0"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(text(&help.stdout).contains("demo"));
}

/// `cairn export s3`, `import s3` and `verify` against a `file://` location carry the run metrics, bit for
/// bit, and count them in their output; metrics logged after the snapshot are reported by the next export
/// and listed by `verify` until a new snapshot ships them.
#[test]
fn metrics_travel_through_a_file_location() {
    use cairn_store::metrics::{HistoryRequest, MetricPoint, Metrics};
    use cairn_store::Store;

    let dir = tempfile::tempdir().expect("tempdir");
    let (data, back, dest) = (dir.path().join("data"), dir.path().join("back"), dir.path().join("dest"));
    std::fs::create_dir(&dest).expect("dest");
    let url = format!("file://{}", dest.display());
    let nan = f64::from_bits(0x7ff8_0000_dead_beef);
    let metrics = |path: &Path| Metrics::new(Store::open(path).expect("store"));
    let history = |m: &Metrics, key: &str| -> Vec<(i64, i64, u64)> {
        let page = m.history(&HistoryRequest::new("run-1", key)).expect("history");
        page.points.iter().map(|p| (p.step, p.timestamp_ms, p.value.to_bits())).collect()
    };
    let points = [
        MetricPoint::new("loss", 1, 11, -0.0),
        MetricPoint::new("loss", 0, 10, nan),
        MetricPoint::new("val/acc", 0, 10, f64::NEG_INFINITY),
    ];
    metrics(&data).log("run-1", &points).expect("log");

    let out = ok(&["export", "s3", "--dest", &url], &data);
    assert!(out.contains("metrics: 2 series (3 points) in snapshots"), "{out}");
    let out = ok(&["verify", "--against", &url], &data);
    assert!(out.contains("remote metrics 2 series, 3 points"), "{out}");
    let out = ok(&["import", "s3", "--src", &url], &back);
    assert!(out.contains("metrics: 2 series (3 points)"), "{out}");
    let (source, restored) = (metrics(&data), metrics(&back));
    for key in ["loss", "val/acc"] {
        assert_eq!(history(&restored, key), history(&source, key), "{key}");
    }
    assert_eq!(history(&restored, "loss")[0], (0, 10, nan.to_bits()));
    drop((source, restored));

    metrics(&data).log("run-1", &[MetricPoint::new("loss", 2, 12, 0.5)]).expect("log");
    let out = ok(&["export", "s3", "--dest", &url], &data);
    assert!(out.contains("changed since the newest snapshot"), "{out}");
    let out = cairn(&["verify", "--against", &url], &data);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("metrics run-1/loss: 3 points != 2"), "{}", text(&out.stdout));
    let out = ok(&["export", "s3", "--dest", &url, "--snapshot"], &data);
    assert!(!out.contains("changed since"), "{out}");
    ok(&["verify", "--against", &url], &data);
}
