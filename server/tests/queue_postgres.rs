//! The job queue on the PostgreSQL backend (`PostgresQueue`), where only it can be tested: two servers
//! (two `PostgresBackend`s, each with its own queue, pool and listening connection) on one database, with
//! workers of both claiming the same jobs, counts checked against the rows after concurrent writes from
//! both, unique keys enqueued on both at once, leases rescued while both run maintenance, and a claim
//! waiting on one server woken by an enqueue on the other. And the jobs it returns, field for field those
//! of the embedded queue for the same operations, and what it does with text `jsonb` cannot hold. Each test makes a fresh database in
//! `cairn_pgcluster::Postgres::shared()` (the cluster `CAIRN_TEST_POSTGRES` names, or one of its own). The
//! conformance suite over HTTP (`queue.rs`) runs on this backend with `CAIRN_TEST_BACKEND=postgres`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cairn_server::backend::{Backend, PostgresBackend, PostgresOptions, QueueApi, QueueStore};
use cairn_store::queue::{
    Backoff, ClaimRequest, Job, JobQueue, JobState, NewJob, QueueCounts, QueueError, QueueOptions, Unique,
};
use serde_json::{json, Value};

mod fresh_database;
use fresh_database::database;

/// One server: a backend on the database `url` (its listening connection started) and its job queue.
struct Node {
    backend: PostgresBackend,
    queue: QueueStore,
}

impl Node {
    async fn start(url: &str, options: QueueOptions) -> Node {
        let opts = PostgresOptions { pool_size: 8, ..PostgresOptions::new(url) };
        let backend = PostgresBackend::open(opts).await.unwrap().with_queue_options(options);
        let opening = backend.clone();
        let queue = tokio::task::spawn_blocking(move || opening.queue()).await.unwrap().unwrap();
        Node { backend, queue }
    }

    /// Runs a call of the queue on the blocking pool, as the server does.
    async fn call<R: Send + 'static>(&self, f: impl FnOnce(&dyn QueueApi) -> R + Send + 'static) -> R {
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || f(&*queue)).await.unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.backend.close().unwrap();
    }
}

/// Options without a maintenance task (the tests that want one say so).
fn manual() -> QueueOptions {
    QueueOptions::default().maintenance_interval(Duration::ZERO).backoff(Backoff::fixed(60_000))
}

/// A client of the database, for reading the rows as they are.
async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The jobs of `queue` in each state, counted from the rows.
async fn scanned(db: &tokio_postgres::Client, queue: &str) -> QueueCounts {
    let rows = db
        .query("SELECT state, count(*) FROM cairn_queue_jobs WHERE queue = $1 GROUP BY state", &[&queue])
        .await
        .unwrap();
    let mut c = QueueCounts::default();
    for row in rows {
        let n = row.get::<_, i64>(1) as u64;
        match row.get::<_, &str>(0) {
            "scheduled" => c.scheduled = n,
            "available" => c.available = n,
            "running" => c.running = n,
            "retryable" => c.retryable = n,
            "completed" => c.completed = n,
            "discarded" => c.discarded = n,
            "cancelled" => c.cancelled = n,
            other => panic!("state {other}"),
        }
    }
    c
}

fn job(queue: &str, n: usize) -> NewJob {
    NewJob::new(queue, "work", json!({ "n": n }))
}

