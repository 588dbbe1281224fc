//! The write path: a queue of committers whose front member, the leader, writes the whole group to the
//! WAL with one append and at most one sync (group commit), applies it to the memtable and publishes it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::batch::{Condition, WriteBatch};
use crate::error::{Error, StorageError, WriteError};
use crate::format::names;
use crate::log::encode_record;
use crate::memtable::{Lookup, Memtable, Put};
use crate::options::Durability;
use crate::stats::Counters;
use crate::wal::WalState;

use super::{lookup, Inner, View};

/// Reads at this sequence see every committed version.
const LATEST: u64 = u64::MAX >> 8;

/// The key of the first condition that fails: written earlier in the same group, or committed after the
/// condition's sequence. `committed` is the last sequence committed before the group: a condition from at
/// least that sequence cannot have been broken by an earlier group, and its key is not looked up.
fn failed_condition(
    view: &View,
    conditions: &[Condition],
    written: &HashSet<Vec<u8>>,
    committed: u64,
) -> Result<Option<Vec<u8>>, StorageError> {
    for c in conditions {
        let changed = written.contains(&c.key)
            || (c.seq < committed
                && match lookup(view, &c.key, LATEST)? {
                    Lookup::Found(_, seq) | Lookup::Deleted(seq) => seq > c.seq,
                    Lookup::Absent => false,
                });
        if changed {
            return Ok(Some(c.key.clone()));
        }
    }
    Ok(None)
}

/// Synced groups of at least this many operations are applied to the memtable while their WAL append is
/// written to the disk, before the sync (below, there is too little to overlap for the extra system call).
pub(super) const OVERLAP_APPLY_ENTRIES: u64 = 256;

/// The longest a slowed group is delayed, however large.
const MAX_SLOWDOWN: Duration = Duration::from_millis(1);

/// How far ahead of the rate writers may run while level 0 is at its slowdown trigger before they wait.
const SLOWDOWN_BURST: Duration = Duration::from_millis(1);

/// Paces the writers while level 0 is at its slowdown trigger, so that they add bytes at no more than
/// [`Options::level0_slowdown_rate`](crate::Options::level0_slowdown_rate): a token bucket. Writers slower
/// than the rate (a claim's commit of a few KB every few hundred microseconds) are not delayed; faster ones
/// wait for what they are ahead by, at most [`MAX_SLOWDOWN`] a group, which is all a bulk load's large
/// groups ever wait.
#[derive(Default)]
struct Pacer {
    /// When the bytes admitted so far are paid for at the rate; `None` before the first slowed group.
    due: Option<Instant>,
}

impl Pacer {
    /// Admits a group of `bytes` at `now`; returns how long it must wait first.
    fn admit(&mut self, now: Instant, bytes: usize, rate: u64) -> Duration {
        let cost = Duration::from_nanos(
            u64::try_from(bytes as u128 * 1_000_000_000 / u128::from(rate.max(1))).unwrap_or(u64::MAX),
        );
        // Time idle is credit, up to the burst; time ahead beyond one group's wait is forgiven, so that a
        // bulk load that stops leaves no debt to the writers after it.
        let start = self.due.map_or(now, |due| due.max(now.checked_sub(SLOWDOWN_BURST).unwrap_or(now)));
        let due = start.checked_add(cost).unwrap_or(now + MAX_SLOWDOWN + SLOWDOWN_BURST);
        let wait = due.saturating_duration_since(now + SLOWDOWN_BURST).min(MAX_SLOWDOWN);
        self.due = Some(due.min(now + SLOWDOWN_BURST + wait));
        wait
    }
}

/// Most bytes of batches one leader writes in a group.
const MAX_GROUP_BYTES: usize = 4 << 20;

struct Request {
    ticket: u64,
    batch: WriteBatch,
    durability: Durability,
    force_flush: bool,
    conditions: Vec<Condition>,
    /// Wakes this request's thread: when its result is in, or when it is to lead.
    wake: Arc<Condvar>,
}

#[derive(Default)]
struct QueueState {
    pending: VecDeque<Request>,
    leader_active: bool,
    done: HashMap<u64, Result<u64, WriteError>>,
    next_ticket: u64,
}

/// Committers queue here; each waits on its own condition variable, so a finished group wakes only its
/// members and the next leader, not every waiter.
#[derive(Default)]
pub(crate) struct CommitQueue {
    state: Mutex<QueueState>,
    /// Used by the leader only.
    pacer: Mutex<Pacer>,
}

