//! The job record, its states, and the requests and answers of the queue's operations (serde-able, so that
//! an HTTP layer maps onto them directly).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::{IndexSpec, Record};

use super::names::{JOBS, UNIQUE};

/// Default [`NewJob::max_attempts`], as Oban's.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 20;
/// Least urgent priority; 0 is the most urgent.
pub const MAX_PRIORITY: u8 = 9;

/// Where a job is in its life; `docs/queue.md` has the table of allowed transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waits for its `run_at` (enqueued for later, or snoozed).
    Scheduled,
    /// Ready to be claimed.
    Available,
    /// Claimed by a worker holding a lease.
    Running,
    /// Failed (or its lease expired) with attempts left: waits for its backoff to pass.
    Retryable,
    /// Done.
    Completed,
    /// Failed its last attempt, or discarded: the dead letters.
    Discarded,
    /// Cancelled before it finished.
    Cancelled,
}

impl JobState {
    /// Every state, in the order of [`QueueCounts`].
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Discarded,
        JobState::Cancelled,
    ];

    /// The states of a job not yet finished: the default states a unique key is checked against.
    pub const UNFINISHED: [JobState; 4] =
        [JobState::Scheduled, JobState::Available, JobState::Running, JobState::Retryable];

    /// The state's name, as serialized (`"scheduled"`, `"available"`...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Discarded => "discarded",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job is finished (completed, discarded or cancelled): only [`JobQueue::retry`] moves it
    /// on, and pruning deletes it once old enough.
    ///
    /// [`JobQueue::retry`]: super::JobQueue::retry
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Discarded | JobState::Cancelled)
    }

    /// Position in [`JobState::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    /// When it failed, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// What the worker (or the rescuer, for an expired lease) said.
    pub error: String,
}

/// A job, as stored in collection [`JOBS`](super::JOBS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Assigned at enqueue, increasing: among jobs of equal priority, the lower id is the older and runs
    /// first.
    pub id: u64,
    /// The named queue it is in.
    pub queue: String,
    /// What kind of work it is (the worker's dispatch key).
    pub kind: String,
    /// The job's arguments.
    pub payload: Value,
    /// 0 (most urgent) to [`MAX_PRIORITY`].
    pub priority: u8,
    /// Where it is in its life.
    pub state: JobState,
    /// Attempts started so far (claims, less snoozes).
    pub attempt: u32,
    /// After this many failed attempts the job is discarded.
    pub max_attempts: u32,
    /// When the job becomes (or became) available, in milliseconds since the Unix epoch: the requested
    /// `run_at`, or the end of a backoff or snooze.
    pub scheduled_at_ms: i64,
    /// Set while the job waits (scheduled or retryable): when it becomes available. Indexed: claims and
    /// the maintenance thread find due jobs through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at_ms: Option<i64>,
    /// Set while the job runs: when its lease expires, after which it is rescued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until_ms: Option<i64>,
    /// The fencing token of the job's latest claim: the number of claims so far. A completion, failure,
    /// snooze or heartbeat must present the current token.
    pub token: u64,
    /// Who claimed it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The unique key it was enqueued with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// Each failed attempt, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<AttemptError>,
    /// When it was enqueued, in milliseconds since the Unix epoch.
    pub inserted_at_ms: i64,
    /// When it was last claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempted_at_ms: Option<i64>,
    /// When it finished (completed, discarded or cancelled). Indexed: pruning finds old jobs through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
}

/// The record id of job `id`: 16 hex digits, so that record keys sort by id.
pub(crate) fn job_key(id: u64) -> String {
    format!("{id:016x}")
}

/// The job id of a record id.
pub(crate) fn parse_job_key(key: &str) -> Option<u64> {
    u64::from_str_radix(key, 16).ok()
}

impl Record for Job {
    const COLLECTION: &'static str = JOBS;
    fn id(&self) -> String {
        job_key(self.id)
    }
    fn indexes() -> Vec<IndexSpec> {
        vec![
            // A claim is a seek to (queue, "available") and the first entry: priority, then id (age).
            IndexSpec::new(super::index::READY, &["queue", "state", "priority"]),
            IndexSpec::new(super::index::DUE, &["due_at_ms"]),
            IndexSpec::new(super::index::LEASE, &["lease_until_ms"]),
            IndexSpec::new(super::index::FINISHED, &["state", "finished_at_ms"]),
        ]
    }
}

/// The job holding a unique key of a queue (collection [`UNIQUE`](super::UNIQUE), id `queue/key`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UniqueRef {
    pub(crate) queue: String,
    pub(crate) key: String,
    pub(crate) job: u64,
}

impl UniqueRef {
    pub(crate) fn record_id(queue: &str, key: &str) -> String {
        format!("{queue}/{key}")
    }
}

impl Record for UniqueRef {
    const COLLECTION: &'static str = UNIQUE;
    fn id(&self) -> String {
        Self::record_id(&self.queue, &self.key)
    }
}

/// What makes a job unique: an enqueue whose key matches a job of the same queue in one of `states`
/// (inserted within `period_ms`, if given) returns that job instead of adding one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unique {
    /// The key: 1 to 400 bytes without control characters.
    pub key: String,
    /// Only a job inserted this recently counts; `None`: any.
    #[serde(default)]
    pub period_ms: Option<i64>,
    /// The states of a job that count. Default ([`None`]): [`JobState::UNFINISHED`].
    #[serde(default)]
    pub states: Option<Vec<JobState>>,
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The queue: 1 to 64 ASCII letters, digits, `_` or `-`.
    pub queue: String,
    /// What kind of work it is: 1 to 256 bytes without control characters.
    pub kind: String,
    /// The job's arguments. Default: null.
    #[serde(default)]
    pub payload: Value,
    /// 0 (most urgent, the default) to [`MAX_PRIORITY`].
    #[serde(default)]
    pub priority: u8,
    /// Not before this time (milliseconds since the Unix epoch); `None` or a past time: at once.
    #[serde(default)]
    pub run_at_ms: Option<i64>,
    /// Attempts before the job is discarded, at least 1. Default: [`DEFAULT_MAX_ATTEMPTS`].
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Deduplication; `None`: every enqueue adds a job.
    #[serde(default)]
    pub unique: Option<Unique>,
}

