//! The job queue's tests: exactly-once claims under contention, leases, fencing tokens, retries, unique
//! keys, scheduling, transactions, reopening, crashes, counts and pruning.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_engine::{CrashMode, Db, MemStorage, Options};
use parking_lot::Mutex;
use serde_json::json;

use super::model::UniqueRef;
use super::*;
use crate::{CollectionSpec, StoreOptions, WriteError};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn quiet() -> QueueOptions {
    QueueOptions::default().maintenance_interval(Duration::ZERO)
}

fn open_with(opts: QueueOptions) -> (tempfile::TempDir, JobQueue) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::with_db(Db::open(dir.path()).unwrap(), StoreOptions::default()).unwrap();
    (dir, JobQueue::open(store, opts).unwrap())
}

fn manual() -> (tempfile::TempDir, JobQueue, ManualClock) {
    let clock = ManualClock::new(T0);
    let (dir, q) = open_with(quiet().clock(clock.clone()));
    (dir, q, clock)
}

fn open_on(fs: &MemStorage, opts: QueueOptions) -> JobQueue {
    let db = Options::default().storage(Arc::new(fs.clone())).open(Path::new("/db")).unwrap();
    JobQueue::open(Store::with_db(db, StoreOptions::default()).unwrap(), opts).unwrap()
}

fn claim(q: &JobQueue, queues: &[&str], worker: &str, lease_ms: u64) -> Option<Job> {
    q.claim(&ClaimRequest::new(queues, worker, lease_ms)).unwrap()
}

/// Every job, counted per queue and state by reading them all.
fn scanned_counts(q: &JobQueue) -> BTreeMap<String, QueueCounts> {
    let mut out: BTreeMap<String, [i64; 7]> = BTreeMap::new();
    for pair in q.store().db().prefix(crate::keys::record_prefix(JOBS)).unwrap() {
        let (key, value) = pair.unwrap();
        let doc = crate::envelope::decode(&key, &value).unwrap().doc;
        let job: Job = serde_json::from_value(doc).unwrap();
        out.entry(job.queue.clone()).or_default()[job.state.index()] += 1;
    }
    out.into_iter().map(|(q, a)| (q, QueueCounts::from_array(a))).collect()
}

/// The kept counts of every queue agree with a scan of the jobs, and every index entry with its job.
fn assert_counts_agree(q: &JobQueue) {
    let scanned = scanned_counts(q);
    for queue in q.queues().unwrap() {
        let kept = q.counts(&queue).unwrap();
        assert_eq!(kept, scanned.get(&queue).copied().unwrap_or_default(), "queue {queue}");
    }
    q.store().check_indexes().unwrap();
}

#[test]
fn each_of_10k_jobs_is_claimed_and_completed_exactly_once_by_16_workers() {
    let (_dir, q) = open_with(QueueOptions::default());
    const JOBS_N: u64 = 10_000;
    const WORKERS: usize = 16;
    let batches: Vec<Vec<NewJob>> = (0..JOBS_N)
        .collect::<Vec<_>>()
        .chunks(100)
        .map(|c| c.iter().map(|i| NewJob::new("work", "echo", json!({ "n": i })).priority((i % 3) as u8)).collect())
        .collect();
    let completed: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    let claims = AtomicU64::new(0);
    let enqueued = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Enqueues run while the workers claim.
        s.spawn(|| {
            for b in &batches {
                q.enqueue_batch(b).unwrap();
            }
            enqueued.store(true, Ordering::SeqCst);
        });
        for w in 0..WORKERS {
            let (q, completed, claims, enqueued) = (&q, &completed, &claims, &enqueued);
            s.spawn(move || {
                let worker = format!("w{w}");
                loop {
                    let done = enqueued.load(Ordering::SeqCst);
                    let req = ClaimRequest::new(&["work"], &worker, 60_000).wait(50);
                    match q.claim(&req).unwrap() {
                        Some(job) => {
                            claims.fetch_add(1, Ordering::Relaxed);
                            assert_eq!((job.state, job.attempt, job.token), (JobState::Running, 1, 1));
                            let finished = q.complete(job.id, job.token).unwrap();
                            assert_eq!(finished.state, JobState::Completed);
                            completed.lock().push(job.id);
                        }
                        None if done => return,
                        None => {}
                    }
                }
            });
        }
    });
    let completed = completed.into_inner();
    let unique: HashSet<u64> = completed.iter().copied().collect();
    assert_eq!(completed.len() as u64, JOBS_N, "every job completed once");
    assert_eq!(unique.len() as u64, JOBS_N, "no job completed twice");
    assert_eq!(claims.load(Ordering::Relaxed), JOBS_N, "no job claimed twice");
    let counts = q.counts("work").unwrap();
    assert_eq!(counts, QueueCounts { completed: JOBS_N, ..QueueCounts::default() });
    assert_counts_agree(&q);
}