impl Inner {
    /// Commits `batch` if every condition holds; with `force_flush`, also freezes a non-empty memtable first.
    pub fn commit(
        &self,
        batch: WriteBatch,
        durability: Durability,
        force_flush: bool,
        conditions: Vec<Condition>,
    ) -> Result<u64, WriteError> {
        batch.validate()?;
        if let Some(e) = self.poison_error() {
            return Err(e);
        }
        let wake = Arc::new(Condvar::new());
        let mut state = self.commit.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.pending.push_back(Request { ticket, batch, durability, force_flush, conditions, wake: wake.clone() });
        loop {
            if let Some(result) = state.done.remove(&ticket) {
                return result;
            }
            if !state.leader_active {
                break;
            }
            wake.wait(&mut state);
        }
        state.leader_active = true;
        while !state.done.contains_key(&ticket) {
            let mut group = Vec::new();
            let mut bytes = 0;
            while let Some(r) = state.pending.front() {
                // A batch ingested as tables (see `ingest`) is a group of its own.
                let alone = self.wants_ingest(&r.batch, &r.conditions);
                if !group.is_empty() && (alone || bytes + r.batch.encoded_len() > MAX_GROUP_BYTES) {
                    break;
                }
                bytes += r.batch.encoded_len();
                group.extend(state.pending.pop_front());
                if alone {
                    break;
                }
            }
            drop(state);
            let results = self.write_group(&mut group);
            state = self.commit.state.lock();
            for (r, result) in group.iter().zip(results) {
                state.done.insert(r.ticket, result);
                r.wake.notify_one();
            }
        }
        state.leader_active = false;
        if let Some(next) = state.pending.front() {
            next.wake.notify_one();
        }
        state.done.remove(&ticket).unwrap_or(Err(WriteError::Storage(StorageError::Closed)))
    }

    /// Writes one group as leader; one result per request.
    fn write_group(&self, group: &mut [Request]) -> Vec<Result<u64, WriteError>> {
        let force = group.iter().any(|r| r.force_flush);
        let outcome = match group {
            [r] if self.wants_ingest(&r.batch, &r.conditions) => {
                self.ingest(std::mem::take(&mut r.batch)).map(|seq| vec![Ok(seq)])
            }
            _ => {
                let bytes = group.iter().map(|r| r.batch.encoded_len()).sum();
                self.make_room(force, bytes).and_then(|()| self.append_group(group).map_err(WriteError::from))
            }
        };
        match outcome {
            Ok(results) => results,
            Err(e) => {
                let cause = e.to_string();
                if matches!(e, WriteError::Storage(_)) {
                    self.set_poison(&cause);
                }
                let mut first = Some(e);
                group
                    .iter()
                    .map(|_| Err(first.take().unwrap_or(WriteError::Poisoned { cause: cause.clone() })))
                    .collect()
            }
        }
    }

