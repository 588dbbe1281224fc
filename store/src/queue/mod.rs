//! The job queue: named queues of jobs with the semantics schedulers rely on (those of Oban, River,
//! graphile-worker and pgmq): scheduled, retried with backoff, leased with fencing tokens, deduplicated by
//! unique keys, dead-lettered. Jobs are records of a system collection of the record store
//! ([`JOBS`], `_queue_jobs`), so an enqueue can commit in the same transaction as the record it is about
//! ([`JobQueue::enqueue_in`]). See `docs/queue.md`.
//!
//! A claim is one seek to the head of `(queue, "available")` in the jobs' `ready` index, ordered by
//! priority then id (age), and one conditional commit: of concurrent claimers of one job, one commits and
//! the others move on to the next job. Counts per queue and state are kept by the same commits
//! (`counts.rs`). Scheduled and retryable jobs become available when due: a claim promotes due jobs first
//! (from index `due_at`; an in-memory bound on the earliest due time makes that free when none are due),
//! and so does the maintenance thread, which also rescues expired leases and prunes old finished jobs.

mod backoff;
mod claim;
mod counts;
mod enqueue;
mod error;
mod finish;
mod index;
mod maintain;
mod model;
mod names;
mod states;
mod steps;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::keys;
use crate::periodic::Periodic;
use crate::store::Store;

pub use backoff::Backoff;
pub use error::QueueError;
pub use model::{
    AttemptError, ClaimRequest, Enqueued, Job, JobPage, JobState, MaintenanceReport, NewJob, QueueCounts, Unique,
    DEFAULT_MAX_ATTEMPTS, MAX_CLAIM_BATCH, MAX_PRIORITY,
};
pub use names::{
    check_claim, check_claim_batch, check_label, check_new_job, check_queue, is_queue_collection, JOBS,
    MAX_UNIQUE_KEY_LEN, UNIQUE,
};
pub use states::{allowed, TRANSITIONS};
pub use steps::MAX_ERROR_LEN;

/// A clock that only moves when told: for tests of scheduled jobs, backoffs, leases and retention without
/// sleeping. Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `now_ms` (milliseconds since the Unix epoch).
    pub fn new(now_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(now_ms)))
    }

    /// The time it reads.
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Moves it to `now_ms`.
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    /// Moves it forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

/// How a job queue runs. Every setter documents its default.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    maintenance_interval: Duration,
    completed_retention: Duration,
    discarded_retention: Duration,
    prune_batch: usize,
    backoff: Backoff,
    queue_backoff: Vec<(String, Backoff)>,
    clock: Option<ManualClock>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            maintenance_interval: Duration::from_secs(1),
            completed_retention: Duration::from_secs(3600),
            discarded_retention: Duration::from_secs(7 * 24 * 3600),
            prune_batch: 10_000,
            backoff: Backoff::default(),
            queue_backoff: Vec::new(),
            clock: None,
        }
    }
}

impl QueueOptions {
    /// How often the maintenance thread promotes due jobs (waking waiting claims), rescues expired leases,
    /// prunes old finished jobs and folds counts; zero runs no thread (call [`JobQueue::maintain`]
    /// yourself). A claim promotes due jobs itself, so this bounds how late a rescue or a wake-up of a
    /// waiting claim for a scheduled job can be. Default: 1 s.
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = interval;
        self
    }

    /// Completed jobs are deleted once finished this long ago. Default: 1 hour.
    pub fn completed_retention(mut self, retention: Duration) -> Self {
        self.completed_retention = retention;
        self
    }

    /// Discarded (dead-lettered) and cancelled jobs are deleted once finished this long ago. Default: 7
    /// days.
    pub fn discarded_retention(mut self, retention: Duration) -> Self {
        self.discarded_retention = retention;
        self
    }

    /// Most jobs one maintenance pass prunes (in commits of 1,000); the rest wait for the next pass.
    /// Default: 10,000.
    pub fn prune_batch(mut self, jobs: usize) -> Self {
        self.prune_batch = jobs.max(1);
        self
    }

    /// The backoff of failed jobs of queues without one of their own. Default: [`Backoff::default`]
    /// (Oban's: attempt⁴ + 15 s, plus up to 10% jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The backoff of failed jobs of `queue`. Default: the one of [`QueueOptions::backoff`].
    pub fn queue_backoff(mut self, queue: &str, backoff: Backoff) -> Self {
        self.queue_backoff.retain(|(q, _)| q != queue);
        self.queue_backoff.push((queue.to_owned(), backoff));
        self
    }

    /// Reads time from `clock` instead of the system's (for tests). Default: the system clock.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The period of the maintenance passes ([`QueueOptions::maintenance_interval`]); zero: none.
    pub fn maintenance_period(&self) -> Duration {
        self.maintenance_interval
    }

    /// How long jobs finished in `state` are kept before pruning: the completed retention for completed
    /// jobs, the discarded retention for discarded and cancelled ones, `None` for unfinished states.
    pub fn retention_of(&self, state: JobState) -> Option<Duration> {
        match state {
            JobState::Completed => Some(self.completed_retention),
            JobState::Discarded | JobState::Cancelled => Some(self.discarded_retention),
            _ => None,
        }
    }

    /// Most jobs one maintenance pass prunes ([`QueueOptions::prune_batch`]).
    pub fn prune_limit(&self) -> usize {
        self.prune_batch
    }

    /// The backoff of failed jobs of `queue`: its own, or the default one.
    pub fn backoff_of(&self, queue: &str) -> &Backoff {
        self.queue_backoff.iter().find(|(q, _)| q == queue).map_or(&self.backoff, |(_, b)| b)
    }

    /// Now, in milliseconds since the Unix epoch, by the clock of [`QueueOptions::clock`] or the system's.
    pub fn now_ms(&self) -> i64 {
        match &self.clock {
            Some(c) => c.now_ms(),
            None => crate::clock::now_ms(),
        }
    }
}

