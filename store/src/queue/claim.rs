//! Claims: the most urgent available job of the queues a worker serves, leased with a fencing token;
//! long polls; promotion of due jobs.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::handle::WRITE_ATTEMPTS;
use crate::keys;

use super::counts::Deltas;
use super::error::QueueError;
use super::index::{self, entry_job, ready_prefix};
use super::model::{job_key, ClaimRequest, Job, JobState};
use super::names::{check_claim, check_claim_batch, JOBS};
use super::JobQueue;

/// Candidates read per queue and round: enough that concurrent claimers each find one not in flight.
const CANDIDATES: usize = 32;
/// Rounds of candidates a claim goes through while every candidate is lost to other claimers.
const CLAIM_ROUNDS: usize = 64;
/// Due jobs promoted per commit.
const PROMOTE_BATCH: usize = 512;

impl JobQueue {
    /// Claims the most urgent available job of `request.queues` (lowest priority number, then lowest id)
    /// for `request.worker`: the job comes back running, with `attempt` counted, its lease until
    /// `lease_until_ms` and the fencing token `token` that completing, failing, snoozing or extending it
    /// takes. Scheduled and retryable jobs that are due are made available first. With no job available,
    /// waits up to `request.wait_ms` for one (woken by enqueues, retries and promotions; no polling), then
    /// returns `None` (also returned when other claimers took every candidate first, round after round).
    /// Takes one job whatever `request.limit` says.
    pub fn claim(&self, request: &ClaimRequest) -> Result<Option<Job>, QueueError> {
        check_claim(request)?;
        Ok(self.claim_up_to(request, 1)?.into_iter().next())
    }

    /// [`JobQueue::claim`] of up to `request.limit` jobs in one commit, in claim order: fewer if fewer are
    /// available, none after `request.wait_ms` without any. Each job has its own lease and token.
    pub fn claim_batch(&self, request: &ClaimRequest) -> Result<Vec<Job>, QueueError> {
        check_claim_batch(request)?;
        self.claim_up_to(request, request.limit)
    }

    /// Claims up to `limit` jobs (the request checked already), waiting as `request` asks.
    fn claim_up_to(&self, request: &ClaimRequest, limit: usize) -> Result<Vec<Job>, QueueError> {
        let deadline = Instant::now() + Duration::from_millis(request.wait_ms);
        loop {
            let generation = *self.inner.wake.generation.lock();
            let jobs = self.claim_once(request, limit)?;
            if !jobs.is_empty() {
                return Ok(jobs);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(jobs);
            }
            let mut wait = deadline - now;
            let next_due = self.inner.next_due.load(Ordering::SeqCst);
            if next_due != i64::MAX {
                let until = next_due.saturating_sub(self.now_ms()).max(1);
                wait = wait.min(Duration::from_millis(until as u64));
            }
            let mut g = self.inner.wake.generation.lock();
            if *g == generation {
                self.inner.wake.cond.wait_for(&mut g, wait);
            }
        }
    }

    /// One claim of up to `limit` jobs, not waiting.
    fn claim_once(&self, request: &ClaimRequest, limit: usize) -> Result<Vec<Job>, QueueError> {
        let now = self.now_ms();
        self.promote_if_due(now)?;
        let store = self.store();
        let per_queue = CANDIDATES.max(limit * 2);
        for _round in 0..CLAIM_ROUNDS {
            // Candidates another claimer is taking are passed over; the others are marked as being taken
            // while this claim tries them.
            let mut taking = Vec::new();
            let mut found = false;
            if let [q] = request.queues.as_slice() {
                // One queue: its index order is the claim order, so the first candidates that are free
                // are the ones to take, and the scan stops there.
                let prefix = ready_prefix(q, JobState::Available);
                let end = keys::after_prefix(&prefix).unwrap_or_default();
                let mut seen = 0;
                index::scan(store, &prefix, &end, |key, value| {
                    found = true;
                    let id = entry_job(key, value)?;
                    if let Some(guard) = store.claims().enter(keys::record_key(JOBS, &job_key(id))) {
                        taking.push((id, guard));
                    }
                    seen += 1;
                    Ok(taking.len() < limit && seen < per_queue)
                })?;
            } else {
                // (position in claim order, job id): the key's suffix after (queue, state) is (priority, id).
                let mut candidates: Vec<(Vec<u8>, u64)> = Vec::new();
                for q in &request.queues {
                    let prefix = ready_prefix(q, JobState::Available);
                    let end = keys::after_prefix(&prefix).unwrap_or_default();
                    let mut taken = 0;
                    index::scan(store, &prefix, &end, |key, value| {
                        let id = entry_job(key, value)?;
                        candidates.push((key.get(prefix.len()..).unwrap_or_default().to_vec(), id));
                        taken += 1;
                        Ok(taken < per_queue)
                    })?;
                }
                candidates.sort();
                found = !candidates.is_empty();
                for (_, id) in &candidates {
                    if taking.len() == limit {
                        break;
                    }
                    if let Some(guard) = store.claims().enter(keys::record_key(JOBS, &job_key(*id))) {
                        taking.push((*id, guard));
                    }
                }
            }
            if !found {
                return Ok(Vec::new());
            }
            if !taking.is_empty() {
                let ids: Vec<u64> = taking.iter().map(|(id, _)| *id).collect();
                let jobs = self.try_claim(&ids, request, now)?;
                if !jobs.is_empty() {
                    return Ok(jobs);
                }
            }
            // Every candidate was taken by others (or is being taken): look again.
            std::thread::yield_now();
        }
        // Other claimers kept taking every candidate first: as if none were available.
        Ok(Vec::new())
    }

