//! The job queue's conformance suite over HTTP, in-process (`cairn_server::app`, one `oneshot` call per
//! request), run on the embedded store and, with `CAIRN_TEST_BACKEND=postgres`, on PostgreSQL: both
//! backends must give the semantics of `docs/queue.md` through the `/v1/queue` routes. Enqueue singly, in
//! batches and deduplicated; claims in priority order, exactly once under contention, long-polling,
//! scheduled jobs on time; leases, rescue and stale fencing tokens; retries with backoff to the dead
//! letters and back; snooze, heartbeat, cancel, purge; counts, pages, `/metrics`; refusals that change
//! nothing; tokens.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod inproc;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use cairn_server::{Config, QueueSettings, Role};
use cairn_store::queue::Backoff;
use inproc::{json, text, token, App};
use serde_json::{json, Value};

/// Settings that make time-driven behavior quick: maintenance every 50 ms, a fixed 100 ms backoff.
fn quick() -> Config {
    Config {
        queue: QueueSettings { maintenance_interval_ms: 50, backoff: Backoff::fixed(100), ..QueueSettings::default() },
        ..Config::default()
    }
}

async fn call(s: &App, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = s.req(method, path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    json(req.send().await.unwrap()).await
}

async fn post(s: &App, path: &str, body: Value) -> (u16, Value) {
    call(s, Method::POST, path, Some(body)).await
}

async fn get(s: &App, path: &str) -> (u16, Value) {
    call(s, Method::GET, path, None).await
}

/// Enqueues `job`; returns the job.
async fn enqueue(s: &App, job: Value) -> Value {
    let (status, body) = post(s, "/v1/queue/jobs", job).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["duplicate"], false);
    body["job"].clone()
}

/// Claims for `worker` on `queues`, waiting up to `wait_ms`; returns the jobs.
async fn claim(s: &App, queues: &[&str], worker: &str, lease_ms: u64, limit: usize, wait_ms: u64) -> Vec<Value> {
    let req = json!({"queues": queues, "worker": worker, "lease_ms": lease_ms, "limit": limit, "wait_ms": wait_ms});
    let (status, body) = post(s, "/v1/queue/claim", req).await;
    assert_eq!(status, 200, "{body}");
    body["jobs"].as_array().unwrap().clone()
}

async fn claim_one(s: &App, queue: &str, lease_ms: u64) -> Option<Value> {
    claim(s, &[queue], "w", lease_ms, 1, 0).await.into_iter().next()
}

fn id_of(job: &Value) -> u64 {
    job["id"].as_u64().unwrap()
}

async fn act(s: &App, job: &Value, action: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"token": job["token"]});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    post(s, &format!("/v1/queue/jobs/{}/{action}", id_of(job)), body).await
}

