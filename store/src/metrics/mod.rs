//! The metrics store: per-run time series (loss, accuracy, throughput by step), logged in durable batches
//! and read back whole, by step or time range, downsampled, or as the latest value of every metric. See
//! `docs/metrics.md`; the bytes are specified in `docs/format/metrics.md`.
//!
//! A series is the points of one metric key of one run. Its points are kept in blocks of up to 1,024
//! points, ordered by step then log order, under a header of statistics (count, min, max, sum, first and
//! last step, time bounds) and a CRC-32C, in adaptive Rice codes: evenly spaced steps left out, timestamps
//! against a moving average of their deltas, values as differences of their bits (of their top 35 bits
//! when they are `f32` values) or XOR-encoded as in Gorilla, whichever is shorter (`block.rs`, `bits.rs`).
//! Appends in step order go on the open block's bit streams instead of encoding it again, from the coder
//! state the handle remembers (`open.rs`). A series entry (`layout.rs`) holds the open block that
//! appends go to, the widest block's span and the latest point, so the latest values of a run are read
//! without touching a block. Blocks are keyed by series, first step and id, so a range read seeks.
//!
//! [`Metrics::log`] writes every series of a batch in one commit, through the engine's group commit, with
//! the series entries it read as conditions ([`cairn_engine::Db::write_if`]): concurrent batches to other
//! series commit together, batches to the same series retry. Reads use one snapshot.

mod bits;
mod block;
mod check;
mod error;
mod export;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod layout;
mod model;
mod open;
mod read;
#[cfg(test)]
mod tests;
mod write;

use std::sync::Arc;

use crate::store::Store;

pub use check::MetricsCheck;
pub use error::MetricsError;
pub use export::{MetricSeries, SeriesPoints, SeriesSummary};
pub use layout::check_name;
pub use model::{
    Bucket, DownsampleRequest, HistoryPage, HistoryRequest, LatestValue, LogReceipt, MetricPoint, Point, RemovedReport,
    RunSeries, MAX_BUCKETS, MAX_LOG_POINTS, MAX_NAME_LEN, MAX_PAGE_POINTS,
};

/// Most commits a write retries when concurrent writers change the series it read.
const WRITE_ATTEMPTS: usize = 1000;

/// A handle on the metrics of a [`Store`]; cheap to clone, safe to share between threads. Every call
/// blocks. Its entries are keys of the store's database starting `0x00 "mts" 0x00` (series) and
/// `0x00 "mtb" 0x00` (blocks).
///
/// ```
/// use cairn_store::metrics::{DownsampleRequest, HistoryRequest, MetricPoint, Metrics};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let metrics = Metrics::new(cairn_store::Store::open(dir.path())?);
/// let points: Vec<_> = (0..1000)
///     .flat_map(|s| [MetricPoint::new("loss", s, 1_700_000_000_000 + s, 1.0 / (s + 1) as f64),
///                    MetricPoint::new("acc", s, 1_700_000_000_000 + s, s as f64 / 1000.0)])
///     .collect();
/// metrics.log("run-1", &points)?; // one durable commit
/// let page = metrics.history(&HistoryRequest::new("run-1", "loss").steps(100, 199))?;
/// assert_eq!(page.points.len(), 100);
/// let latest = metrics.latest("run-1")?;
/// assert_eq!(latest.len(), 2);
/// let buckets = metrics.downsample(&DownsampleRequest::new("run-1", "acc", 10))?;
/// assert_eq!(buckets.len(), 10);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Metrics {
    store: Store,
    /// The open blocks written last through this handle and its clones (`open.rs`).
    open: Arc<open::OpenBlocks>,
}

impl Metrics {
    /// The metrics of `store`. Nothing is written until points are logged.
    pub fn new(store: Store) -> Metrics {
        Metrics { store, open: Arc::default() }
    }

    /// The record store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }
}
