//! The embedded backend's record puts and deletes, made in shared commits: each request queues its write
//! here, and writer threads each take every write queued (up to [`MAX_GROUP`]) and make them with
//! [`Store::write_together`], so that concurrent requests share one commit (one WAL record, one sync), and a
//! request waits for its commit without a thread of its own. Each write is still decided, checked and
//! answered on its own.

use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

use cairn_store::{OneWrite, RecordWrite, Store, Stored};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::internal;
use crate::problem::ApiError;

/// Most writes one commit takes from the queue.
const MAX_GROUP: usize = 128;

/// Writer threads: while one waits for its commit's sync, the next decides and stages its writes.
const WRITERS: usize = 2;

/// What a queued write writes, from the record as it is now: as the `decide` of
/// [`DynCollection::write_one_raw`](cairn_store::DynCollection::write_one_raw).
pub(super) type Decide = Box<dyn FnMut(Option<&Stored<Box<RawValue>>>) -> Result<RecordWrite, ApiError> + Send>;

/// A write's answer: the record as it left it (`None` after a delete), and whether the record was absent
/// before.
pub(super) type Answer = Result<(Option<Stored<Value>>, bool), ApiError>;

/// One queued write.
struct Queued {
    collection: String,
    id: String,
    decide: Decide,
    answer: oneshot::Sender<Answer>,
    /// The request's backend permit, held until its write is made.
    _permit: OwnedSemaphorePermit,
}

/// The queue of writes and its writer threads, started by the first write and stopped when it is dropped.
pub(super) struct GroupedWrites {
    store: Store,
    queue: Option<crossbeam_channel::Sender<Queued>>,
    queued: crossbeam_channel::Receiver<Queued>,
    writers: Mutex<Vec<JoinHandle<()>>>,
}

impl GroupedWrites {
    /// The queue of writes to `store`.
    pub(super) fn new(store: Store) -> Self {
        let (queue, queued) = crossbeam_channel::unbounded();
        Self { store, queue: Some(queue), queued, writers: Mutex::new(Vec::new()) }
    }

    /// Queues the write of record `id` of `collection` that `decide` chooses (as
    /// [`DynCollection::write_one_raw`](cairn_store::DynCollection::write_one_raw)'s) and waits for its
    /// answer; `permit` is held until the write is made, also if the future is dropped before.
    pub(super) async fn write(
        &self,
        collection: String,
        id: String,
        decide: Decide,
        permit: OwnedSemaphorePermit,
    ) -> Answer {
        self.start_writers()?;
        let (answer, answered) = oneshot::channel();
        let queued = Queued { collection, id, decide, answer, _permit: permit };
        let closed = || ApiError::unavailable("the server is shutting down", 1);
        self.queue.as_ref().ok_or_else(closed)?.send(queued).map_err(|_| closed())?;
        answered.await.map_err(|_| internal("the writer thread making this write failed"))?
    }

    /// Starts the writer threads unless they run.
    fn start_writers(&self) -> Result<(), ApiError> {
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        while writers.len() < WRITERS {
            let (store, queued) = (self.store.clone(), self.queued.clone());
            let writer = std::thread::Builder::new()
                .name("cairn-writer".into())
                .spawn(move || write_queued(&store, &queued))
                .map_err(|e| internal(format!("cannot start a writer thread: {e}")))?;
            writers.push(writer);
        }
        Ok(())
    }
}

impl Drop for GroupedWrites {
    fn drop(&mut self) {
        self.queue.take();
        for writer in self.writers.get_mut().unwrap_or_else(PoisonError::into_inner).drain(..) {
            let _ = writer.join();
        }
    }
}

/// A writer thread: until the queue closes, takes what is queued and writes it in one commit.
fn write_queued(store: &Store, queued: &crossbeam_channel::Receiver<Queued>) {
    while let Ok(first) = queued.recv() {
        let mut group = vec![first];
        group.extend(queued.try_iter().take(MAX_GROUP - 1));
        // A panic fails the group's requests (their answers are dropped), not the thread.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| write_group(store, group)));
    }
}

/// Makes the writes of `group` together and sends each its answer.
fn write_group(store: &Store, mut group: Vec<Queued>) {
    let mut absent = vec![false; group.len()];
    let answers = {
        let mut writes: Vec<OneWrite<'_, ApiError>> = group
            .iter_mut()
            .zip(absent.iter_mut())
            .map(|(q, absent)| {
                let decide = &mut q.decide;
                OneWrite {
                    collection: &q.collection,
                    id: &q.id,
                    decide: Box::new(move |current| {
                        *absent = current.is_none();
                        decide(current)
                    }),
                }
            })
            .collect();
        store.write_together(&mut writes)
    };
    for ((q, answer), absent) in group.into_iter().zip(answers).zip(absent) {
        let _ = q.answer.send(answer.map(|record| (record, absent)));
    }
}