/// 16 workers, 8 on each server, claim and complete 10,000 jobs enqueued through both while they run:
/// every job is claimed once and completed once, and the counts end with 10,000 completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_workers_on_two_servers_complete_ten_thousand_jobs_exactly_once() {
    const JOBS: usize = 10_000;
    let (_pg, url) = database();
    let a = Node::start(&url, manual()).await;
    let b = Node::start(&url, manual()).await;
    let started = Instant::now();
    let claimed: Arc<Mutex<Vec<u64>>> = Arc::default();
    let completed: Arc<Mutex<Vec<u64>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..16 {
        let queue = if w % 2 == 0 { a.queue.clone() } else { b.queue.clone() };
        let (claimed, completed, done) = (claimed.clone(), completed.clone(), done.clone());
        workers.push(std::thread::spawn(move || {
            // Half the workers take one job per claim, the others up to 8 and complete them in one batch.
            let limit = if w % 4 < 2 { 1 } else { 8 };
            let request = ClaimRequest::new(&["bulk"], &format!("worker-{w}"), 60_000).wait(200).limit(limit);
            while done.load(Ordering::SeqCst) < JOBS {
                let jobs = queue.claim_batch(&request).unwrap();
                claimed.lock().unwrap().extend(jobs.iter().map(|j| j.id));
                for j in &jobs {
                    assert_eq!((j.state, j.attempt, j.token), (JobState::Running, 1, 1), "job {}", j.id);
                }
                if limit == 1 {
                    for j in &jobs {
                        let c = queue.complete(j.id, j.token).unwrap();
                        assert_eq!(c.state, JobState::Completed);
                        completed.lock().unwrap().push(c.id);
                    }
                } else if !jobs.is_empty() {
                    let pairs: Vec<(u64, u64)> = jobs.iter().map(|j| (j.id, j.token)).collect();
                    for c in queue.complete_batch(&pairs).unwrap() {
                        completed.lock().unwrap().push(c.unwrap().id);
                    }
                }
                done.fetch_add(jobs.len(), Ordering::SeqCst);
            }
        }));
    }
    // Enqueued in batches of 500, alternately through each server, while the workers claim.
    let mut enqueued = BTreeSet::new();
    for batch in 0..JOBS / 500 {
        let node = if batch % 2 == 0 { &a } else { &b };
        let jobs: Vec<NewJob> = (0..500).map(|i| job("bulk", batch * 500 + i)).collect();
        let out = node.call(move |q| q.enqueue_batch(&jobs)).await.unwrap();
        enqueued.extend(out.iter().map(|e| e.job.id));
    }
    for w in workers {
        w.join().unwrap();
    }
    let claimed = claimed.lock().unwrap().clone();
    let completed = completed.lock().unwrap().clone();
    assert_eq!(enqueued.len(), JOBS);
    assert_eq!(claimed.len(), JOBS, "no job claimed twice");
    assert_eq!(claimed.iter().copied().collect::<BTreeSet<_>>(), enqueued);
    assert_eq!(completed.len(), JOBS, "no job completed twice");
    assert_eq!(completed.iter().copied().collect::<BTreeSet<_>>(), enqueued);
    let want = QueueCounts { completed: JOBS as u64, ..QueueCounts::default() };
    assert_eq!(a.call(|q| q.counts("bulk")).await.unwrap(), want);
    assert_eq!(b.call(|q| q.counts("bulk")).await.unwrap(), want);
    assert_eq!(scanned(&client(&url).await, "bulk").await, want);
    eprintln!("10,000 jobs enqueued, claimed and completed by 16 workers on two servers in {:?}", started.elapsed());
}