#[test]
fn claims_take_the_most_urgent_job_of_the_queues_served_then_the_oldest() {
    let (_dir, q) = open_with(quiet());
    let a1 = q.enqueue(&NewJob::new("a", "k", json!(1)).priority(5)).unwrap().job;
    let b1 = q.enqueue(&NewJob::new("b", "k", json!(2)).priority(1)).unwrap().job;
    let a2 = q.enqueue(&NewJob::new("a", "k", json!(3)).priority(1)).unwrap().job;
    let c1 = q.enqueue(&NewJob::new("c", "k", json!(4)).priority(0)).unwrap().job;
    let order: Vec<u64> = std::iter::from_fn(|| claim(&q, &["a", "b"], "w", 1000)).map(|j| j.id).collect();
    assert_eq!(order, [b1.id, a2.id, a1.id], "priority, then age; queue c not served");
    assert_eq!(claim(&q, &["c"], "w", 1000).unwrap().id, c1.id);
}

#[test]
fn an_expired_lease_is_rescued_and_the_stale_token_refused() {
    let (_dir, q, clock) = manual();
    let id = q.enqueue(&NewJob::new("q", "k", json!({}))).unwrap().job.id;
    let first = claim(&q, &["q"], "slow", 1_000).unwrap();
    assert_eq!(first.lease_until_ms, Some(T0 + 1_000));
    // A heartbeat extends the lease; nothing is rescued before it expires.
    clock.advance(Duration::from_millis(900));
    assert_eq!(q.heartbeat(id, first.token, 1_000).unwrap().lease_until_ms, Some(T0 + 1_900));
    clock.advance(Duration::from_millis(900));
    assert_eq!(q.rescue_expired().unwrap(), 0);
    clock.advance(Duration::from_millis(200));
    assert_eq!(q.rescue_expired().unwrap(), 1);
    let rescued = q.get(id).unwrap().unwrap();
    assert_eq!((rescued.state, rescued.attempt, rescued.errors.len()), (JobState::Retryable, 1, 1));
    assert!(rescued.errors[0].error.contains("lease expired"), "{:?}", rescued.errors);
    // The slow worker cannot finish it: it is no longer running.
    assert!(matches!(q.complete(id, first.token), Err(QueueError::InvalidTransition { .. })));
    assert!(matches!(q.heartbeat(id, first.token, 1_000), Err(QueueError::InvalidTransition { .. })));
    // After the backoff another worker claims it, with a new token.
    assert!(claim(&q, &["q"], "fast", 1_000).is_none(), "backing off");
    clock.set(rescued.due_at_ms.unwrap());
    let second = claim(&q, &["q"], "fast", 1_000).unwrap();
    assert_eq!((second.id, second.attempt, second.token), (id, 2, first.token + 1));
    for refused in [q.complete(id, first.token), q.fail(id, first.token, "late"), q.snooze(id, first.token, 10)] {
        match refused {
            Err(QueueError::StaleToken { id: i, presented, current }) => {
                assert_eq!((i, presented, current), (id, first.token, second.token));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(q.heartbeat(id, first.token, 1_000), Err(QueueError::StaleToken { .. })));
    let done = q.complete(id, second.token).unwrap();
    assert_eq!((done.state, done.finished_at_ms), (JobState::Completed, Some(clock.now_ms())));
    assert!(matches!(q.complete(id, second.token), Err(QueueError::InvalidTransition { .. })), "not twice");
    assert_counts_agree(&q);
}

#[test]
fn failures_back_off_until_max_attempts_then_the_job_is_discarded_and_can_be_retried_or_purged() {
    let clock = ManualClock::new(T0);
    let opts = quiet().clock(clock.clone()).queue_backoff("fixed", Backoff::fixed(5_000));
    let (_dir, q) = open_with(opts);
    let id = q.enqueue(&NewJob::new("q", "k", json!({})).max_attempts(3)).unwrap().job.id;
    let mut waits = Vec::new();
    for attempt in 1..=3u32 {
        let job = claim(&q, &["q"], "w", 60_000).unwrap();
        assert_eq!(job.attempt, attempt);
        let failed = q.fail(id, job.token, &format!("boom {attempt}")).unwrap();
        if attempt < 3 {
            assert_eq!(failed.state, JobState::Retryable);
            let wait = failed.due_at_ms.unwrap() - clock.now_ms();
            waits.push(wait);
            clock.advance(Duration::from_millis(wait as u64 - 1));
            assert!(claim(&q, &["q"], "w", 60_000).is_none(), "attempt {attempt}: not before the backoff");
            clock.advance(Duration::from_millis(1));
        } else {
            assert_eq!((failed.state, failed.due_at_ms), (JobState::Discarded, None));
            assert_eq!(failed.finished_at_ms, Some(clock.now_ms()));
        }
    }
    // Oban's backoff: attempt^4 + 15 s, plus up to 10%.
    assert!((16_000..=17_600).contains(&waits[0]) && (31_000..=34_100).contains(&waits[1]), "{waits:?}");
    let job = q.get(id).unwrap().unwrap();
    let errors: Vec<(u32, &str)> = job.errors.iter().map(|e| (e.attempt, e.error.as_str())).collect();
    assert_eq!(errors, [(1, "boom 1"), (2, "boom 2"), (3, "boom 3")]);
    assert!(claim(&q, &["q"], "w", 60_000).is_none(), "dead letters are not claimed");
    assert_eq!(q.counts("q").unwrap(), QueueCounts { discarded: 1, ..QueueCounts::default() });
    let dead = q.list("q", JobState::Discarded, None, 10).unwrap();
    assert_eq!(dead.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);

    // Retried: available at once, with one more attempt.
    let retried = q.retry(id).unwrap();
    assert_eq!((retried.state, retried.max_attempts), (JobState::Available, 4));
    let job = claim(&q, &["q"], "w", 60_000).unwrap();
    assert_eq!(job.attempt, 4);
    assert_eq!(q.fail(id, job.token, "again").unwrap().state, JobState::Discarded);
    assert!(matches!(
        q.retry(q.enqueue(&NewJob::new("q", "k", json!({}))).unwrap().job.id),
        Err(QueueError::InvalidTransition { .. })
    ));

    // A queue's own backoff.
    let fixed = q.enqueue(&NewJob::new("fixed", "k", json!({}))).unwrap().job.id;
    let job = claim(&q, &["fixed"], "w", 60_000).unwrap();
    assert_eq!(q.fail(fixed, job.token, "x").unwrap().due_at_ms, Some(clock.now_ms() + 5_000));

    // Purged: gone, counts follow.
    assert!(matches!(q.purge(fixed), Err(QueueError::NotFinished { state: JobState::Retryable, .. })));
    assert_eq!(q.purge_discarded("q").unwrap(), 1);
    assert_eq!(q.get(id).unwrap(), None);
    assert!(matches!(q.purge(id), Err(QueueError::NotFound(_))));
    assert_eq!(q.counts("q").unwrap(), QueueCounts { available: 1, ..QueueCounts::default() });
    assert_counts_agree(&q);
}

#[test]
fn concurrent_enqueues_of_one_unique_key_make_one_job() {
    let (_dir, q) = open_with(quiet());
    let ids: Mutex<Vec<(u64, bool)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..8 {
            let (q, ids) = (&q, &ids);
            s.spawn(move || {
                for i in 0..25 {
                    let job = NewJob::new("q", "sync", json!({ "t": t, "i": i })).unique("account-42");
                    let e = q.enqueue(&job).unwrap();
                    ids.lock().push((e.job.id, e.duplicate));
                }
            });
        }
    });
    let ids = ids.into_inner();
    let distinct: HashSet<u64> = ids.iter().map(|(id, _)| *id).collect();
    assert_eq!(distinct.len(), 1, "one job for the key");
    assert_eq!(ids.iter().filter(|(_, dup)| !dup).count(), 1, "one enqueue added it");
    assert_eq!(q.counts("q").unwrap().available, 1);

    // Another queue, or another key, is another job; a batch repeating a key adds it once.
    assert!(!q.enqueue(&NewJob::new("other", "sync", json!({})).unique("account-42")).unwrap().duplicate);
    let batch = q
        .enqueue_batch(&[
            NewJob::new("q", "sync", json!({})).unique("b"),
            NewJob::new("q", "sync", json!({})).unique("b"),
        ])
        .unwrap();
    assert_eq!((batch[0].duplicate, batch[1].duplicate, batch[1].job.id), (false, true, batch[0].job.id));

    // Once the job finishes, the key is free again (default states: unfinished).
    let id = *distinct.iter().next().unwrap();
    let job = loop {
        let j = claim(&q, &["q"], "w", 60_000).unwrap();
        if j.id == id {
            break j;
        }
    };
    let again = NewJob::new("q", "sync", json!({})).unique("account-42");
    assert!(q.enqueue(&again).unwrap().duplicate, "running still holds it");
    q.complete(id, job.token).unwrap();
    let fresh = q.enqueue(&again).unwrap();
    assert!(!fresh.duplicate && fresh.job.id != id);
    // Unique across completed jobs too when asked.
    let with_completed = NewJob::new("q", "sync", json!({})).unique_with(Unique {
        key: "account-42".into(),
        period_ms: None,
        states: Some(vec![JobState::Available, JobState::Completed]),
    });
    assert_eq!(q.enqueue(&with_completed).unwrap().job.id, fresh.job.id);
    assert_counts_agree(&q);
}

