//! Power loss on the real file-system code path: the engine with its default `FsStorage` (files,
//! `fdatasync`, directory `fsync`, renames, `flock`, tables read through `mmap`) runs in a child process
//! (`src/bin/power_child.rs`) on `cairn-faultfs`, a FUSE file system served from this process that keeps
//! unsynced writes and names apart from synced ones. At a random moment the power is cut (the file system
//! fails every request from that instant), the child is killed, and the file system reboots into the image
//! a power cut leaves: unsynced writes dropped, torn at a random byte, or a random subset kept; unsynced
//! name changes dropped or a prefix kept. Then `cairn_engine::Check` must find no problem (a torn WAL tail
//! is allowed), and the database must open holding exactly the commits acknowledged before the cut, plus
//! perhaps the one in flight, whole, and nothing else.
//!
//! `CAIRN_FUSE_CYCLES` sets the number of cuts (default 200); `CAIRN_FUSE_SEED` fixes the seed of the cut
//! moments and images (the writer's progress at a given moment still varies from run to run). Each
//! database lives for 20 cycles, then a fresh one starts (so crashes during creation are covered too).
//! Skips, saying why, where `/dev/fuse` is missing or mounting is not permitted.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

#[path = "../src/power_workload.rs"]
mod power_workload;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_engine::{Check, Db};
use cairn_faultfs::{CutMode, FaultFs, Rng};

const CYCLES_PER_DB: u64 = 20;

fn cycles() -> u64 {
    std::env::var("CAIRN_FUSE_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
}

fn base_seed() -> u64 {
    std::env::var("CAIRN_FUSE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64) % 1_000_000_007
    })
}

/// Kills the writer if the test fails while it runs, so the file system can be unmounted.
struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

#[derive(Debug, Default)]
struct Totals {
    cuts: [u64; 3],
    acked: u64,
    in_flight_landed: u64,
    torn_wal_tails: u64,
    cut_during_open: u64,
    armed_cuts: u64,
    pending_ops: u64,
    kept_ops: u64,
    torn_ops: u64,
    pending_names: u64,
    kept_names: u64,
    max_tables: usize,
    max_file_number: u64,
}