    /// Checks each request's conditions, appends the accepted ones to the WAL (synced if any asked),
    /// applies them to the memtable and publishes them. Returns each request's last sequence number, or why
    /// its conditions failed.
    fn append_group(&self, group: &mut [Request]) -> Result<Vec<Result<u64, WriteError>>, StorageError> {
        let view = self.view.load();
        // The keys of accepted requests are collected only while a later request has conditions to check.
        let last_checked = group.iter().rposition(|r| !r.conditions.is_empty());
        let mut written: HashSet<Vec<u8>> = HashSet::new();
        let committed = self.last_seq.load(Ordering::Acquire);
        let mut seq = committed;
        let mut framed = Vec::new();
        let mut results = Vec::with_capacity(group.len());
        let mut accepted = Vec::with_capacity(group.len());
        let mut user_bytes = 0;
        for (i, r) in group.iter_mut().enumerate() {
            if let Some(key) = failed_condition(&view, &r.conditions, &written, committed)? {
                results.push(Err(WriteError::ConditionFailed { key }));
                accepted.push(false);
                continue;
            }
            if last_checked.is_some_and(|last| i < last) {
                written.extend(r.batch.keys().map(<[u8]>::to_vec));
            }
            if !r.batch.is_empty() {
                let payload = r.batch.stamp(seq + 1);
                user_bytes += payload.len() as u64;
                encode_record(&mut framed, payload);
                seq += u64::from(r.batch.count());
            }
            results.push(Ok(seq));
            accepted.push(true);
        }
        if framed.is_empty() {
            return Ok(results);
        }
        let sync = group.iter().zip(&accepted).any(|(r, ok)| *ok && r.durability == Durability::Immediate);
        let apply = || {
            let mut next = committed + 1;
            let mut entries = Vec::new();
            for r in group.iter().zip(&accepted).filter(|(_, ok)| **ok).map(|(r, _)| r) {
                for entry in r.batch.entries() {
                    let Ok((kind, key, value)) = entry else { continue };
                    entries.push(Put::new(key, next, kind, value));
                    next += 1;
                }
            }
            view.mem.insert_all(&mut entries);
        };
        // A large group's append starts on its way to the disk, then the group goes into the memtable, and
        // then the sync waits for what is left of the writing. Its entries stay invisible until the sequence
        // is published below, after the sync; if the sync fails the database is poisoned and the sequence
        // never published.
        let overlap = sync && seq - committed >= OVERLAP_APPLY_ENTRIES;
        {
            let mut wal = self.wal.lock();
            wal.append(&framed)?;
            if overlap {
                wal.writer.start_writeback();
                apply();
            }
            if sync && wal.writer.sync()? {
                Counters::add(&self.counters.wal_syncs, 1);
            }
        }
        if group.iter().any(|r| r.durability == Durability::Buffered) {
            self.buffered_dirty.store(true, Ordering::Release);
        }
        if !overlap {
            apply();
        }
        self.last_seq.store(seq, Ordering::Release);
        let c = &self.counters;
        Counters::add(&c.user_bytes, user_bytes);
        Counters::add(&c.wal_bytes, framed.len() as u64);
        Counters::add(&c.commits, accepted.iter().filter(|ok| **ok).count() as u64);
        Counters::add(&c.write_groups, 1);
        Ok(results)
    }

    /// Ensures the memtable has room, freezing it when full (or when `force` and not empty), and slows or
    /// stalls the writer of a group of `bytes` while flushes and level-0 compaction fall behind.
    pub(super) fn make_room(&self, force: bool, bytes: usize) -> Result<(), WriteError> {
        let mut slowed = false;
        let mut force = force;
        loop {
            if let Some(e) = self.poison_error() {
                return Err(e);
            }
            let view = self.view.load();
            let level0 = view.version.levels.first().map_or(0, Vec::len);
            if !slowed && level0 >= self.opts.level0_slowdown_trigger {
                slowed = true;
                let start = Instant::now();
                let wait = self.commit.pacer.lock().admit(start, bytes, self.opts.level0_slowdown_rate);
                if !wait.is_zero() {
                    Counters::add(&self.counters.slowdowns, 1);
                    std::thread::sleep(wait);
                    Counters::add(&self.counters.stall_micros, start.elapsed().as_micros() as u64);
                }
                continue;
            }
            let full = view.mem.approximate_size() >= self.opts.memtable_size;
            if !(full || force && !view.mem.is_empty()) {
                return Ok(());
            }
            // A manual compaction holds background compactions off and merges level 0 itself: waiting for them
            // would wait for nothing, and the manual compaction's own flush would wait forever.
            let level0_full = level0 >= self.opts.level0_stop_trigger && self.bg.lock().manual_compactions == 0;
            if view.imms.len() >= self.opts.max_immutable_memtables || level0_full {
                let start = Instant::now();
                let mut bg = self.bg.lock();
                if !bg.shutdown {
                    bg.compaction_wanted = true;
                    self.bg_cv.notify_all();
                    self.bg_cv.wait_for(&mut bg, Duration::from_millis(100));
                }
                Counters::add(&self.counters.stall_micros, start.elapsed().as_micros() as u64);
                continue;
            }
            self.switch_memtable(&view).map_err(WriteError::from)?;
            force = false;
        }
    }