impl NewJob {
    /// A job of `kind` in `queue` with `payload`, to run at once with priority 0.
    pub fn new(queue: &str, kind: &str, payload: Value) -> Self {
        Self {
            queue: queue.to_owned(),
            kind: kind.to_owned(),
            payload,
            priority: 0,
            run_at_ms: None,
            max_attempts: None,
            unique: None,
        }
    }

    /// With this priority (0 most urgent).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Not before `run_at_ms` (milliseconds since the Unix epoch).
    pub fn run_at(mut self, run_at_ms: i64) -> Self {
        self.run_at_ms = Some(run_at_ms);
        self
    }

    /// At most `n` attempts.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Unique by `key` among the queue's unfinished jobs.
    pub fn unique(mut self, key: &str) -> Self {
        self.unique = Some(Unique { key: key.to_owned(), period_ms: None, states: None });
        self
    }

    /// Unique by `unique.key` as `unique` says.
    pub fn unique_with(mut self, unique: Unique) -> Self {
        self.unique = Some(unique);
        self
    }
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The job added, or the existing job holding the unique key.
    pub job: Job,
    /// Whether `job` is an existing job (no job was added).
    pub duplicate: bool,
}

/// A worker's request for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// The queues it serves: it gets the most urgent available job of any of them (priority, then age).
    pub queues: Vec<String>,
    /// Who claims (recorded in the job): 1 to 256 bytes.
    pub worker: String,
    /// How long the lease lasts before the job is rescued, unless extended ([`JobQueue::heartbeat`]).
    ///
    /// [`JobQueue::heartbeat`]: super::JobQueue::heartbeat
    pub lease_ms: u64,
    /// How long to wait for a job when none is available (long poll); 0: return at once.
    #[serde(default)]
    pub wait_ms: u64,
    /// Most jobs [`JobQueue::claim_batch`] takes in its one commit, 1 to [`MAX_CLAIM_BATCH`]
    /// ([`JobQueue::claim`] takes one whatever this says). Default: 1.
    ///
    /// [`JobQueue::claim_batch`]: super::JobQueue::claim_batch
    /// [`JobQueue::claim`]: super::JobQueue::claim
    #[serde(default = "one")]
    pub limit: usize,
}

fn one() -> usize {
    1
}

/// Most jobs one claim takes.
pub const MAX_CLAIM_BATCH: usize = 1000;

impl ClaimRequest {
    /// A claim of `worker` on `queues` with a lease of `lease_ms`, not waiting.
    pub fn new(queues: &[&str], worker: &str, lease_ms: u64) -> Self {
        Self {
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            worker: worker.to_owned(),
            lease_ms,
            wait_ms: 0,
            limit: 1,
        }
    }

    /// Taking up to `limit` jobs at once ([`JobQueue::claim_batch`](super::JobQueue::claim_batch)).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Waiting up to `wait_ms` for a job.
    pub fn wait(mut self, wait_ms: u64) -> Self {
        self.wait_ms = wait_ms;
        self
    }
}

/// Jobs of a queue in each state, kept by every write ([`JobQueue::counts`]).
///
/// [`JobQueue::counts`]: super::JobQueue::counts
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Jobs waiting for their `run_at`.
    pub scheduled: u64,
    /// Jobs ready to be claimed.
    pub available: u64,
    /// Jobs claimed and leased.
    pub running: u64,
    /// Jobs waiting for their backoff.
    pub retryable: u64,
    /// Jobs completed (until pruned).
    pub completed: u64,
    /// Dead letters (until pruned or purged).
    pub discarded: u64,
    /// Jobs cancelled (until pruned or purged).
    pub cancelled: u64,
}

impl QueueCounts {
    pub(crate) fn from_array(a: [i64; 7]) -> Self {
        let n = |i: usize| a.get(i).copied().unwrap_or(0).max(0) as u64;
        Self {
            scheduled: n(0),
            available: n(1),
            running: n(2),
            retryable: n(3),
            completed: n(4),
            discarded: n(5),
            cancelled: n(6),
        }
    }

    /// The count of jobs in `state`.
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Scheduled => self.scheduled,
            JobState::Available => self.available,
            JobState::Running => self.running,
            JobState::Retryable => self.retryable,
            JobState::Completed => self.completed,
            JobState::Discarded => self.discarded,
            JobState::Cancelled => self.cancelled,
        }
    }

    /// Jobs in every state.
    pub fn total(&self) -> u64 {
        JobState::ALL.iter().map(|s| self.get(*s)).sum()
    }
}

/// What one pass of maintenance did ([`JobQueue::maintain`]).
///
/// [`JobQueue::maintain`]: super::JobQueue::maintain
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceReport {
    /// Scheduled and retryable jobs made available.
    pub promoted: u64,
    /// Running jobs whose lease had expired, made retryable or discarded.
    pub rescued: u64,
    /// Finished jobs deleted for their age.
    pub pruned: u64,
}

/// A page of jobs ([`JobQueue::list`]).
///
/// [`JobQueue::list`]: super::JobQueue::list
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs, in claim order (priority, then id).
    pub jobs: Vec<Job>,
    /// Pass it as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}
