//! Following: stop flags and polling waits shared by the exporters.

use std::time::Duration;

use crate::StopFlag;

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