/// Eight threads on two servers enqueue, claim, complete, fail, snooze, cancel, retry and purge jobs of
/// three queues at once for a few seconds: then every queue's counts, read through either server, are
/// those of its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_stay_exact_under_concurrent_writes_from_two_servers() {
    let (_pg, url) = database();
    let opts = || manual().backoff(Backoff::fixed(30));
    let a = Node::start(&url, opts()).await;
    let b = Node::start(&url, opts()).await;
    let queues = ["q0", "q1", "q2"];
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for t in 0..8u64 {
        let queue = if t % 2 == 0 { a.queue.clone() } else { b.queue.clone() };
        let (stop, ops) = (stop.clone(), ops.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let mut held: Vec<Job> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let q = queues[next(3) as usize];
                let outcome = match next(10) {
                    0 | 1 => {
                        let mut jobs: Vec<NewJob> = (0..1 + next(5)).map(|i| job(q, i as usize)).collect();
                        if next(3) == 0 {
                            jobs[0].run_at_ms = Some(now_ms() + next(40) as i64);
                        }
                        if next(4) == 0 {
                            jobs[0] = jobs[0].clone().unique(&format!("k{}", next(4)));
                        }
                        jobs[0].max_attempts = Some(1 + next(2) as u32);
                        queue.enqueue_batch(&jobs).map(|_| ())
                    }
                    2 | 3 => {
                        queue.claim_batch(&ClaimRequest::new(&[q], "w", 1000).limit(1 + next(3) as usize)).map(|jobs| {
                            held.extend(jobs);
                        })
                    }
                    4 | 5 if !held.is_empty() => {
                        let j = held.swap_remove(next(held.len() as u64) as usize);
                        match next(3) {
                            0 => queue.complete(j.id, j.token).map(|_| ()),
                            1 => queue.fail(j.id, j.token, "boom").map(|_| ()),
                            _ => queue.snooze(j.id, j.token, next(30)).map(|_| ()),
                        }
                    }
                    6 => {
                        let page = queue.list(q, JobState::ALL[next(7) as usize], None, 5).unwrap();
                        match page.jobs.first() {
                            Some(j) if next(2) == 0 => queue.cancel(j.id).map(|_| ()),
                            Some(j) => queue.retry(j.id).map(|_| ()),
                            None => Ok(()),
                        }
                    }
                    7 => {
                        let page = queue.list(q, JobState::Completed, None, 3).unwrap();
                        match page.jobs.first() {
                            Some(j) => queue.purge(j.id),
                            None => Ok(()),
                        }
                    }
                    8 => queue.maintain().map(|_| ()),
                    _ => queue.purge_discarded(q).map(|_| ()),
                };
                match outcome {
                    Ok(())
                    | Err(
                        QueueError::InvalidTransition { .. }
                        | QueueError::StaleToken { .. }
                        | QueueError::NotFound(_)
                        | QueueError::NotFinished { .. },
                    ) => {}
                    Err(e) => panic!("{e}"),
                }
                ops.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let db = client(&url).await;
    let mut total = 0;
    for q in queues {
        let rows = scanned(&db, q).await;
        total += rows.total();
        assert_eq!(a.call(move |x| x.counts(q)).await.unwrap(), rows, "{q} through the first server");
        assert_eq!(b.call(move |x| x.counts(q)).await.unwrap(), rows, "{q} through the second server");
    }
    let ops = ops.load(Ordering::SeqCst);
    assert!(ops > 500 && total > 100, "{ops} operations left {total} jobs");
    assert_eq!(a.call(|q| q.queues()).await.unwrap(), vec!["q0", "q1", "q2"]);
    eprintln!("{ops} operations from 8 threads; counts equal to the rows ({total} jobs)");
}

/// Eight threads, four on each server, enqueue the same 50 unique keys at once (singly and in batches
/// naming several keys, in different orders): each key ends with one job, which every enqueue of it
/// returns, and one enqueue of each added it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_keys_enqueued_at_once_on_two_servers_make_one_job_each() {
    const KEYS: u64 = 50;
    let (_pg, url) = database();
    let a = Node::start(&url, manual()).await;
    let b = Node::start(&url, manual()).await;
    let barrier = Arc::new(Barrier::new(8));
    let mut threads = Vec::new();
    for t in 0..8u64 {
        let queue = if t % 2 == 0 { a.queue.clone() } else { b.queue.clone() };
        let barrier = barrier.clone();
        threads.push(std::thread::spawn(move || {
            let keyed = |k: u64| job("uniq", k as usize).unique(&format!("key-{k}"));
            let mut out = Vec::new();
            barrier.wait();
            for round in 0..KEYS {
                // Keys in an order of this thread's; every other round a batch of three keys.
                let k = (round * (2 * t + 1) + t) % KEYS;
                if round % 2 == 0 {
                    let batch = [keyed(k), keyed((k + 7) % KEYS), keyed((k + 13) % KEYS)];
                    for (i, e) in queue.enqueue_batch(&batch).unwrap().into_iter().enumerate() {
                        out.push(([k, (k + 7) % KEYS, (k + 13) % KEYS][i], e));
                    }
                } else {
                    out.push((k, queue.enqueue(&keyed(k)).unwrap()));
                }
            }
            out
        }));
    }
    let mut by_key: BTreeMap<u64, Vec<(u64, bool)>> = BTreeMap::new();
    for t in threads {
        for (k, e) in t.join().unwrap() {
            assert_eq!(e.job.unique_key.as_deref(), Some(format!("key-{k}").as_str()));
            by_key.entry(k).or_default().push((e.job.id, e.duplicate));
        }
    }
    assert_eq!(by_key.len() as u64, KEYS);
    for (k, seen) in &by_key {
        let ids: BTreeSet<u64> = seen.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), 1, "key-{k}: every enqueue returned the same job ({seen:?})");
        assert_eq!(seen.iter().filter(|(_, dup)| !dup).count(), 1, "key-{k}: one enqueue added it");
    }
    let db = client(&url).await;
    let rows = db.query("SELECT unique_key, count(*) FROM cairn_queue_jobs GROUP BY unique_key", &[]).await.unwrap();
    assert_eq!(rows.len() as u64, KEYS);
    assert!(rows.iter().all(|r| r.get::<_, i64>(1) == 1), "one row per key");
    assert_eq!(b.call(|q| q.counts("uniq")).await.unwrap().available, KEYS);
}