#[test]
fn a_unique_period_lets_an_old_job_be_enqueued_again() {
    let (_dir, q, clock) = manual();
    let unique = |period| Unique { key: "k".into(), period_ms: Some(period), states: None };
    let first = q.enqueue(&NewJob::new("q", "k", json!({})).unique_with(unique(60_000))).unwrap();
    clock.advance(Duration::from_secs(59));
    assert!(q.enqueue(&NewJob::new("q", "k", json!({})).unique_with(unique(60_000))).unwrap().duplicate);
    clock.advance(Duration::from_secs(2));
    let second = q.enqueue(&NewJob::new("q", "k", json!({})).unique_with(unique(60_000))).unwrap();
    assert!(!second.duplicate && second.job.id != first.job.id);
}

#[test]
fn scheduled_jobs_become_available_at_run_at_without_maintenance() {
    let (_dir, q, clock) = manual();
    let later = q.enqueue(&NewJob::new("q", "k", json!("later")).run_at(T0 + 10_000)).unwrap().job;
    let sooner = q.enqueue(&NewJob::new("q", "k", json!("sooner")).run_at(T0 + 5_000).priority(3)).unwrap().job;
    let past = q.enqueue(&NewJob::new("q", "k", json!("past")).run_at(T0 - 1)).unwrap().job;
    assert_eq!(
        (later.state, sooner.state, past.state),
        (JobState::Scheduled, JobState::Scheduled, JobState::Available)
    );
    assert_eq!(q.counts("q").unwrap(), QueueCounts { scheduled: 2, available: 1, ..QueueCounts::default() });
    assert_eq!(claim(&q, &["q"], "w", 60_000).unwrap().id, past.id);
    clock.set(T0 + 4_999);
    assert!(claim(&q, &["q"], "w", 60_000).is_none());
    clock.set(T0 + 5_000);
    assert_eq!(claim(&q, &["q"], "w", 60_000).unwrap().id, sooner.id, "due at 5 s");
    assert!(claim(&q, &["q"], "w", 60_000).is_none());
    clock.set(T0 + 10_000);
    assert_eq!(q.counts("q").unwrap().scheduled, 1, "promoted only when someone looks");
    assert_eq!(q.maintain().unwrap().promoted, 1);
    assert_eq!(q.counts("q").unwrap(), QueueCounts { available: 1, running: 2, ..QueueCounts::default() });
    assert_eq!(claim(&q, &["q"], "w", 60_000).unwrap().id, later.id);
    // A snoozed job is scheduled again, and the attempt does not count.
    let job = q.get(later.id).unwrap().unwrap();
    let snoozed = q.snooze(later.id, job.token, 3_000).unwrap();
    assert_eq!((snoozed.state, snoozed.attempt, snoozed.due_at_ms), (JobState::Scheduled, 0, Some(T0 + 13_000)));
    clock.set(T0 + 13_000);
    let again = claim(&q, &["q"], "w", 60_000).unwrap();
    assert_eq!((again.id, again.attempt, again.token), (later.id, 1, 2));
    assert_counts_agree(&q);
}

