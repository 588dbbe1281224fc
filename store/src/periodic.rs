//! [`Periodic`]: a background thread that runs a task every interval on a value it holds weakly, until
//! stopped. The artifact store's and the job queue's maintenance threads are two.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// A running background thread; dropping it stops the thread (waking it from its wait) and joins it. The
/// thread also stops once the value it works on is gone.
pub(crate) struct Periodic {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Periodic {
    /// Starts thread `name`, which every `interval` runs `task` on `target` while `target` lives.
    pub(crate) fn start<T: Send + Sync + 'static>(
        name: &str,
        target: &Arc<T>,
        interval: Duration,
        task: impl Fn(Arc<T>) + Send + 'static,
    ) -> std::io::Result<Periodic> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let weak: Weak<T> = Arc::downgrade(target);
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn({
            let stop = stop.clone();
            move || loop {
                {
                    let mut stopped = stop.0.lock();
                    if !*stopped {
                        stop.1.wait_for(&mut stopped, interval);
                    }
                    if *stopped {
                        return;
                    }
                }
                let Some(target) = weak.upgrade() else { return };
                task(target);
            }
        })?;
        Ok(Periodic { stop, thread: Some(thread) })
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn runs_every_interval_and_stops_when_dropped_or_when_its_target_is_gone() {
        let target = Arc::new(AtomicU32::new(0));
        let periodic = Periodic::start("test-periodic", &target, Duration::from_millis(5), |t| {
            t.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        while target.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(periodic);
        let after = target.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(target.load(Ordering::SeqCst), after, "nothing runs once dropped");

        // A thread whose target is gone ends by itself; dropping it then joins at once.
        let gone = Arc::new(AtomicU32::new(0));
        let periodic = Periodic::start("test-periodic", &gone, Duration::from_millis(1), |_| {}).unwrap();
        drop(gone);
        std::thread::sleep(Duration::from_millis(20));
        assert!(periodic.thread.as_ref().is_some_and(JoinHandle::is_finished));
    }
}
