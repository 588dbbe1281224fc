//! Run metrics as the `/v1/runs/{run}/metrics` and `/v1/metrics` routes call them: the [`RunMetricsApi`]
//! trait, implemented by the embedded store's [`Metrics`] (series in compressed blocks of the data
//! directory's database, `docs/metrics.md`) and by the PostgreSQL backend's
//! [`PostgresRunMetrics`](super::PostgresRunMetrics) (one row per point). Answers are the store's model
//! types and [`MetricsError`], so that one mapping turns failures into problem documents.
//!
//! Every method blocks: callers run them on tokio's blocking pool.

use std::sync::Arc;

use cairn_store::metrics::{
    Bucket, DownsampleRequest, HistoryPage, HistoryRequest, LatestValue, LogReceipt, MetricPoint, Metrics,
    MetricsError, RemovedReport, RunSeries,
};

/// The operations of a metrics store, as [`Metrics`]' methods of the same names (see them for what each
/// does and how it fails).
pub trait RunMetricsApi: Send + Sync + 'static {
    /// Writes a batch of points of any keys of one run in one durable commit.
    fn log(&self, run: &str, points: &[MetricPoint]) -> Result<LogReceipt, MetricsError>;
    /// A page of one series' points by step and/or time range.
    fn history(&self, req: &HistoryRequest) -> Result<HistoryPage, MetricsError>;
    /// The latest point of every metric of a run, kept on write.
    fn latest(&self, run: &str) -> Result<Vec<LatestValue>, MetricsError>;
    /// The latest point of one metric in each of several runs.
    fn latest_of(&self, runs: &[String], key: &str) -> Result<Vec<(String, Option<LatestValue>)>, MetricsError>;
    /// One series in at most `max_points` buckets.
    fn downsample(&self, req: &DownsampleRequest) -> Result<Vec<Bucket>, MetricsError>;
    /// One metric of several runs, each downsampled.
    fn compare(&self, runs: &[String], req: &DownsampleRequest) -> Result<Vec<RunSeries>, MetricsError>;
    /// Removes every metric of a run.
    fn delete_run(&self, run: &str) -> Result<RemovedReport, MetricsError>;
    /// Retention: removes the points older than `cutoff_ms` in the runs `selected` accepts (the embedded
    /// store removes whole blocks, those whose newest point is older).
    fn expire_runs_before(
        &self,
        cutoff_ms: i64,
        selected: &dyn Fn(&str) -> bool,
    ) -> Result<RemovedReport, MetricsError>;
}

impl RunMetricsApi for Metrics {
    fn log(&self, run: &str, points: &[MetricPoint]) -> Result<LogReceipt, MetricsError> {
        Metrics::log(self, run, points)
    }
    fn history(&self, req: &HistoryRequest) -> Result<HistoryPage, MetricsError> {
        Metrics::history(self, req)
    }
    fn latest(&self, run: &str) -> Result<Vec<LatestValue>, MetricsError> {
        Metrics::latest(self, run)
    }
    fn latest_of(&self, runs: &[String], key: &str) -> Result<Vec<(String, Option<LatestValue>)>, MetricsError> {
        Metrics::latest_of(self, runs, key)
    }
    fn downsample(&self, req: &DownsampleRequest) -> Result<Vec<Bucket>, MetricsError> {
        Metrics::downsample(self, req)
    }
    fn compare(&self, runs: &[String], req: &DownsampleRequest) -> Result<Vec<RunSeries>, MetricsError> {
        Metrics::compare(self, runs, req)
    }
    fn delete_run(&self, run: &str) -> Result<RemovedReport, MetricsError> {
        Metrics::delete_run(self, run)
    }
    fn expire_runs_before(
        &self,
        cutoff_ms: i64,
        selected: &dyn Fn(&str) -> bool,
    ) -> Result<RemovedReport, MetricsError> {
        Metrics::expire_runs_before(self, cutoff_ms, selected)
    }
}

/// A metrics store as the server holds it. Cheap to clone.
pub type RunMetricsStore = Arc<dyn RunMetricsApi>;