#[test]
fn a_waiting_claim_wakes_on_an_enqueue_and_times_out_otherwise() {
    let (_dir, q) = open_with(quiet());
    let started = Instant::now();
    assert!(q.claim(&ClaimRequest::new(&["q"], "w", 1000).wait(150)).unwrap().is_none());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(150) && waited < Duration::from_secs(2), "{waited:?}");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let started = Instant::now();
            let job = q.claim(&ClaimRequest::new(&["q"], "w", 1000).wait(10_000)).unwrap();
            (job, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        let id = q.enqueue(&NewJob::new("q", "k", json!({}))).unwrap().job.id;
        let (job, took) = waiter.join().unwrap();
        assert_eq!(job.unwrap().id, id);
        assert!(took < Duration::from_secs(5), "woken, not timed out: {took:?}");
    });
    // A job scheduled a little later wakes a waiting claim when due, without maintenance.
    let due = crate::clock::now_ms() + 200;
    let id = q.enqueue(&NewJob::new("q", "k", json!({})).run_at(due)).unwrap().job.id;
    let job = q.claim(&ClaimRequest::new(&["q"], "w", 1000).wait(5_000)).unwrap().unwrap();
    assert_eq!(job.id, id);
    assert!(crate::clock::now_ms() >= due);
}

#[test]
fn an_enqueue_in_a_transaction_commits_with_its_record_or_not_at_all() {
    let (_dir, q) = open_with(quiet());
    let store = q.store().clone();
    store.declare(CollectionSpec::new("orders", vec![])).unwrap();
    let mut tx = store.begin();
    tx.insert_doc("orders", "o1", json!({"total": 10})).unwrap();
    let job = q.enqueue_in(&mut tx, &NewJob::new("mail", "receipt", json!({"order": "o1"}))).unwrap().job;
    assert_eq!(q.get(job.id).unwrap(), None, "not before the commit");
    tx.commit().unwrap();
    assert_eq!(q.get(job.id).unwrap().unwrap().state, JobState::Available);
    assert!(store.collection_dyn("orders").unwrap().get("o1").unwrap().is_some());

    // The order exists already: the transaction fails, and the job is not enqueued either.
    let result = store.transaction(|tx| {
        let e = q
            .enqueue_in(tx, &NewJob::new("mail", "receipt", json!({"order": "o1"})))
            .map_err(|e| WriteError::Invalid(e.to_string()))?;
        tx.insert_doc("orders", "o1", json!({"total": 11}))?;
        Ok(e.job.id)
    });
    assert!(matches!(result, Err(WriteError::AlreadyExists { .. })), "{result:?}");
    // A transaction dropped uncommitted enqueues nothing.
    let mut tx = store.begin();
    let dropped = q.enqueue_in(&mut tx, &NewJob::new("mail", "receipt", json!({}))).unwrap().job.id;
    drop(tx);
    assert_eq!(q.get(dropped).unwrap(), None);
    assert_eq!(q.counts("mail").unwrap(), QueueCounts { available: 1, ..QueueCounts::default() });
    // A waiting claim is woken by the transaction's commit.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| q.claim(&ClaimRequest::new(&["mail"], "w", 1000).wait(10_000)).unwrap());
        assert_eq!(waiter.join().unwrap().unwrap().id, job.id);
        let waiter = s.spawn(|| q.claim(&ClaimRequest::new(&["mail"], "w", 1000).wait(10_000)).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        let id = store
            .transaction(|tx| {
                tx.insert_doc("orders", "o2", json!({}))?;
                q.enqueue_in(tx, &NewJob::new("mail", "receipt", json!({})))
                    .map(|e| e.job.id)
                    .map_err(|e| WriteError::Invalid(e.to_string()))
            })
            .unwrap();
        assert_eq!(waiter.join().unwrap().unwrap().id, id);
    });
    assert_counts_agree(&q);
}