    /// Starts a new WAL and memtable, and queues the old memtable for flushing. The old WAL is synced and
    /// its reserved space cut off before the new one is created: a torn tail can then only ever be in the
    /// newest WAL (a cut between creating the new WAL and syncing the old one would leave unsynced records in
    /// a WAL that is no longer the newest, which open must refuse as damage), and only the newest WAL ever
    /// has reserved space.
    fn switch_memtable(&self, view: &View) -> Result<(), StorageError> {
        let number = self.versions.lock().new_file_number();
        let path = names::wal(&self.dir, number);
        {
            let mut wal = self.wal.lock();
            if wal.writer.sync()? {
                Counters::add(&self.counters.wal_syncs, 1);
            }
            wal.writer.trim(&*self.storage)?;
            let new_wal = WalState::create(&*self.storage, &path)?;
            self.storage.sync_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
            *wal = new_wal;
        }
        view.mem.freeze(number);
        // Rebuild from the view as it is now: a flush may have installed since `view` was read, and its removal
        // of a flushed memtable must not be undone.
        self.replace_view(|current| {
            debug_assert!(Arc::ptr_eq(&current.mem, &view.mem), "only the commit leader switches memtables");
            let mut imms = current.imms.clone();
            imms.push(current.mem.clone());
            View { mem: self.take_memtable(), imms, version: current.version.clone() }
        });
        self.bg_cv.notify_all();
        Ok(())
    }

    /// The memtable made ahead ([`Inner::prepare_memtable`]), or a new one.
    fn take_memtable(&self) -> Arc<Memtable> {
        self.spare_mem.lock().take().unwrap_or_else(|| Arc::new(Memtable::new(self.opts.memtable_size)))
    }

    /// Makes the next memtable switch's memtable ahead, unless one is ready. Making one maps its key index
    /// and filter (6 MiB for a 64 MiB memtable: about 1.2 ms of page faults here), which a switch would
    /// otherwise do while every writer waits for it.
    pub(super) fn prepare_memtable(&self) {
        if self.spare_mem.lock().is_some() {
            return;
        }
        // Made outside the lock, which a switch takes: a switch never waits for the mapping.
        let mem = Arc::new(Memtable::new(self.opts.memtable_size));
        self.spare_mem.lock().get_or_insert(mem);
    }

    /// Freezes the memtable if it holds anything and waits until every frozen memtable is flushed.
    pub fn flush(&self) -> Result<(), Error> {
        self.commit(WriteBatch::new(), Durability::None, true, Vec::new())?;
        let mut bg = self.bg.lock();
        loop {
            if let Some(e) = self.poison_error() {
                return Err(e.into());
            }
            if self.current_view().imms.is_empty() {
                return Ok(());
            }
            self.bg_cv.notify_all();
            self.bg_cv.wait_for(&mut bg, Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u64 = 16 << 20;

    #[test]
    fn writers_slower_than_the_rate_are_not_delayed() {
        let (mut pacer, start) = (Pacer::default(), Instant::now());
        // A claim's commit of 2,500 bytes (149 us at the rate) every 200 us.
        for i in 0..1000 {
            assert_eq!(pacer.admit(start + Duration::from_micros(200 * i), 2_500, RATE), Duration::ZERO);
        }
    }

    #[test]
    fn writers_faster_than_the_rate_wait_for_what_they_are_ahead_by() {
        let (mut pacer, start) = (Pacer::default(), Instant::now());
        // 16 KiB groups (977 us each at the rate) arriving together: the first ones fit in the burst.
        assert_eq!(pacer.admit(start, 16 << 10, RATE), Duration::ZERO);
        assert_eq!(pacer.admit(start, 16 << 10, RATE), Duration::from_nanos(953_124));
        let mut now = start + Duration::from_nanos(953_124);
        // Each after waits one group's cost: the writers are held to the rate.
        for _ in 0..100 {
            let wait = pacer.admit(now, 16 << 10, RATE);
            assert_eq!(wait, Duration::from_nanos(976_562));
            now += wait;
        }
    }

    #[test]
    fn a_group_waits_at_most_a_millisecond_and_leaves_no_debt_behind() {
        let (mut pacer, start) = (Pacer::default(), Instant::now());
        for _ in 0..10 {
            assert_eq!(pacer.admit(start, 4 << 20, RATE), MAX_SLOWDOWN);
        }
        // The bulk writer stops; 2 ms later a small writer meets no debt.
        assert_eq!(pacer.admit(start + Duration::from_millis(2), 2_500, RATE), Duration::ZERO);
        assert_eq!(pacer.admit(start, usize::MAX, 1), MAX_SLOWDOWN);
        assert_eq!(pacer.admit(start, 100, 0), MAX_SLOWDOWN);
    }
}