/// 200 jobs claimed on one server with a 300 ms lease and never completed: with both servers' maintenance
/// tasks running every 20 ms, and explicit passes through both at the same time, each lease is rescued
/// once: one error per job, its attempt counted once, retryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_are_rescued_once_with_two_maintenance_tasks() {
    const JOBS: u64 = 200;
    let (_pg, url) = database();
    let opts =
        || QueueOptions::default().maintenance_interval(Duration::from_millis(20)).backoff(Backoff::fixed(600_000));
    let a = Node::start(&url, opts()).await;
    let b = Node::start(&url, opts()).await;
    let jobs: Vec<NewJob> = (0..JOBS as usize).map(|i| job("lease", i).max_attempts(3)).collect();
    a.call(move |q| q.enqueue_batch(&jobs)).await.unwrap();
    let held = a.call(|q| q.claim_batch(&ClaimRequest::new(&["lease"], "gone", 300).limit(1000))).await.unwrap();
    assert_eq!(held.len() as u64, JOBS);
    let explicit: Vec<_> = [a.queue.clone(), b.queue.clone(), a.queue.clone(), b.queue.clone()]
        .into_iter()
        .map(|q| {
            std::thread::spawn(move || {
                let mut rescued = 0;
                let until = Instant::now() + Duration::from_millis(800);
                while Instant::now() < until {
                    rescued += q.maintain().unwrap().rescued;
                }
                rescued
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = a.call(|q| q.counts("lease")).await.unwrap();
        if c.retryable == JOBS {
            break;
        }
        assert!(Instant::now() < deadline, "not all rescued: {c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rescued_explicitly: u64 = explicit.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(rescued_explicitly <= JOBS);
    // Passes go on for a while: nothing is rescued again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for h in &held {
        let id = h.id;
        let j = b.call(move |q| q.get(id)).await.unwrap().unwrap();
        assert_eq!((j.state, j.attempt, j.token), (JobState::Retryable, 1, 1), "job {id}");
        assert_eq!(j.errors.len(), 1, "job {id} rescued once: {:?}", j.errors);
        assert!(j.errors[0].error.starts_with("lease expired at "), "{:?}", j.errors[0]);
        assert_eq!(j.lease_until_ms, None);
        // The worker whose lease expired can no longer complete it.
        let refused = b.call(move |q| q.complete(id, 1)).await.unwrap_err();
        assert!(matches!(refused, QueueError::InvalidTransition { from: JobState::Retryable, .. }), "{refused}");
    }
    let want = QueueCounts { retryable: JOBS, ..QueueCounts::default() };
    assert_eq!(scanned(&client(&url).await, "lease").await, want);
    assert_eq!(b.call(|q| q.counts("lease")).await.unwrap(), want);
}

/// A claim waiting on one server is woken by an enqueue made through the other within a few hundred
/// milliseconds: by the notification, not by the claim's periodic look (every second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_claim_wakes_for_an_enqueue_on_the_other_server() {
    let (_pg, url) = database();
    let a = Node::start(&url, manual()).await;
    let b = Node::start(&url, manual()).await;
    for round in 0..3 {
        let waiting = a.queue.clone();
        let claim = std::thread::spawn(move || {
            let got = waiting.claim_batch(&ClaimRequest::new(&["wake"], "sleeper", 10_000).wait(10_000)).unwrap();
            (got, Instant::now())
        });
        // Past the claim's first periodic look, so that the next one is far.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let enqueued_at = Instant::now();
        let added = b.call(move |q| q.enqueue(&job("wake", round))).await.unwrap();
        let (got, woke_at) = tokio::task::spawn_blocking(move || claim.join().unwrap()).await.unwrap();
        assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![added.job.id]);
        let latency = woke_at.duration_since(enqueued_at);
        assert!(latency < Duration::from_millis(500), "round {round}: woken {latency:?} after the enqueue");
        eprintln!("round {round}: woken {latency:?} after the enqueue on the other server");
    }
}

/// A job with its ids and times replaced by what they stand for: ids by their order among the jobs of the
/// test, times by whether they are set.
fn normalized(job: &Job, ids: &HashMap<u64, usize>) -> Value {
    let mut v = serde_json::to_value(job).unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.insert("id".into(), json!(ids.get(&job.id).copied()));
    for (k, field) in obj.iter_mut() {
        if k.ends_with("_ms") {
            *field = json!("t");
        }
    }
    if let Some(errors) = obj.get_mut("errors").and_then(Value::as_array_mut) {
        for e in errors {
            e["at_ms"] = json!("t");
        }
    }
    v
}

/// A refusal with the job's id left out.
fn refusal(e: &QueueError) -> String {
    match e {
        QueueError::Invalid(detail) => format!("invalid: {detail}"),
        QueueError::NotFound(_) => "not found".into(),
        QueueError::StaleToken { presented, current, .. } => format!("stale {presented} {current}"),
        QueueError::InvalidTransition { from, to, .. } => format!("transition {from} {to}"),
        QueueError::NotFinished { state, .. } => format!("not finished: {state}"),
        other => panic!("unexpected failure {other}"),
    }
}

/// What a script's operations returned, ids and times normalized.
#[derive(Default)]
struct Record {
    /// Each job id seen, by the order in which it was first seen.
    ids: HashMap<u64, usize>,
    out: Vec<Value>,
}

impl Record {
    /// Jobs returned, or a refusal.
    fn jobs(&mut self, r: Result<Vec<Job>, QueueError>) {
        let v = match r {
            Ok(jobs) => {
                for j in &jobs {
                    let n = self.ids.len();
                    self.ids.entry(j.id).or_insert(n);
                }
                Value::Array(jobs.iter().map(|j| normalized(j, &self.ids)).collect())
            }
            Err(e) => json!(refusal(&e)),
        };
        self.out.push(v);
    }

    /// One job returned, or a refusal.
    fn job(&mut self, r: Result<Job, QueueError>) {
        self.jobs(r.map(|j| vec![j]));
    }

    /// The id of the `n`-th job seen.
    fn id(&self, n: usize) -> u64 {
        *self.ids.iter().find(|(_, v)| **v == n).unwrap().0
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// One script of operations run on a queue: what each returned, ids and times normalized.
fn script(q: &dyn QueueApi) -> Vec<Value> {
    let mut r = Record::default();
    let enqueued = q
        .enqueue_batch(&[
            NewJob::new("s", "a", json!({"x": [1, 2.5, "z"], "b": null})).priority(3),
            NewJob::new("s", "b", json!(7)).max_attempts(2),
            NewJob::new("s", "c", json!("later")).run_at(now_ms() + 3_600_000),
            NewJob::new("s", "d", Value::Null).unique("u1"),
            NewJob::new("s", "e", Value::Null).unique("u1"),
            NewJob::new("s", "f", Value::Null).unique_with(Unique {
                key: "u2".into(),
                period_ms: Some(60_000),
                states: Some(vec![JobState::Completed]),
            }),
            NewJob::new("t", "g", json!({})).priority(1),
        ])
        .unwrap();
    let dups: Vec<bool> = enqueued.iter().map(|e| e.duplicate).collect();
    r.jobs(Ok(enqueued.into_iter().map(|e| e.job).collect()));
    r.out.push(json!(dups));
    // Claims across two queues, in claim order.
    let claimed = q.claim_batch(&ClaimRequest::new(&["s", "t"], "w1", 30_000).limit(3)).unwrap();
    r.jobs(Ok(claimed.clone()));
    let (j0, j1, j2) = (&claimed[0], &claimed[1], &claimed[2]);
    r.job(q.complete(j0.id, j0.token));
    r.job(q.complete(j0.id, j0.token));
    r.job(q.complete(j1.id, j1.token + 5));
    r.job(q.heartbeat(j1.id, j1.token, 90_000));
    r.job(q.heartbeat(j1.id, j1.token, 0));
    r.job(q.fail(j1.id, j1.token, &"é".repeat(3000)));
    r.job(q.snooze(j2.id, j2.token, 0));
    r.jobs(q.claim_batch(&ClaimRequest::new(&["s"], "w2", 30_000).limit(10)));
    let b = r.id(1);
    r.job(q.cancel(b));
    r.job(q.retry(b));
    r.job(q.retry(b));
    let again = q.claim_batch(&ClaimRequest::new(&["s"], "w3", 30_000).limit(10)).unwrap();
    r.jobs(Ok(again.clone()));
    for j in again {
        r.job(q.fail(j.id, j.token, "boom"));
    }
    let c = r.id(2);
    r.jobs(q.purge(c).map(|()| vec![]));
    r.job(q.cancel(c));
    r.jobs(q.purge(c).map(|()| vec![]));
    r.jobs(q.get(c).map(|j| j.into_iter().collect()));
    r.job(q.complete(i64::MAX as u64, 1));
    for outcome in q.complete_batch(&[(j0.id, j0.token), (i64::MAX as u64, 1), (j1.id, j1.token)]).unwrap() {
        r.job(outcome);
    }
    // Unique keys held by unfinished jobs: those jobs.
    r.job(q.enqueue(&NewJob::new("s", "h", Value::Null).unique("u1")).map(|e| e.job));
    r.job(q.enqueue(&NewJob::new("t", "i", Value::Null).unique("u1")).map(|e| e.job));
    // Pages of every state, two jobs at a time.
    for state in JobState::ALL {
        for queue in ["s", "t"] {
            let mut after = None;
            loop {
                let page = q.list(queue, state, after.as_deref(), 2).unwrap();
                r.jobs(Ok(page.jobs));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
    }
    for queue in ["s", "t", "never"] {
        r.out.push(serde_json::to_value(q.counts(queue).unwrap()).unwrap());
    }
    r.out.push(json!(q.queues().unwrap()));
    r.out.push(json!(q.purge_discarded("s").unwrap()));
    r.out.push(serde_json::to_value(q.counts("s").unwrap()).unwrap());
    // Bad requests, refused before anything is written.
    for bad in [
        NewJob::new("bad name", "k", Value::Null),
        NewJob::new("s", "", Value::Null),
        NewJob::new("s", "k", Value::Null).priority(10),
        NewJob::new("s", "k", Value::Null).max_attempts(0),
        NewJob::new("s", "k", Value::Null).unique(""),
    ] {
        r.out.push(json!(refusal(&q.enqueue(&bad).unwrap_err())));
    }
    for bad in [
        ClaimRequest::new(&[], "w", 1),
        ClaimRequest::new(&["s"], "", 1),
        ClaimRequest::new(&["s"], "w", 0),
        ClaimRequest::new(&["s"], "w", 1).limit(0),
        ClaimRequest::new(&["s"], "w", 1).limit(1001),
    ] {
        r.out.push(json!(refusal(&q.claim_batch(&bad).unwrap_err())));
    }
    r.out.push(json!(refusal(&q.list("s", JobState::Available, Some("not a cursor"), 5).unwrap_err())));
    r.out.push(json!(refusal(&q.counts("bad name").unwrap_err())));
    r.out
}

/// The same operations on the embedded queue and on this backend's return the same jobs, refusals, pages
/// and counts, ids and times aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_the_embedded_queue_s_field_for_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = cairn_store::Store::open(dir.path().join("data")).unwrap();
    let embedded = JobQueue::open(store, manual()).unwrap();
    let expected = tokio::task::spawn_blocking(move || script(&embedded)).await.unwrap();
    let (_pg, url) = database();
    let node = Node::start(&url, manual()).await;
    let got = node.call(script).await;
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "step {i}");
    }
}

/// What `jsonb` cannot hold: a payload with a NUL character is refused as invalid, with nothing written;
/// a NUL in a failure's error is kept as U+FFFD, and the failure recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_jsonb_cannot_hold_is_refused_or_replaced() {
    let (_pg, url) = database();
    let node = Node::start(&url, manual()).await;
    let refused = node.call(|q| q.enqueue(&NewJob::new("nul", "k", json!({"s": "a\u{0}b"})))).await.unwrap_err();
    assert!(matches!(refused, QueueError::Invalid(_)), "{refused}");
    assert_eq!(node.call(|q| q.counts("nul")).await.unwrap(), QueueCounts::default());
    node.call(|q| q.enqueue(&job("nul", 1))).await.unwrap();
    let held = node.call(|q| q.claim_batch(&ClaimRequest::new(&["nul"], "w", 60_000))).await.unwrap();
    let (id, token) = (held[0].id, held[0].token);
    let failed = node.call(move |q| q.fail(id, token, "bad\u{0}byte")).await.unwrap();
    assert_eq!(failed.errors[0].error, "bad\u{fffd}byte");
    assert_eq!(node.call(move |q| q.get(id)).await.unwrap().unwrap(), failed);
}