#[test]
fn bad_requests_and_disallowed_transitions_are_refused_and_change_nothing() {
    let (_dir, q) = open_with(quiet());
    let bad = [
        NewJob::new("", "k", json!({})),
        NewJob::new("has space", "k", json!({})),
        NewJob::new("q", "", json!({})),
        NewJob::new("q", "k", json!({})).priority(MAX_PRIORITY + 1),
        NewJob::new("q", "k", json!({})).max_attempts(0),
        NewJob::new("q", "k", json!({})).unique(""),
        NewJob::new("q", "k", json!({})).unique(&"x".repeat(MAX_UNIQUE_KEY_LEN + 1)),
    ];
    for job in &bad {
        assert!(matches!(q.enqueue(job), Err(QueueError::Invalid(_))), "{job:?}");
    }
    let good = NewJob::new("q", "k", json!({}));
    assert!(
        matches!(q.enqueue_batch(&[good.clone(), bad[3].clone()]), Err(QueueError::Invalid(_))),
        "whole batch refused"
    );
    assert_eq!(q.queues().unwrap(), Vec::<String>::new());
    for req in [ClaimRequest::new(&[], "w", 10), ClaimRequest::new(&["q"], "", 10), ClaimRequest::new(&["q"], "w", 0)] {
        assert!(matches!(q.claim(&req), Err(QueueError::Invalid(_))), "{req:?}");
    }
    let id = q.enqueue(&good).unwrap().job.id;
    assert!(matches!(
        q.complete(id, 0),
        Err(QueueError::InvalidTransition { from: JobState::Available, to: JobState::Completed, .. })
    ));
    assert!(matches!(q.fail(id, 0, "x"), Err(QueueError::InvalidTransition { .. })));
    assert!(matches!(q.complete(id + 1000, 0), Err(QueueError::NotFound(_))));
    assert!(matches!(q.retry(id), Err(QueueError::InvalidTransition { .. })));
    assert!(matches!(q.purge(id), Err(QueueError::NotFinished { .. })));
    assert_eq!(q.get(id).unwrap().unwrap().state, JobState::Available, "unchanged");
    assert_eq!(q.cancel(id).unwrap().state, JobState::Cancelled);
    assert!(matches!(q.cancel(id), Err(QueueError::InvalidTransition { from: JobState::Cancelled, .. })));
    assert!(claim(&q, &["q"], "w", 100).is_none(), "cancelled jobs are not claimed");
    // A running job cancelled under its worker: the worker's completion is refused.
    let id = q.enqueue(&good).unwrap().job.id;
    let job = claim(&q, &["q"], "w", 60_000).unwrap();
    q.cancel(id).unwrap();
    assert!(matches!(q.complete(id, job.token), Err(QueueError::InvalidTransition { from: JobState::Cancelled, .. })));
    assert_eq!(q.counts("q").unwrap(), QueueCounts { cancelled: 2, ..QueueCounts::default() });
    assert_counts_agree(&q);
}