    /// One attempt at claiming jobs `ids` in one commit: those still available, or none if another writer
    /// committed a change to one of them first.
    fn try_claim(&self, ids: &[u64], request: &ClaimRequest, now: i64) -> Result<Vec<Job>, QueueError> {
        let mut tx = self.store().begin();
        let mut deltas = Deltas::default();
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(stored) = tx.get::<Job>(&job_key(*id))? else { continue };
            let mut job = stored.doc;
            if !job.claim(&request.worker, request.lease_ms, now) {
                continue;
            }
            tx.update(&job, stored.version)?;
            deltas.moved(&job.queue, Some(JobState::Available), Some(JobState::Running));
            jobs.push(job);
        }
        if jobs.is_empty() {
            return Ok(jobs);
        }
        deltas.stage(&mut tx);
        match tx.commit() {
            Ok(_) => Ok(jobs),
            Err(e) if e.is_retryable() => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Promotes due jobs unless none can be due yet or another thread is promoting.
    fn promote_if_due(&self, now: i64) -> Result<u64, QueueError> {
        if self.inner.next_due.load(Ordering::SeqCst) > now {
            return Ok(0);
        }
        let Some(_promoting) = self.inner.promoting.try_lock() else { return Ok(0) };
        self.promote(now)
    }

    /// Makes every scheduled or retryable job due by `now` available, and records when the next one is
    /// due. The caller holds `promoting`.
    pub(crate) fn promote(&self, now: i64) -> Result<u64, QueueError> {
        let mut promoted = 0;
        loop {
            // Read before the snapshot: a commit that lowers it after this read makes the update below
            // fail (and the lower bound stays), one before it is in the snapshot.
            let seen = self.inner.next_due.load(Ordering::SeqCst);
            let (ids, next) = index::until(self.store(), index::DUE, &[], now, PROMOTE_BATCH)?;
            if !ids.is_empty() {
                promoted += self.promote_ids(&ids, now)?;
            }
            if ids.len() < PROMOTE_BATCH {
                let next = next.unwrap_or(i64::MAX);
                let _ = self.inner.next_due.compare_exchange(seen, next, Ordering::SeqCst, Ordering::SeqCst);
                return Ok(promoted);
            }
        }
    }

    fn promote_ids(&self, ids: &[u64], now: i64) -> Result<u64, QueueError> {
        let (n, _) = self.store().commit_with_retry(WRITE_ATTEMPTS, |tx| {
            let mut deltas = Deltas::default();
            let mut n = 0;
            for id in ids {
                let Some(stored) = tx.get::<Job>(&job_key(*id))? else { continue };
                let mut job = stored.doc;
                let before = job.state;
                if !job.promote(now) {
                    continue;
                }
                deltas.moved(&job.queue, Some(before), Some(JobState::Available));
                tx.update(&job, stored.version)?;
                n += 1;
            }
            deltas.stage(tx);
            tx.after_commit(self.on_commit(n > 0, None));
            Ok::<_, QueueError>(n)
        })?;
        Ok(n)
    }
}
