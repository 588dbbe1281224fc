//! The request and response types of the metrics store: plain data, one per operation, so that an HTTP
//! route or an export maps onto them directly.

/// One point of a series: a value at a step and a time.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// The step (iteration, epoch): histories are ordered by it.
    pub step: i64,
    /// When the value was measured, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The value; every `f64` is kept bit for bit (NaN payloads, infinities, `-0.0`).
    pub value: f64,
}

impl PartialEq for Point {
    /// Points are equal when their steps, timestamps and value bits are (NaN equals the same NaN).
    fn eq(&self, other: &Self) -> bool {
        self.step == other.step
            && self.timestamp_ms == other.timestamp_ms
            && self.value.to_bits() == other.value.to_bits()
    }
}

impl Eq for Point {}

/// A point of a named metric, as logged by [`Metrics::log`](super::Metrics::log).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// The metric's name (`loss`, `val/accuracy`): 1 to [`MAX_NAME_LEN`] bytes, no NUL.
    pub key: String,
    /// The step.
    pub step: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The value.
    pub value: f64,
}

impl MetricPoint {
    /// A point of metric `key`.
    pub fn new(key: impl Into<String>, step: i64, timestamp_ms: i64, value: f64) -> Self {
        Self { key: key.into(), step, timestamp_ms, value }
    }
}

/// Longest run id or metric key, in bytes.
pub const MAX_NAME_LEN: usize = 250;
/// Most points one [`Metrics::log`](super::Metrics::log) call takes.
pub const MAX_LOG_POINTS: usize = 100_000;
/// Largest page of a history read.
pub const MAX_PAGE_POINTS: usize = 1_000_000;
/// Most buckets of a downsampled read.
pub const MAX_BUCKETS: usize = 100_000;

/// What one [`Metrics::log`](super::Metrics::log) call wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogReceipt {
    /// Points written.
    pub points: u64,
    /// Series (metric keys) written to.
    pub series: u64,
    /// The engine sequence number of the commit.
    pub sequence: u64,
}

/// A read of one series' history ([`Metrics::history`](super::Metrics::history)): its points with steps in
/// `[min_step, max_step]` and timestamps in `[min_timestamp_ms, max_timestamp_ms]` (bounds inclusive, `None`
/// unbounded), ordered by step then log order, `limit` at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRequest {
    /// The run.
    pub run: String,
    /// The metric key.
    pub key: String,
    /// Lowest step returned.
    pub min_step: Option<i64>,
    /// Highest step returned.
    pub max_step: Option<i64>,
    /// Earliest timestamp returned.
    pub min_timestamp_ms: Option<i64>,
    /// Latest timestamp returned.
    pub max_timestamp_ms: Option<i64>,
    /// Most points returned, 1 to [`MAX_PAGE_POINTS`].
    pub limit: usize,
    /// Where to go on from: the `next_cursor` of the previous page of the same request.
    pub cursor: Option<String>,
}

impl HistoryRequest {
    /// The whole history of `key` in `run`, up to [`MAX_PAGE_POINTS`] points a page.
    pub fn new(run: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            run: run.into(),
            key: key.into(),
            min_step: None,
            max_step: None,
            min_timestamp_ms: None,
            max_timestamp_ms: None,
            limit: MAX_PAGE_POINTS,
            cursor: None,
        }
    }

    /// Only steps in `[min, max]`.
    pub fn steps(mut self, min: i64, max: i64) -> Self {
        self.min_step = Some(min);
        self.max_step = Some(max);
        self
    }

    /// Only timestamps in `[min, max]`.
    pub fn time(mut self, min_ms: i64, max_ms: i64) -> Self {
        self.min_timestamp_ms = Some(min_ms);
        self.max_timestamp_ms = Some(max_ms);
        self
    }

    /// At most `limit` points a page.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Goes on after a previous page.
    pub fn cursor(mut self, cursor: Option<String>) -> Self {
        self.cursor = cursor;
        self
    }
}

/// A page of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The points, ordered by step then log order.
    pub points: Vec<Point>,
    /// Set when more points follow: pass it as the next request's `cursor`.
    pub next_cursor: Option<String>,
}

/// A downsampled read ([`Metrics::downsample`](super::Metrics::downsample)): the steps `[min_step, max_step]`
/// (`None`: the series' lowest and highest step) cut into at most `max_points` buckets of equal width, each
/// summarized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownsampleRequest {
    /// The run.
    pub run: String,
    /// The metric key.
    pub key: String,
    /// Lowest step.
    pub min_step: Option<i64>,
    /// Highest step.
    pub max_step: Option<i64>,
    /// Most buckets, 1 to [`MAX_BUCKETS`].
    pub max_points: usize,
}

impl DownsampleRequest {
    /// The whole series of `key` in `run` in at most `max_points` buckets.
    pub fn new(run: impl Into<String>, key: impl Into<String>, max_points: usize) -> Self {
        Self { run: run.into(), key: key.into(), min_step: None, max_step: None, max_points }
    }

    /// Only steps in `[min, max]`.
    pub fn steps(mut self, min: i64, max: i64) -> Self {
        self.min_step = Some(min);
        self.max_step = Some(max);
        self
    }
}

/// The points of one bucket of a downsampled read. Buckets without points are left out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The bucket's first step.
    pub start_step: i64,
    /// The bucket's last step (inclusive).
    pub end_step: i64,
    /// Points in the bucket.
    pub count: u64,
    /// Points whose value is NaN (left out of `min`, `max` and `mean`).
    pub nan_count: u64,
    /// Smallest value other than NaN; NaN if every value is.
    pub min: f64,
    /// Largest value other than NaN; NaN if every value is.
    pub max: f64,
    /// Mean of the values other than NaN; NaN if every value is.
    pub mean: f64,
    /// Step of the bucket's last point (highest step, last logged).
    pub last_step: i64,
    /// Value of the bucket's last point.
    pub last: f64,
}

/// The latest point of one metric of a run, kept on write.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestValue {
    /// The metric key.
    pub key: String,
    /// The point with the highest step (of those, the last logged).
    pub point: Point,
    /// Points the series holds.
    pub points: u64,
}

/// One run's downsampled series in [`Metrics::compare`](super::Metrics::compare).
#[derive(Debug, Clone, PartialEq)]
pub struct RunSeries {
    /// The run.
    pub run: String,
    /// Its buckets (empty if the run has no such metric).
    pub buckets: Vec<Bucket>,
}

/// What [`Metrics::expire_before`](super::Metrics::expire_before) or
/// [`Metrics::delete_run`](super::Metrics::delete_run) removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemovedReport {
    /// Blocks removed.
    pub blocks: u64,
    /// Points in them.
    pub points: u64,
    /// Series left with no points, and removed.
    pub series: u64,
}