#[test]
fn jobs_and_leases_survive_a_reopen_and_expired_leases_are_rescued_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let open = || {
        let store = Store::with_db(Db::open(dir.path()).unwrap(), StoreOptions::default()).unwrap();
        JobQueue::open(store, quiet().clock(clock.clone())).unwrap()
    };
    let (running, waiting, max_id) = {
        let q = open();
        let ids: Vec<u64> = (0..5).map(|i| q.enqueue(&NewJob::new("q", "k", json!(i))).unwrap().job.id).collect();
        let running = claim(&q, &["q"], "gone", 30_000).unwrap();
        q.enqueue(&NewJob::new("q", "k", json!("later")).run_at(T0 + 60_000)).unwrap();
        (running, ids.len() - 1, *ids.iter().max().unwrap() + 1)
    };
    clock.advance(Duration::from_secs(31));
    let q = open();
    assert_eq!(
        q.counts("q").unwrap(),
        QueueCounts { scheduled: 1, available: waiting as u64, running: 1, ..QueueCounts::default() }
    );
    let report = q.maintain().unwrap();
    assert_eq!((report.rescued, report.promoted), (1, 0));
    let rescued = q.get(running.id).unwrap().unwrap();
    assert_eq!((rescued.state, rescued.attempt), (JobState::Retryable, 1));
    assert!(matches!(q.complete(running.id, running.token), Err(QueueError::InvalidTransition { .. })));
    let fresh = q.enqueue(&NewJob::new("q", "k", json!("new"))).unwrap().job;
    assert!(fresh.id > max_id, "ids are not reused after a reopen");
    assert_counts_agree(&q);
}

#[test]
fn after_a_crash_every_acknowledged_step_is_there_and_leases_expire() {
    let fs = MemStorage::new();
    let clock = ManualClock::new(T0);
    let q = open_on(&fs, quiet().clock(clock.clone()));
    // Acknowledged: (job id, completed?).
    let acked: Arc<Mutex<Vec<(u64, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (q, acked, stop) = (q.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 3000 {
                n += 1;
                let e = q.enqueue(&NewJob::new("q", "k", json!({ "n": n }))).unwrap();
                acked.lock().push((e.job.id, false));
                if n % 3 != 0 {
                    if let Some(job) = claim(&q, &["q"], "w", 10_000) {
                        if n % 2 == 0 {
                            q.complete(job.id, job.token).unwrap();
                            acked.lock().push((job.id, true));
                        }
                    }
                }
            }
        })
    };
    let mut images = Vec::new();
    for i in 0..6u64 {
        std::thread::sleep(Duration::from_millis(40));
        let before = acked.lock().clone();
        images.push((fs.crash(i, [CrashMode::Drop, CrashMode::Tear, CrashMode::Garble][i as usize % 3]), before));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    drop(q);
    for (image, acked) in images {
        let q = open_on(&image, quiet().clock(clock.clone()));
        for (id, completed) in &acked {
            let job = q.get(*id).unwrap().unwrap_or_else(|| panic!("acknowledged job {id} lost"));
            if *completed {
                assert_eq!(job.state, JobState::Completed, "job {id}");
            }
        }
        assert_counts_agree(&q);
        // Leases taken before the crash expire and are rescued; the rescued jobs run again.
        let running = q.counts("q").unwrap().running;
        clock.advance(Duration::from_secs(11));
        assert_eq!(q.maintain().unwrap().rescued, running);
        assert_eq!(q.counts("q").unwrap().running, 0);
        assert_counts_agree(&q);
    }
}

