//! Process crash test: a child process commits durably and reports every acknowledged commit; the parent
//! kills it with SIGKILL at a random moment (flushes and compactions run all the time), reopens the
//! database, and checks that every acknowledged commit is there, whole, and nothing after the one in flight.
//! `CAIRN_KILL_CYCLES` sets the number of kills (default 30).

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_engine::Db;
use cairn_tests::value;

fn cycles() -> u64 {
    std::env::var("CAIRN_KILL_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(30)
}

#[test]
fn sigkill_never_loses_an_acknowledged_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut next = 0u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for cycle in 0..cycles() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = Duration::from_millis(20 + rng % 250);
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_child"))
            .arg(dir.path())
            .arg(next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = Instant::now();
        let mut acked = None;
        while started.elapsed() < run_for {
            match lines.next() {
                Some(Ok(line)) => acked = line.strip_prefix("ack ").and_then(|n| n.parse::<u64>().ok()).or(acked),
                _ => break,
            }
        }
        child.kill().unwrap();
        // Acknowledgements already in the pipe count too: they were acknowledged before the kill.
        for line in lines.map_while(Result::ok) {
            acked = line.strip_prefix("ack ").and_then(|n| n.parse::<u64>().ok()).or(acked);
        }
        child.wait().unwrap();

        let db = Db::open(dir.path()).unwrap();
        if let Some(last) = acked {
            for n in next..=last {
                assert_eq!(db.get(format!("k{n:08}")).unwrap(), Some(value(n)), "cycle {cycle}: commit {n} lost");
                if n % 5 == 0 {
                    for i in 0..5 {
                        assert_eq!(db.get(format!("b{n:08}/{i}")).unwrap(), Some(value(n)), "cycle {cycle}: batch {n}");
                    }
                }
            }
        }
        // The commit in flight may or may not have landed, but whole; nothing after it exists.
        let in_flight = acked.map_or(next, |l| l + 1);
        let landed = db.get(format!("k{in_flight:08}")).unwrap().is_some();
        if in_flight % 5 == 0 {
            for i in 0..5 {
                assert_eq!(
                    db.get(format!("b{in_flight:08}/{i}")).unwrap().is_some(),
                    landed,
                    "cycle {cycle}: torn batch"
                );
            }
        }
        assert_eq!(db.get(format!("k{:08}", in_flight + 1)).unwrap(), None, "cycle {cycle}: a commit never made");
        db.verify().unwrap();
        db.close().unwrap();
        next = in_flight + 1;
    }
    assert!(next > cycles(), "the child made progress");
}