/// Wakes claims waiting for a job.
#[derive(Debug, Default)]
struct Wake {
    generation: Mutex<u64>,
    cond: Condvar,
}

pub(crate) struct Inner {
    store: Store,
    opts: QueueOptions,
    /// The next job id.
    next_id: AtomicU64,
    /// No job is due before this time (ms); `i64::MIN`: unknown. Lowered after every commit that makes a
    /// job wait; raised by a promotion that found what is due next.
    next_due: AtomicI64,
    wake: Wake,
    /// Serializes promotions (a claimer that finds one under way goes on without).
    promoting: Mutex<()>,
    /// Serializes folds of count entries.
    folding: Mutex<()>,
    /// Serializes rescues and prunes.
    maintaining: Mutex<()>,
    last_error: Mutex<Option<String>>,
}

/// A handle on the job queue of a store: every named queue. Cheap to clone, safe to share between
/// threads. Every call blocks.
#[derive(Clone)]
pub struct JobQueue {
    inner: Arc<Inner>,
    /// The maintenance thread, stopped when the last handle drops.
    _guard: Option<Arc<Periodic>>,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue").field("store", &self.inner.store).finish_non_exhaustive()
    }
}

/// Microseconds since the Unix epoch, by the system clock.
fn system_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl JobQueue {
    /// Opens the job queue of `store`, declaring its collections on first use, and starts its maintenance
    /// thread. Leases that expired while the store was closed are rescued by the thread's first pass (or
    /// by [`JobQueue::maintain`]).
    pub fn open(store: Store, options: QueueOptions) -> Result<JobQueue, QueueError> {
        store.collection::<model::Job>()?;
        store.collection::<model::UniqueRef>()?;
        // Ids continue after the newest job, and after the system clock's microseconds: a restart never
        // hands out again the id of a job that was pruned.
        let newest = match store.db().prefix_rev(keys::record_prefix(JOBS))?.next() {
            Some(pair) => {
                let (key, _) = pair?;
                keys::parse_record_key(&key).and_then(|(_, id)| model::parse_job_key(id)).unwrap_or(0)
            }
            None => 0,
        };
        let interval = options.maintenance_interval;
        let inner = Arc::new(Inner {
            store,
            opts: options,
            next_id: AtomicU64::new((newest + 1).max(system_micros())),
            next_due: AtomicI64::new(i64::MIN),
            wake: Wake::default(),
            promoting: Mutex::new(()),
            folding: Mutex::new(()),
            maintaining: Mutex::new(()),
            last_error: Mutex::new(None),
        });
        let guard = if interval.is_zero() {
            None
        } else {
            let thread = Periodic::start("cairn-queue", &inner, interval, run).map_err(|source| {
                crate::StoreError::from(cairn_engine::StorageError::Io {
                    path: inner.store.db().path().to_path_buf(),
                    source,
                })
            })?;
            Some(Arc::new(thread))
        };
        Ok(JobQueue { inner, _guard: guard })
    }

    /// The record store underneath.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The last error of the maintenance thread, if its last pass failed.
    pub fn last_maintenance_error(&self) -> Option<String> {
        self.inner.last_error.lock().clone()
    }

    /// Now, in milliseconds since the Unix epoch, by the queue's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.opts.now_ms()
    }

    /// A new job id.
    fn allocate_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The backoff of `queue`.
    fn backoff_of(&self, queue: &str) -> &Backoff {
        self.inner.opts.backoff_of(queue)
    }

    /// A hook for [`Transaction::after_commit`](crate::Transaction): wakes waiting claims, and notes the
    /// earliest due time of jobs the commit made wait.
    fn on_commit(&self, woke: bool, due_ms: Option<i64>) -> Box<dyn FnOnce() + Send + Sync> {
        let inner = Arc::downgrade(&self.inner);
        Box::new(move || {
            let Some(inner) = inner.upgrade() else { return };
            if let Some(due) = due_ms {
                inner.next_due.fetch_min(due, Ordering::SeqCst);
            }
            if woke {
                notify(&inner);
            }
        })
    }
}

fn notify(inner: &Inner) {
    let mut generation = inner.wake.generation.lock();
    *generation += 1;
    inner.wake.cond.notify_all();
}

/// A round of the maintenance thread: [`JobQueue::maintain`].
fn run(inner: Arc<Inner>) {
    let queue = JobQueue { inner, _guard: None };
    let result = queue.maintain();
    *queue.inner.last_error.lock() = result.err().map(|e| e.to_string());
}
