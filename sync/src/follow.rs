//! Following: change consumers, stop flags and polling waits shared by the exporters.

use std::time::Duration;

use cairn_store::Store;

use crate::error::SyncError;
use crate::StopFlag;

/// Registers the store's change consumer `name` at `seq` unless it is registered already (then it stays
/// where it is: it still guards changes not shipped yet).
pub(crate) fn ensure_consumer(store: &Store, name: &str, seq: u64) -> Result<(), SyncError> {
    if store.consumers()?.iter().all(|(n, _)| n != name) {
        store.register_consumer(name, seq)?;
    }
    Ok(())
}

pub(crate) fn stopped(stop: &Option<StopFlag>) -> bool {
    stop.as_ref().is_some_and(|s| *s.borrow())
}

/// Sleeps `poll`, or less if the stop flag is set meanwhile.
pub(crate) async fn wait(stop: &Option<StopFlag>, poll: Duration) {
    match stop {
        Some(s) => {
            let mut s = s.clone();
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = s.changed() => {}
            }
        }
        None => tokio::time::sleep(poll).await,
    }
}