#[test]
fn pruning_deletes_old_finished_jobs_and_their_unique_keys() {
    let clock = ManualClock::new(T0);
    let opts = quiet()
        .clock(clock.clone())
        .completed_retention(Duration::from_secs(60))
        .discarded_retention(Duration::from_secs(600));
    let (_dir, q) = open_with(opts);
    let done = q.enqueue(&NewJob::new("q", "k", json!({})).unique("u")).unwrap().job.id;
    let dead = q.enqueue(&NewJob::new("q", "k", json!({})).max_attempts(1)).unwrap().job.id;
    let cancelled = q.enqueue(&NewJob::new("q", "k", json!({}))).unwrap().job.id;
    let open_job = q.enqueue(&NewJob::new("q", "k", json!({})).priority(9)).unwrap().job.id;
    let j = claim(&q, &["q"], "w", 60_000).unwrap();
    q.complete(j.id, j.token).unwrap();
    let j = claim(&q, &["q"], "w", 60_000).unwrap();
    q.fail(j.id, j.token, "x").unwrap();
    q.cancel(cancelled).unwrap();
    clock.advance(Duration::from_secs(59));
    assert_eq!(q.maintain().unwrap().pruned, 0);
    clock.advance(Duration::from_secs(2));
    assert_eq!(q.maintain().unwrap().pruned, 1);
    assert_eq!(q.get(done).unwrap(), None);
    assert!(q.store().collection::<UniqueRef>().unwrap().get("q/u").unwrap().is_none(), "unique key record pruned");
    clock.advance(Duration::from_secs(600));
    assert_eq!(q.prune_finished().unwrap(), 2);
    assert_eq!((q.get(dead).unwrap(), q.get(cancelled).unwrap()), (None, None));
    assert_eq!(q.get(open_job).unwrap().unwrap().state, JobState::Available, "unfinished jobs are kept");
    assert_eq!(q.counts("q").unwrap(), QueueCounts { available: 1, ..QueueCounts::default() });
    assert_counts_agree(&q);
}

#[test]
fn queue_jobs_write_no_change_events() {
    let (_dir, q) = open_with(quiet());
    let before = q.store().last_change_sequence().unwrap();
    let id = q.enqueue(&NewJob::new("q", "k", json!({}))).unwrap().job.id;
    let job = claim(&q, &["q"], "w", 1000).unwrap();
    q.complete(id, job.token).unwrap();
    assert_eq!(q.store().last_change_sequence().unwrap(), before);
}

#[test]
fn counts_fold_and_stay_right_over_many_commits() {
    let (_dir, q) = open_with(quiet());
    for i in 0..600u64 {
        let id = q.enqueue(&NewJob::new("q", "k", json!(i))).unwrap().job.id;
        if i % 2 == 0 {
            let job = claim(&q, &["q"], "w", 60_000).unwrap();
            assert!(job.id <= id, "the oldest first");
            q.complete(job.id, job.token).unwrap();
        }
    }
    let entries = |q: &JobQueue| counts::sum_at(&q.store().db().snapshot(), "q").unwrap().1;
    assert!(entries(&q) > 256);
    assert_eq!(q.counts("q").unwrap(), QueueCounts { available: 300, completed: 300, ..QueueCounts::default() });
    assert_eq!(entries(&q), 1, "folded by the read");
    assert_counts_agree(&q);
}