#[test]
fn power_cuts_on_the_real_file_system_keep_every_acknowledged_commit() {
    let base = tempfile::tempdir().unwrap();
    let Some(mut fs) = FaultFs::mount_or_skip(base.path()).unwrap() else { return };
    let root = fs.path().to_path_buf();
    let cycles = cycles();
    let seed0 = base_seed();
    println!("power-loss (FUSE): {cycles} cycles, CAIRN_FUSE_SEED={seed0}, mounted at {}", root.display());
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut next = 0u64;
    let mut created = false;
    let mut dir = root.join("db0000");
    for cycle in 0..cycles {
        if cycle % CYCLES_PER_DB == 0 {
            if cycle > 0 {
                fs::remove_dir_all(&dir).unwrap();
            }
            dir = root.join(format!("db{:04}", cycle / CYCLES_PER_DB));
            fs::create_dir(&dir).unwrap();
            sync_dir(&root);
            model.clear();
            next = 0;
            created = false;
        }
        let seed = Rng::new(seed0 ^ cycle.wrapping_mul(0x2545_f491_4f6c_dd1d)).next_u64();
        let mut rng = Rng::new(seed);
        let mode = CutMode::ALL[rng.below(3) as usize];
        let cut_seed = rng.next_u64();
        // Half the cuts come at a random instant, half just before a random file-system change (a write,
        // sync, creation, rename or removal), so many land in the middle of a flush, a compaction, a WAL
        // switch or a manifest rewrite.
        let (trigger, run_ms, at_change) = if rng.below(2) == 0 {
            let ms = if rng.below(8) == 0 { rng.below(10) } else { 10 + rng.below(110) };
            (format!("after {ms} ms"), ms, None)
        } else {
            let n = rng.below(1200);
            (format!("before change {n}"), 300, Some(n))
        };
        let ctx = format!(
            "cycle {cycle} (CAIRN_FUSE_SEED={seed0}; cut {mode:?} seed {cut_seed:#x} {trigger}; {} from commit {next})",
            dir.display()
        );

        if let Some(n) = at_change {
            fs.arm(n, mode, cut_seed);
        }
        let mut writer = Writer(
            Command::new(env!("CARGO_BIN_EXE_power_child"))
                .arg(&dir)
                .arg(next.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdout = writer.0.stdout.take().unwrap();
        let mut stderr = writer.0.stderr.take().unwrap();
        let acks = thread::spawn(move || {
            let (mut opened, mut last) = (false, None);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "open" {
                    opened = true;
                } else if let Some(n) = line.strip_prefix("ack ").and_then(|n| n.parse::<u64>().ok()) {
                    last = Some(n);
                }
            }
            (opened, last)
        });
        let errors = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_millis(run_ms);
        let mut early_exit = None;
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
            // Exited first, cut second: a writer that exits because the power was cut has seen the cut.
            let exited = writer.0.try_wait().unwrap();
            if fs.cut_report().is_some() {
                break;
            }
            if let Some(status) = exited {
                early_exit = Some(status);
                break;
            }
        }
        let report = match fs.cut_report() {
            Some(report) => {
                totals.armed_cuts += 1;
                report
            }
            None => fs.cut(mode, cut_seed),
        };
        let _ = writer.0.kill();
        writer.0.wait().unwrap();
        let (opened, acked) = acks.join().unwrap();
        let errors = errors.join().unwrap();
        if let Some(status) = early_exit {
            panic!("{ctx}: the writer exited before the cut ({status}): {errors}");
        }
        drop(writer);
        fs.reboot().unwrap_or_else(|e| panic!("{ctx}: reboot: {e}"));

        totals.cuts[mode as usize] += 1;
        totals.cut_during_open += u64::from(!opened);
        totals.pending_ops += report.pending_ops;
        totals.kept_ops += report.kept_ops;
        totals.torn_ops += report.torn_ops;
        totals.pending_names += report.pending_names;
        totals.kept_names += report.kept_names;
        if let Some(last) = acked {
            assert!(last >= next, "{ctx}: acknowledged {last} before starting");
            totals.acked += last + 1 - next;
        }
        let names: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        totals.max_tables = totals.max_tables.max(names.iter().filter(|n| n.ends_with(".sst")).count());
        for n in &names {
            let digits = n.trim_start_matches("MANIFEST-").split('.').next().unwrap_or("");
            totals.max_file_number = totals.max_file_number.max(digits.parse().unwrap_or(0));
        }

        // The image must check healthy (a torn WAL tail aside) before anything writes to it.
        if names.iter().any(|n| n == "CURRENT") {
            let check = Check::new().run(&dir).unwrap_or_else(|e| panic!("{ctx}: check failed: {e}; files {names:?}"));
            assert!(check.problems.is_empty(), "{ctx}: check found problems: {:#?}; files {names:?}", check.problems);
            totals.torn_wal_tails += u64::from(check.torn_wal.is_some());
        } else {
            assert!(
                !created && acked.is_none(),
                "{ctx}: CURRENT is gone from a database that was created (acknowledged: {acked:?}); files {names:?}"
            );
        }

        let db = Db::open(&dir).unwrap_or_else(|e| panic!("{ctx}: open after the cut failed: {e}; files {names:?}"));
        let in_flight = acked.map_or(next, |last| last + 1);
        for n in next..in_flight {
            for (key, value) in power_workload::ops(n) {
                match value {
                    Some(v) => model.insert(key.into_bytes(), v),
                    None => model.remove(key.as_bytes()),
                };
            }
        }
        if db.get(format!("k{in_flight:08}")).unwrap().is_some() {
            totals.in_flight_landed += 1;
            for (key, value) in power_workload::ops(in_flight) {
                match value {
                    Some(v) => model.insert(key.into_bytes(), v),
                    None => model.remove(key.as_bytes()),
                };
            }
        }
        let found: BTreeMap<Vec<u8>, Vec<u8>> = db.iter().unwrap().map(Result::unwrap).collect();
        if found != model {
            let missing: Vec<_> =
                model.keys().filter(|k| !found.contains_key(*k)).map(|k| String::from_utf8_lossy(k)).collect();
            let extra: Vec<_> =
                found.keys().filter(|k| !model.contains_key(*k)).map(|k| String::from_utf8_lossy(k)).collect();
            let wrong: Vec<_> = model
                .iter()
                .filter(|(k, v)| found.get(*k).is_some_and(|f| f != *v))
                .map(|(k, _)| String::from_utf8_lossy(k))
                .collect();
            panic!(
                "{ctx}: after the cut (acknowledged up to {acked:?}) the database differs from the acknowledged \
                 commits: missing {missing:?}, never written {extra:?}, wrong values {wrong:?}; files {names:?}"
            );
        }
        db.verify().unwrap_or_else(|e| panic!("{ctx}: verify: {e}"));
        db.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
        created = true;
        next = in_flight + 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "power-loss (FUSE): {cycles} cuts in {secs:.1} s (Drop {}, Tear {}, Subset {}; {} before a file-system change, {} during open), \
         {} acknowledged commits, in-flight commit landed {} times, torn WAL tails {}; unsynced writes at the \
         cuts {} (kept whole {}, torn {}), unsynced name changes {} (kept {}); up to {} tables in a database, \
         file numbers up to {}",
        totals.cuts[0],
        totals.cuts[1],
        totals.cuts[2],
        totals.armed_cuts,
        totals.cut_during_open,
        totals.acked,
        totals.in_flight_landed,
        totals.torn_wal_tails,
        totals.pending_ops,
        totals.kept_ops,
        totals.torn_ops,
        totals.pending_names,
        totals.kept_names,
        totals.max_tables,
        totals.max_file_number,
    );
    assert!(totals.acked > cycles, "the writer made progress");
}
