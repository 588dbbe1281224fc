//! `index_build`: writers' commit latency while an index is built online on a large collection.
//!
//! ```text
//! cargo run --release -p cairn-bench --bin index_build -- [--records 1000000] [--writers 2]
//! ```
//!
//! Loads `--records` documents of about 200 bytes (untyped collection `docs`, one index on `status`) in
//! transactions of 1,000, then runs `--writers` threads doing durable single-record upserts of random
//! records (`Durability::Immediate`: each commit is synced, group commit shares the syncs) for 3 s, then
//! declares a second index (`owner_priority` over `owner`, `-priority`) while they go on, then 3 s more.
//! Prints commit latency percentiles before, during and after the build, and the build's duration.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use cairn_store::{CollectionSpec, IndexSpec, Store};
use rand::{Rng, SeedableRng};
use serde_json::json;

type Failure = Box<dyn std::error::Error>;

fn arg(name: &str, default: usize) -> Result<usize, Failure> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args.get(i + 1).ok_or(format!("{name} needs a value"))?.parse()?),
        None => Ok(default),
    }
}

fn doc(i: usize, n: u64) -> serde_json::Value {
    let status = ["PENDING", "RUNNING", "COMPLETED", "FAILED"][i % 4];
    json!({
        "status": status,
        "owner": format!("user{}", i % 50),
        "priority": (i * 37 + n as usize) % 1000,
        "project": format!("project{}", i % 20),
        "note": "x".repeat(120),
        "n": n,
    })
}

/// Percentiles of `lat` (sorted in place), in microseconds.
fn row(phase: &str, lat: &mut [Duration], secs: f64) -> String {
    lat.sort_unstable();
    let at = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).map_or(0, |d| d.as_micros())
    };
    format!(
        "| {phase} | {:.1} | {} | {:.0} | {} | {} | {} | {} |",
        secs,
        lat.len(),
        lat.len() as f64 / secs.max(1e-9),
        at(0.5),
        at(0.99),
        at(0.999),
        lat.last().map_or(0, |d| d.as_micros())
    )
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("index_build: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Failure> {
    let records = arg("--records", 1_000_000)?;
    let writers = arg("--writers", 2)?;
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let store = Store::open(dir.path())?;
    let status = IndexSpec::new("status", &["status"]);
    store.declare(CollectionSpec::new("docs", vec![status.clone()]))?;
    let load = Instant::now();
    for chunk in (0..records).collect::<Vec<_>>().chunks(1000) {
        let mut tx = store.begin();
        for &i in chunk {
            tx.insert_doc("docs", &format!("d{i:08}"), doc(i, 0))?;
        }
        tx.commit()?;
    }
    eprintln!("loaded {records} records in {:.1} s", load.elapsed().as_secs_f64());

    // 0: before the build, 1: during, 2: after.
    let phase = AtomicU8::new(0);
    let stop = AtomicBool::new(false);
    let latencies: Mutex<[Vec<Duration>; 3]> = Mutex::new([Vec::new(), Vec::new(), Vec::new()]);
    let c = store.collection_dyn("docs")?;
    let mut spans = [0f64; 3];
    thread::scope(|s| -> Result<(), Failure> {
        for w in 0..writers {
            let (c, phase, stop, latencies) = (&c, &phase, &stop, &latencies);
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
                let mut mine: [Vec<Duration>; 3] = [Vec::new(), Vec::new(), Vec::new()];
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    let i = rng.gen_range(0..records);
                    let at = phase.load(Ordering::Acquire);
                    let t = Instant::now();
                    if let Err(e) = c.upsert(&format!("d{i:08}"), doc(i, n)) {
                        eprintln!("writer {w}: {e}");
                        return;
                    }
                    // Counted in the phase it began in, unless the build began meanwhile.
                    let took = t.elapsed();
                    mine[usize::from(at.max(phase.load(Ordering::Acquire).min(1)))].push(took);
                }
                let mut all = latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (a, m) in all.iter_mut().zip(mine) {
                    a.extend(m);
                }
            });
        }
        thread::sleep(Duration::from_secs(3));
        spans[0] = 3.0;
        let build = Instant::now();
        phase.store(1, Ordering::Release);
        store.declare(CollectionSpec::new(
            "docs",
            vec![status.clone(), IndexSpec::new("owner_priority", &["owner", "-priority"])],
        ))?;
        phase.store(2, Ordering::Release);
        spans[1] = build.elapsed().as_secs_f64();
        thread::sleep(Duration::from_secs(3));
        spans[2] = 3.0;
        stop.store(true, Ordering::Release);
        Ok(())
    })?;
    store.check_indexes()?;
    let mut all = latencies.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    println!("{records} records, {writers} writers of durable single-record upserts; index built in {:.1} s", spans[1]);
    println!();
    println!("| phase | seconds | commits | commits/s | p50 us | p99 us | p99.9 us | max us |");
    println!("|---|---|---|---|---|---|---|---|");
    for (k, name) in ["before", "during the build", "after"].iter().enumerate() {
        println!("{}", row(name, &mut all[k], spans[k]));
    }
    Ok(())
}