/// Waits until nothing is left to flush and the compaction worker has been quiet for a while.
fn settle(db: &Db) -> cairn_engine::Stats {
    let started = Instant::now();
    let (mut last, mut quiet) = (db.stats(), Instant::now());
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
        let now = db.stats();
        if now.compactions != last.compactions || now.flushes != last.flushes || now.immutable_memtables > 0 {
            quiet = Instant::now();
        } else if quiet.elapsed() > Duration::from_millis(700) {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn disk_stays_bounded_over_a_long_run_of_cycles_with_pruning() {
    use cairn_engine::{Compression, Durability, LeveledPolicy};
    const BACKLOG: u64 = 1_000;
    const CYCLES: u64 = 20_000;
    let db = Options::default()
        .storage(Arc::new(MemStorage::new()))
        .durability(Durability::None)
        .compression(Compression::None)
        .memtable_size(256 << 10)
        .table_size(256 << 10)
        .compaction_policy(Arc::new(LeveledPolicy::new(4, 1 << 20, 10)))
        .open(Path::new("/db"))
        .unwrap();
    let clock = ManualClock::new(T0);
    let opts = quiet().clock(clock.clone()).completed_retention(Duration::from_secs(1));
    let q = JobQueue::open(Store::with_db(db, StoreOptions::default()).unwrap(), opts).unwrap();
    let payload = json!({"input": "s3://bucket/datasets/2026/shard-00042.parquet", "epochs": 3});
    let backlog: Vec<NewJob> = (0..BACKLOG).map(|_| NewJob::new("q", "train", payload.clone()).priority(9)).collect();
    q.enqueue_batch(&backlog).unwrap();
    let mut worst = 0;
    for i in 0..CYCLES {
        q.enqueue(&NewJob::new("q", "train", payload.clone())).unwrap();
        let job = claim(&q, &["q"], "w", 60_000).unwrap();
        q.complete(job.id, job.token).unwrap();
        if i % 1000 == 999 {
            clock.advance(Duration::from_secs(2));
            q.maintain().unwrap();
            let s = q.store().db().stats();
            worst = worst.max(s.table_bytes() + s.memtable_bytes);
        }
    }
    clock.advance(Duration::from_secs(2));
    q.maintain().unwrap();
    assert_eq!(q.counts("q").unwrap(), QueueCounts { available: BACKLOG, ..QueueCounts::default() });
    // What the live queue holds: every key and value in the database.
    let live: u64 =
        q.store().db().prefix(b"").unwrap().map(|p| p.map(|(k, v)| (k.len() + v.len()) as u64).unwrap()).sum();
    let s = settle(q.store().db());
    let settled = s.table_bytes() + s.memtable_bytes;
    let written = s.user_bytes_written;
    println!("live {live} B, settled {settled} B, worst while running {worst} B, {written} B written");
    assert!(settled < 2 * live + (512 << 10), "settled at {settled} bytes for {live} live");
    assert!(worst < 8 * live + (2 << 20), "reached {worst} bytes for {live} live while running");
    assert!(written > 20 * live, "the run wrote far more than it keeps");
    assert_counts_agree(&q);
}

#[test]
fn batch_claims_and_completions_take_many_jobs_in_one_commit() {
    let (_dir, q) = open_with(quiet());
    let jobs: Vec<NewJob> = (0..25).map(|i| NewJob::new("q", "k", json!(i)).priority((i % 2) as u8)).collect();
    let ids: Vec<u64> = q.enqueue_batch(&jobs).unwrap().into_iter().map(|e| e.job.id).collect();
    let commits = q.store().db().stats().commits;
    let first = q.claim_batch(&ClaimRequest::new(&["q"], "w", 60_000).limit(10)).unwrap();
    assert_eq!(q.store().db().stats().commits, commits + 1, "one commit");
    // Priority 0 (even positions) first, oldest first.
    let expected: Vec<u64> = ids.iter().step_by(2).take(10).copied().collect();
    assert_eq!(first.iter().map(|j| j.id).collect::<Vec<_>>(), expected);
    assert!(first.iter().all(|j| j.state == JobState::Running && j.token == 1));
    let rest = q.claim_batch(&ClaimRequest::new(&["q"], "w", 60_000).limit(100)).unwrap();
    assert_eq!(rest.len(), 15, "fewer than asked when fewer are available");
    assert!(q.claim_batch(&ClaimRequest::new(&["q"], "w", 60_000).limit(5)).unwrap().is_empty());
    for bad in [0, MAX_CLAIM_BATCH + 1] {
        let req = ClaimRequest::new(&["q"], "w", 60_000).limit(bad);
        assert!(matches!(q.claim_batch(&req), Err(QueueError::Invalid(_))), "limit {bad}");
    }
    // One batch completion: a stale token and an unknown job are refused, the others complete.
    let mut pairs: Vec<(u64, u64)> = first.iter().map(|j| (j.id, j.token)).collect();
    pairs[3].1 = 7;
    pairs.push((u64::MAX, 1));
    pairs.push((first[0].id, first[0].token));
    let commits = q.store().db().stats().commits;
    let outcomes = q.complete_batch(&pairs).unwrap();
    assert_eq!(q.store().db().stats().commits, commits + 1, "one commit");
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 9);
    assert!(matches!(outcomes[3], Err(QueueError::StaleToken { presented: 7, .. })));
    assert!(matches!(outcomes[10], Err(QueueError::NotFound(_))));
    assert!(matches!(outcomes[11], Err(QueueError::InvalidTransition { from: JobState::Completed, .. })), "not twice");
    assert_eq!(q.counts("q").unwrap(), QueueCounts { running: 16, completed: 9, ..QueueCounts::default() });
    assert_counts_agree(&q);
}

#[test]
fn batch_claims_under_contention_take_each_job_once() {
    let (_dir, q) = open_with(QueueOptions::default());
    let jobs: Vec<NewJob> = (0..3000).map(|i| NewJob::new("q", "k", json!(i))).collect();
    for chunk in jobs.chunks(500) {
        q.enqueue_batch(chunk).unwrap();
    }
    let completed: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..8 {
            let (q, completed) = (&q, &completed);
            s.spawn(move || loop {
                let batch = q.claim_batch(&ClaimRequest::new(&["q"], &format!("w{w}"), 60_000).limit(20)).unwrap();
                if batch.is_empty() {
                    return;
                }
                let pairs: Vec<(u64, u64)> = batch.iter().map(|j| (j.id, j.token)).collect();
                for outcome in q.complete_batch(&pairs).unwrap() {
                    completed.lock().push(outcome.unwrap().id);
                }
            });
        }
    });
    let completed = completed.into_inner();
    assert_eq!(completed.len(), 3000);
    assert_eq!(completed.iter().collect::<HashSet<_>>().len(), 3000);
    assert_eq!(q.counts("q").unwrap(), QueueCounts { completed: 3000, ..QueueCounts::default() });
    assert_counts_agree(&q);
}
