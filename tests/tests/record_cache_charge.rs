//! The cache of decoded records charges what a kept record holds in memory: measured here with a counting
//! allocator (this test binary's own) against the bytes the cache reports for the benchmark's jobs.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use cairn_platform::{Job, JobStatus};
use cairn_store::Store;

/// Counts the bytes this thread holds, as requested from the allocator.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the thread-local counter neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|l| l.set(l.get() + layout.size() as isize));
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - layout.size() as isize));
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// A job as the benchmark makes them (`benches/src/compare/workloads.rs`).
fn job(i: usize) -> Job {
    let mut j = Job::new(
        format!("job-{i:08}"),
        format!("train-model-{}", i % 997),
        format!("user{}", i % 50),
        format!("project{}", i % 20),
        (i * 37 % 1000) as i64,
        1_700_000_000_000 + i as i64,
    );
    j.status = JobStatus::Running;
    j.resources.cpus = 8;
    j.resources.memory_mb = 32_768;
    j.resources.gpus = 1;
    j.environment.image = "registry.local/ml/pytorch:2.4-cuda12".into();
    j.environment.command =
        vec!["python".into(), "train.py".into(), "--epochs".into(), "90".into(), "--lr".into(), "0.1".into()];
    j.environment.env =
        BTreeMap::from([("NCCL_DEBUG".to_owned(), "WARN".to_owned()), ("OMP_NUM_THREADS".to_owned(), "8".to_owned())]);
    j.labels =
        BTreeMap::from([("team".to_owned(), format!("team-{}", i % 9)), ("tier".to_owned(), "batch".to_owned())]);
    j
}

/// Regression: each kept record was charged its stored bytes, while a decoded job holds about 2.8 times
/// that, so the cache held about three times its budget.
#[test]
fn a_kept_job_is_charged_at_least_what_it_holds_decoded() {
    let jobs: Vec<Job> = (0..200).map(job).collect();
    // What a decoded job holds: its heap, plus the job itself.
    let mut held = 0isize;
    let mut stored = 0usize;
    for j in &jobs {
        let json = serde_json::to_vec(j).unwrap();
        stored += json.len();
        let before = live();
        let decoded: Job = serde_json::from_slice(&json).unwrap();
        held += live() - before + std::mem::size_of::<Job>() as isize;
        drop(decoded);
    }
    let held = held as usize;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let coll = store.collection::<Job>().unwrap();
    for j in &jobs {
        coll.insert(j).unwrap();
    }
    // The first two reads of a record mark it, the third keeps it decoded.
    for _ in 0..3 {
        for j in &jobs {
            assert_eq!(coll.get(&j.id).unwrap().unwrap().doc, *j);
        }
    }
    let charged = store.record_cache_stats().bytes;
    assert!(held > 2 * stored, "a decoded job holds {held} bytes for {stored} stored: more than twice");
    // Charged what the jobs hold, with the allocator's rounding and the entries' own cost on top, and not
    // wildly more.
    assert!(charged >= held, "charged {charged} bytes for jobs holding {held}");
    assert!(charged < 2 * held, "charged {charged} bytes for jobs holding {held}");
}
