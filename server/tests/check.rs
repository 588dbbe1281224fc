//! `cairn check` on real directories: healthy, a flipped table byte, a torn WAL tail (and `--repair`), an
//! index entry whose record is gone, and directories it cannot check.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_engine::Db;
use cairn_platform::Job;
use cairn_store::{Collection, Store, StoreOptions};

fn cairn(args: &[&str], data: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.arg("check").arg("--data").arg(data).args(args);
    cmd.output().expect("the cairn binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cairn check ARGS`, asserts its exit status, returns stdout.
fn check(args: &[&str], data: &Path, status: i32) -> String {
    let out = cairn(args, data);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(status), "cairn check {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

/// A store with a flushed table and a WAL: 300 plain keys and 40 jobs in the jobs collection.
fn store(dir: &Path) {
    let db = Db::builder().compression(cairn_engine::Compression::None).open(dir).expect("open");
    for i in 0..300 {
        db.put(format!("key/{i:04}"), format!("value {i} {}", "x".repeat(40))).expect("put");
    }
    db.flush().expect("flush");
    let store = Store::with_db(db.clone(), StoreOptions::default()).expect("store");
    let jobs: Collection<Job> = store.collection().expect("jobs");
    for i in 0..40 {
        jobs.upsert(&Job::new(format!("job-{i}"), "train", "alice", "vision", i, 1_767_225_600_000)).expect("upsert");
    }
    drop((jobs, store));
    db.close().expect("close");
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    found.sort();
    found
}

/// Every WAL and table of `dir` with its contents.
fn wals_and_tables(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files(dir, "wal")
        .into_iter()
        .chain(files(dir, "sst"))
        .map(|p| (p.clone(), std::fs::read(&p).expect("read")))
        .collect()
}

#[test]
fn a_healthy_store_passes_and_is_not_modified() {
    let dir = tempfile::tempdir().expect("tempdir");
    store(dir.path());
    let before = wals_and_tables(dir.path());
    let names_before = std::fs::read_dir(dir.path()).expect("list").count();
    let out = check(&[], dir.path(), 0);
    assert!(out.ends_with("\nhealthy\n"), "{out}");
    assert!(out.contains("1 collections, 240 index entries agree"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&check(&["--json"], dir.path(), 0)).expect("JSON");
    assert_eq!(json["tables"].as_u64(), Some(1), "{json}");
    assert_eq!(json["table_entries"].as_u64(), Some(300), "{json}");
    assert_eq!(json["problems"].as_array().map(Vec::len), Some(0), "{json}");
    assert!(json["torn_wal"].is_null(), "{json}");
    let after = wals_and_tables(dir.path());
    assert_eq!(before, after, "check changed a file");
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), names_before, "check added or removed a file");
}

#[test]
fn a_flipped_table_byte_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    store(dir.path());
    let table = files(dir.path(), "sst").pop().expect("a table");
    let mut bytes = std::fs::read(&table).expect("read");
    let at = bytes.len() / 4;
    bytes[at] ^= 0x20;
    std::fs::write(&table, &bytes).expect("write");
    let out = check(&[], dir.path(), 1);
    let problem = out.lines().find(|l| l.starts_with("problem: ")).unwrap_or_else(|| panic!("{out}"));
    let name = table.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(problem.contains(name) && problem.contains("at offset") && problem.contains("corruption"), "{problem}");
    let json: serde_json::Value = serde_json::from_str(&check(&["--json"], dir.path(), 1)).expect("JSON");
    let offset = json["problems"][0]["offset"].as_u64().expect("an offset");
    assert!(offset <= at as u64, "{json}");
    assert_eq!(json["problems"][0]["file"].as_str(), table.to_str(), "{json}");
}

#[test]
fn a_torn_wal_tail_is_reported_and_repair_cuts_it_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    store(dir.path());
    let wal = files(dir.path(), "wal").pop().expect("a WAL");
    let len = std::fs::metadata(&wal).expect("stat").len();
    // A record cut short by a crash: its header promises 300 bytes, 5 follow.
    let mut bytes = std::fs::read(&wal).expect("read");
    bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 44, 1, 0, 0, 1, 2, 3, 4, 5]);
    std::fs::write(&wal, &bytes).expect("write");

    let out = check(&[], dir.path(), 1);
    assert!(out.contains(&format!("torn WAL tail: {}: 13 bytes after offset {len}", wal.display())), "{out}");
    assert_eq!(std::fs::metadata(&wal).expect("stat").len(), len + 13, "check alone changes nothing");

    let out = check(&["--repair"], dir.path(), 0);
    assert!(out.contains(&format!("repaired: {} truncated to {len} bytes", wal.display())), "{out}");
    assert_eq!(std::fs::metadata(&wal).expect("stat").len(), len);
    let out = check(&[], dir.path(), 0);
    assert!(out.ends_with("\nhealthy\n"), "{out}");

    // Everything acknowledged is there.
    let store = Store::open(dir.path()).expect("open");
    let jobs: Collection<Job> = store.collection().expect("jobs");
    for i in 0..40 {
        assert!(jobs.get(&format!("job-{i}")).expect("get").is_some(), "job-{i}");
    }
    for i in 0..300 {
        assert!(store.db().get(format!("key/{i:04}")).expect("get").is_some(), "key {i}");
    }
}

#[test]
fn an_index_entry_without_its_record_is_a_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    store(dir.path());
    let db = Db::open(dir.path()).expect("open");
    // Index keys start with the byte 0x02 (engine/src/collection/keys.rs); drop one behind the store's back.
    let (key, _) = db.prefix([0x02u8]).expect("scan").next().expect("an index entry").expect("read");
    db.delete(&key).expect("delete");
    db.close().expect("close");
    let out = check(&[], dir.path(), 1);
    assert!(out.contains("problem: indexes disagree with records") && out.contains("missing index entry"), "{out}");
}

#[test]
fn directories_it_cannot_check_exit_with_status_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nothing-here");
    let out = cairn(&[], &missing);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no database at"), "{}", text(&out.stderr));
    assert!(!missing.exists());

    store(dir.path());
    let db = Db::open(dir.path()).expect("open");
    let out = cairn(&[], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("locked"), "{}", text(&out.stderr));
    db.close().expect("close");

    let out = Command::new(env!("CARGO_BIN_EXE_cairn")).args(["check", "--bogus"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
}