async fn counts(s: &App, queue: &str) -> Value {
    let (status, body) = get(s, &format!("/v1/queue/queues/{queue}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_job_goes_from_enqueue_through_claim_to_completion() {
    let s = App::start(quick());
    let job = enqueue(&s, json!({"queue": "mail", "kind": "send", "payload": {"to": "a@b"}, "max_attempts": 3})).await;
    assert_eq!(job["state"], "available");
    assert_eq!(job["attempt"], 0);
    assert_eq!(job["payload"], json!({"to": "a@b"}));
    let (status, read) = get(&s, &format!("/v1/queue/jobs/{}", id_of(&job))).await;
    assert_eq!((status, &read), (200, &job));
    assert_eq!(counts(&s, "mail").await["available"], 1);

    let claimed = claim_one(&s, "mail", 30_000).await.expect("a job");
    assert_eq!(claimed["id"], job["id"]);
    assert_eq!(claimed["state"], "running");
    assert_eq!(claimed["attempt"], 1);
    assert_eq!(claimed["token"], 1);
    assert_eq!(claimed["worker"], "w");
    assert!(claimed["lease_until_ms"].as_i64().unwrap() > claimed["attempted_at_ms"].as_i64().unwrap());
    let c = counts(&s, "mail").await;
    assert_eq!((c["available"].as_u64(), c["running"].as_u64()), (Some(0), Some(1)));
    assert!(claim_one(&s, "mail", 30_000).await.is_none(), "one job, claimed once");

    let (status, done) = act(&s, &claimed, "complete", json!({})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "completed");
    assert!(done["finished_at_ms"].as_i64().is_some());
    let (status, again) = act(&s, &claimed, "complete", json!({})).await;
    assert_eq!((status, again["type"].as_str()), (409, Some("/problems/invalid-transition")), "{again}");
    let c = counts(&s, "mail").await;
    assert_eq!((c["running"].as_u64(), c["completed"].as_u64(), c["total"].as_u64()), (Some(0), Some(1), Some(1)));
    let (status, all) = get(&s, "/v1/queue/queues").await;
    assert_eq!(status, 200);
    assert_eq!(all["queues"][0]["queue"], "mail");
    assert_eq!(all["queues"][0]["completed"], 1);
}

#[tokio::test]
async fn claims_take_the_most_urgent_job_first_and_pages_follow_claim_order() {
    let s = App::start(quick());
    let mut jobs = Vec::new();
    for i in 0..25u64 {
        let priority = [5, 0, 9, 0, 3][i as usize % 5];
        jobs.push(json!({"queue": "q", "kind": "k", "payload": i, "priority": priority}));
    }
    let (status, body) = post(&s, "/v1/queue/jobs/batch", json!({"jobs": jobs})).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<u64> = body["results"].as_array().unwrap().iter().map(|r| id_of(&r["job"])).collect();
    // Claim order: priority, then enqueue order.
    let mut want: Vec<(u64, u64)> = ids.iter().enumerate().map(|(i, id)| ([5, 0, 9, 0, 3][i % 5], *id)).collect();
    want.sort();
    let want: Vec<u64> = want.into_iter().map(|(_, id)| id).collect();

    let (mut paged, mut after) = (Vec::new(), None::<String>);
    loop {
        let mut path = "/v1/queue/queues/q/jobs?state=available&limit=10".to_owned();
        if let Some(a) = &after {
            path.push_str(&format!("&cursor={a}"));
        }
        let (status, page) = get(&s, &path).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(page["jobs"].as_array().unwrap().iter().map(id_of));
        match page["next_cursor"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, want, "pages in claim order");

    let first = claim(&s, &["q"], "w", 30_000, 3, 0).await;
    assert_eq!(first.iter().map(id_of).collect::<Vec<_>>(), want[..3].to_vec(), "a batch claim in claim order");
    let tokens: HashSet<u64> = first.iter().map(|j| j["token"].as_u64().unwrap()).collect();
    assert_eq!(tokens, HashSet::from([1]), "each job's first claim");
    let mut rest = Vec::new();
    while let Some(j) = claim_one(&s, "q", 30_000).await {
        rest.push(id_of(&j));
    }
    assert_eq!(rest, want[3..].to_vec());
    // Completing in a batch: one of them refused (a wrong token) does not stop the others.
    let mut batch: Vec<Value> = first.iter().map(|j| json!({"id": j["id"], "token": j["token"]})).collect();
    batch[1]["token"] = json!(7);
    let (status, body) = post(&s, "/v1/queue/complete", json!({"jobs": batch})).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["job"]["state"], "completed");
    assert_eq!(results[1]["error"]["type"], "/problems/stale-token");
    assert_eq!(results[1]["error"]["status"], 409);
    assert_eq!(results[2]["job"]["state"], "completed");
    let c = counts(&s, "q").await;
    assert_eq!((c["completed"].as_u64(), c["running"].as_u64()), (Some(2), Some(23)));
}

#[tokio::test]
async fn sixteen_workers_complete_every_job_exactly_once() {
    let s = App::start(quick());
    const JOBS: usize = 10_000;
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(500) {
        let jobs: Vec<Value> = chunk.iter().map(|i| json!({"queue": "work", "kind": "k", "payload": i})).collect();
        let (status, body) = post(&s, "/v1/queue/jobs/batch", json!({"jobs": jobs})).await;
        assert_eq!(status, 200, "{body}");
    }
    let done = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for w in 0..16 {
        let (s, done) = (s.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            loop {
                let jobs = claim(&s, &["work"], &worker, 60_000, 1, 0).await;
                let Some(job) = jobs.first() else { break };
                let (status, body) = act(&s, job, "complete", json!({})).await;
                assert_eq!(status, 200, "{body}");
                done.lock().unwrap().push(job["payload"].as_u64().unwrap());
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let done = std::mem::take(&mut *done.lock().unwrap());
    assert_eq!(done.len(), JOBS, "every job completed, none twice");
    assert_eq!(done.iter().collect::<HashSet<_>>().len(), JOBS);
    let c = counts(&s, "work").await;
    assert_eq!((c["completed"].as_u64(), c["total"].as_u64()), (Some(JOBS as u64), Some(JOBS as u64)));
}

#[tokio::test]
async fn an_expired_lease_is_rescued_and_the_stale_token_is_refused() {
    let s = App::start(quick());
    enqueue(&s, json!({"queue": "q", "kind": "k", "max_attempts": 5})).await;
    let first = claim_one(&s, "q", 150).await.unwrap();
    // The lease lapses, the job is rescued (retryable, then available after the 100 ms backoff), and
    // another worker claims it.
    let second = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(j) = claim(&s, &["q"], "w2", 30_000, 1, 500).await.into_iter().next() {
                break j;
            }
            assert!(Instant::now() < deadline, "the expired lease was never rescued");
        }
    };
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["token"], 2);
    assert_eq!(second["attempt"], 2, "the lapsed attempt counts");
    assert_eq!(second["errors"][0]["attempt"], 1);
    let extras = [("complete", json!({})), ("fail", json!({"error": "x"})), ("heartbeat", json!({"lease_ms": 1000}))];
    for (action, extra) in extras.into_iter().chain([("snooze", json!({"delay_ms": 10}))]) {
        let (status, body) = act(&s, &first, action, extra).await;
        assert_eq!((status, body["type"].as_str()), (409, Some("/problems/stale-token")), "{action}: {body}");
        assert_eq!(body["current"], 2);
    }
    let (status, done) = act(&s, &second, "complete", json!({})).await;
    assert_eq!((status, done["state"].as_str()), (200, Some("completed")), "{done}");
    let c = counts(&s, "q").await;
    assert_eq!((c["completed"].as_u64(), c["total"].as_u64()), (Some(1), Some(1)));
}

#[tokio::test]
async fn failures_retry_with_backoff_until_discarded_then_retry_and_purge() {
    let s = App::start(quick());
    let job = enqueue(&s, json!({"queue": "q", "kind": "k", "max_attempts": 3})).await;
    let mut failed_at = Vec::new();
    for attempt in 1..=3u64 {
        let j = claim(&s, &["q"], "w", 30_000, 1, 5_000).await.into_iter().next().expect("retried");
        assert_eq!(j["attempt"], attempt);
        if let Some(t) = failed_at.last() {
            let waited = j["attempted_at_ms"].as_i64().unwrap() - t;
            assert!(waited >= 100, "attempt {attempt} came {waited} ms after the failure: before its backoff");
        }
        let (status, f) = act(&s, &j, "fail", json!({"error": format!("boom {attempt}")})).await;
        assert_eq!(status, 200, "{f}");
        failed_at.push(f["errors"][attempt as usize - 1]["at_ms"].as_i64().unwrap());
        let want = if attempt < 3 { "retryable" } else { "discarded" };
        assert_eq!(f["state"], want);
    }
    let (_, dead) = get(&s, &format!("/v1/queue/jobs/{}", id_of(&job))).await;
    let errors: Vec<&str> = dead["errors"].as_array().unwrap().iter().map(|e| e["error"].as_str().unwrap()).collect();
    assert_eq!(errors, ["boom 1", "boom 2", "boom 3"]);
    let (_, page) = get(&s, "/v1/queue/queues/q/jobs?state=discarded").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(counts(&s, "q").await["discarded"], 1);

    // Back from the dead letters: one more attempt.
    let (status, back) = post(&s, &format!("/v1/queue/jobs/{}/retry", id_of(&job)), json!({})).await;
    assert_eq!((status, back["state"].as_str()), (200, Some("available")), "{back}");
    let j = claim_one(&s, "q", 30_000).await.unwrap();
    assert_eq!(j["attempt"], 4);
    let (_, f) = act(&s, &j, "fail", json!({"error": "again"})).await;
    assert_eq!(f["state"], "discarded");
    // A running job cannot be purged; a dead letter can, alone or with its queue's others.
    let other = enqueue(&s, json!({"queue": "q", "kind": "k"})).await;
    let (status, body) = call(&s, Method::DELETE, &format!("/v1/queue/jobs/{}", id_of(&other)), None).await;
    assert_eq!((status, body["type"].as_str()), (409, Some("/problems/not-finished")), "{body}");
    let (status, body) = call(&s, Method::DELETE, "/v1/queue/queues/q/discarded", None).await;
    assert_eq!((status, body["purged"].as_u64()), (200, Some(1)), "{body}");
    let (status, _) = get(&s, &format!("/v1/queue/jobs/{}", id_of(&job))).await;
    assert_eq!(status, 404);
    let c = counts(&s, "q").await;
    assert_eq!((c["discarded"].as_u64(), c["available"].as_u64(), c["total"].as_u64()), (Some(0), Some(1), Some(1)));
}

#[tokio::test]
async fn snooze_heartbeat_and_cancel() {
    let s = App::start(quick());
    enqueue(&s, json!({"queue": "q", "kind": "k"})).await;
    let j = claim_one(&s, "q", 1_000).await.unwrap();
    let (status, beat) = act(&s, &j, "heartbeat", json!({"lease_ms": 60_000})).await;
    assert_eq!(status, 200, "{beat}");
    assert!(beat["lease_until_ms"].as_i64().unwrap() >= j["lease_until_ms"].as_i64().unwrap() + 50_000);
    let (status, snoozed) = act(&s, &j, "snooze", json!({"delay_ms": 200})).await;
    assert_eq!((status, snoozed["state"].as_str()), (200, Some("scheduled")), "{snoozed}");
    assert_eq!(snoozed["attempt"], 0, "a snooze gives the attempt back");
    assert!(claim_one(&s, "q", 1_000).await.is_none(), "snoozed");
    let again = claim(&s, &["q"], "w", 30_000, 1, 5_000).await.into_iter().next().expect("back after the snooze");
    assert_eq!((again["attempt"].as_u64(), again["token"].as_u64()), (Some(1), Some(2)));
    let (status, gone) = post(&s, &format!("/v1/queue/jobs/{}/cancel", id_of(&again)), json!({})).await;
    assert_eq!((status, gone["state"].as_str()), (200, Some("cancelled")), "{gone}");
    let (status, body) = act(&s, &again, "complete", json!({})).await;
    assert_eq!((status, body["type"].as_str()), (409, Some("/problems/invalid-transition")), "{body}");
    let (status, body) = post(&s, &format!("/v1/queue/jobs/{}/cancel", id_of(&again)), json!({})).await;
    assert_eq!(status, 409, "cancelling a cancelled job: {body}");
    assert_eq!(counts(&s, "q").await["cancelled"], 1);
}

#[tokio::test]
async fn a_unique_key_gives_one_job_under_concurrent_enqueues() {
    let s = App::start(quick());
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            post(&s, "/v1/queue/jobs", json!({"queue": "q", "kind": "k", "payload": i, "unique": {"key": "report-7"}}))
                .await
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert!(status == 201 || status == 200, "{status}: {body}");
        assert_eq!(body["duplicate"], status == 200);
        created += usize::from(status == 201);
        ids.insert(id_of(&body["job"]));
    }
    assert_eq!((created, ids.len()), (1, 1), "one job for the key");
    assert_eq!(counts(&s, "q").await["total"], 1);
    // Once the job finished, the key is free again (default: unfinished jobs count).
    let j = claim_one(&s, "q", 30_000).await.unwrap();
    act(&s, &j, "complete", json!({})).await;
    let (status, body) =
        post(&s, "/v1/queue/jobs", json!({"queue": "q", "kind": "k", "unique": {"key": "report-7"}})).await;
    assert_eq!((status, body["duplicate"].as_bool()), (201, Some(false)), "{body}");
    // With completed jobs counting, a completed job holding the key is returned instead of a new one.
    enqueue(&s, json!({"queue": "q2", "kind": "k", "unique": {"key": "report-8"}})).await;
    let j = claim_one(&s, "q2", 30_000).await.unwrap();
    act(&s, &j, "complete", json!({})).await;
    let unique = json!({"key": "report-8", "states": ["completed"]});
    let (status, body) = post(&s, "/v1/queue/jobs", json!({"queue": "q2", "kind": "k", "unique": unique})).await;
    assert_eq!((status, body["job"]["id"].as_u64()), (200, Some(id_of(&j))), "{body}");
    assert_eq!(body["job"]["state"], "completed");
}

#[tokio::test]
async fn scheduled_jobs_become_available_on_time_and_wake_waiting_claims() {
    let s = App::start(quick());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let job = enqueue(&s, json!({"queue": "later", "kind": "k", "run_at_ms": now + 400})).await;
    assert_eq!(job["state"], "scheduled");
    assert_eq!(counts(&s, "later").await["scheduled"], 1);
    assert!(claim_one(&s, "later", 1_000).await.is_none(), "not before its time");
    let j = claim(&s, &["later"], "w", 30_000, 1, 5_000).await.into_iter().next().expect("on time");
    let at = j["attempted_at_ms"].as_i64().unwrap();
    assert!(at >= now + 400, "claimed {} ms early", now + 400 - at);
    assert!(at < now + 400 + 1_500, "claimed {} ms late", at - now - 400);

    // A claim waiting on an empty queue is woken by an enqueue, well before its wait ends.
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let jobs = claim(&s, &["idle"], "w", 30_000, 1, 10_000).await;
            (jobs, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    enqueue(&s, json!({"queue": "idle", "kind": "k"})).await;
    let (jobs, waited) = waiter.await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(waited < Duration::from_secs(3), "woken after {waited:?}");
    // With nothing to take, a claim returns empty once its wait is over.
    let start = Instant::now();
    assert!(claim(&s, &["idle"], "w", 30_000, 1, 300).await.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let s = App::start(quick());
    let bad_jobs = [
        json!({"queue": "no spaces", "kind": "k"}),
        json!({"queue": "q", "kind": ""}),
        json!({"queue": "q", "kind": "k", "priority": 10}),
        json!({"queue": "q", "kind": "k", "max_attempts": 0}),
        json!({"queue": "q", "kind": "k", "unique": {"key": ""}}),
        json!({"queue": "q", "kind": "k", "unique": {"key": "u", "period_ms": 0}}),
        json!({"queue": "q"}),
    ];
    for job in &bad_jobs {
        let (status, body) = post(&s, "/v1/queue/jobs", job.clone()).await;
        assert_eq!(status, 400, "{job}: {body}");
    }
    // A batch with one bad job enqueues none.
    let batch = json!({"jobs": [{"queue": "q", "kind": "k"}, {"queue": "q", "kind": "k", "priority": 99}]});
    assert_eq!(post(&s, "/v1/queue/jobs/batch", batch).await.0, 400);
    assert_eq!(post(&s, "/v1/queue/jobs/batch", json!({"jobs": []})).await.0, 400);
    assert_eq!(counts(&s, "q").await["total"], 0, "nothing enqueued");

    let bad_claims = [
        json!({"queues": [], "worker": "w", "lease_ms": 1000}),
        json!({"queues": ["q"], "worker": "", "lease_ms": 1000}),
        json!({"queues": ["q"], "worker": "w", "lease_ms": 0}),
        json!({"queues": ["q"], "worker": "w", "lease_ms": 1000, "limit": 0}),
        json!({"queues": ["q"], "worker": "w", "lease_ms": 1000, "limit": 1001}),
        json!({"queues": ["q"], "worker": "w"}),
    ];
    for c in &bad_claims {
        let (status, body) = post(&s, "/v1/queue/claim", c.clone()).await;
        assert_eq!(status, 400, "{c}: {body}");
    }
    let job = enqueue(&s, json!({"queue": "q", "kind": "k"})).await;
    let id = id_of(&job);
    assert_eq!(get(&s, "/v1/queue/jobs/abc").await.0, 400);
    assert_eq!(get(&s, &format!("/v1/queue/jobs/{}", id + 1_000_000)).await.0, 404);
    assert_eq!(post(&s, &format!("/v1/queue/jobs/{}/complete", id + 1_000_000), json!({"token": 1})).await.0, 404);
    assert_eq!(post(&s, &format!("/v1/queue/jobs/{id}/complete"), json!({})).await.0, 400, "no token");
    assert_eq!(post(&s, &format!("/v1/queue/jobs/{id}/complete"), json!({"token": 1, "x": 1})).await.0, 400);
    assert_eq!(post(&s, &format!("/v1/queue/jobs/{id}/snooze"), json!({"token": 1})).await.0, 400, "no delay");
    let (status, body) = post(&s, &format!("/v1/queue/jobs/{id}/complete"), json!({"token": 0})).await;
    assert_eq!((status, body["type"].as_str()), (409, Some("/problems/invalid-transition")), "not running: {body}");
    assert_eq!(post(&s, &format!("/v1/queue/jobs/{id}/retry"), json!({})).await.0, 409, "not finished");
    assert_eq!(get(&s, "/v1/queue/queues/q/jobs?state=sleeping").await.0, 400);
    assert_eq!(get(&s, "/v1/queue/queues/q/jobs?limit=0").await.0, 400);
    assert_eq!(get(&s, "/v1/queue/queues/bad%20name").await.0, 400);
    let (_, now) = get(&s, &format!("/v1/queue/jobs/{id}")).await;
    assert_eq!(now, job, "the job is as it was enqueued");
    assert_eq!(counts(&s, "q").await["available"], 1);
}

#[tokio::test]
async fn metrics_show_the_counts_of_every_queue() {
    let s = App::start(quick());
    enqueue(&s, json!({"queue": "alpha", "kind": "k"})).await;
    enqueue(&s, json!({"queue": "alpha", "kind": "k"})).await;
    enqueue(&s, json!({"queue": "beta", "kind": "k"})).await;
    claim_one(&s, "beta", 30_000).await.unwrap();
    let text = text(s.req(Method::GET, "/metrics").send().await.unwrap()).await;
    for line in [
        "cairn_queue_jobs{queue=\"alpha\",state=\"available\"} 2",
        "cairn_queue_jobs{queue=\"beta\",state=\"running\"} 1",
        "cairn_queue_jobs{queue=\"beta\",state=\"available\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
    }
}

#[tokio::test]
async fn queues_need_an_unscoped_token_of_the_right_role() {
    let config = Config {
        tokens: vec![
            token("admin", Role::Admin, None),
            token("writer", Role::Write, None),
            token("reader", Role::Read, None),
            token("scoped", Role::Admin, Some("p1")),
        ],
        ..quick()
    };
    let s = App::start(config);
    let as_ = |who: &'static str, method: Method, path: String, body: Value| {
        let s = s.clone();
        async move { json(s.req(method, &path).bearer_auth(who).json(&body).send().await.unwrap()).await.0 }
    };
    let job = json!({"queue": "q", "kind": "k"});
    assert_eq!(as_("reader", Method::POST, "/v1/queue/jobs".into(), job.clone()).await, 403);
    assert_eq!(as_("scoped", Method::POST, "/v1/queue/jobs".into(), job.clone()).await, 403);
    assert_eq!(as_("scoped", Method::GET, "/v1/queue/queues".into(), json!({})).await, 403);
    assert_eq!(as_("writer", Method::POST, "/v1/queue/jobs".into(), job.clone()).await, 201);
    assert_eq!(as_("reader", Method::GET, "/v1/queue/queues/q".into(), json!({})).await, 200);
    let (_, claimed) = json(
        s.req(Method::POST, "/v1/queue/claim")
            .bearer_auth("writer")
            .json(&json!({"queues": ["q"], "worker": "w", "lease_ms": 1000}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = id_of(&claimed["jobs"][0]);
    assert_eq!(as_("writer", Method::POST, format!("/v1/queue/jobs/{id}/complete"), json!({"token": 1})).await, 200);
    assert_eq!(as_("writer", Method::DELETE, format!("/v1/queue/jobs/{id}"), json!({})).await, 403, "purges: admin");
    assert_eq!(as_("admin", Method::DELETE, format!("/v1/queue/jobs/{id}"), json!({})).await, 204);
    let (status, _) = call(&s, Method::GET, "/v1/queue/queues", None).await;
    assert_eq!(status, 401, "no token");
}
