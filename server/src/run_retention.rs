//! Retention of run metrics while the server runs (`[run_metrics]`, [`RunMetricsSettings`]): every
//! `retention_interval_secs`, the metrics' blocks whose newest point is older than its run's retention are
//! removed (on PostgreSQL, the points that are older). A run's retention is its experiment's
//! (`experiment_retention_days`, the run found through its record in collection `runs` and that record's
//! `experiment_id`), else `retention_days`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use cairn_store::metrics::RemovedReport;
use cairn_store::Query;
use serde_json::Value;
use tokio::sync::watch;

use crate::backend::Backend;
use crate::http::RunMetricsSettings;
use crate::problem::ApiError;

/// The collection of runs, whose records name their experiment.
const RUNS: &str = "runs";
const DAY_MS: i64 = 24 * 3600 * 1000;

/// The ids of the runs of `experiment` (none if collection `runs` does not exist).
async fn runs_of(backend: &dyn Backend, experiment: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let query = Query::new().eq("experiment_id", Value::from(experiment)).limit(1000).after(cursor);
        let page = match backend.query(RUNS.to_owned(), query).await {
            Ok(p) => p,
            Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(out),
            Err(e) => return Err(e),
        };
        out.extend(page.records.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// One pass of retention at `now_ms`: what it removed.
pub async fn expire_once(
    backend: &Arc<dyn Backend>,
    settings: &RunMetricsSettings,
    now_ms: i64,
) -> Result<RemovedReport, ApiError> {
    // The cutoff of each run whose experiment has a retention of its own.
    let mut own: HashMap<String, i64> = HashMap::new();
    for (experiment, days) in &settings.experiment_retention_days {
        let cutoff = now_ms.saturating_sub(i64::from(*days) * DAY_MS);
        for run in runs_of(&**backend, experiment).await? {
            own.insert(run, cutoff);
        }
    }
    let global = settings.retention_days.map(|d| now_ms.saturating_sub(i64::from(d) * DAY_MS));
    let backend = backend.clone();
    tokio::task::spawn_blocking(move || {
        let metrics = backend.run_metrics()?;
        let problem = crate::http::run_metrics_problem;
        let mut total = RemovedReport::default();
        let mut add = |r: RemovedReport| {
            total.blocks += r.blocks;
            total.points += r.points;
            total.series += r.series;
        };
        let mut cutoffs: Vec<i64> = own.values().copied().collect();
        cutoffs.sort_unstable();
        cutoffs.dedup();
        for cutoff in cutoffs {
            add(metrics.expire_runs_before(cutoff, &|run| own.get(run) == Some(&cutoff)).map_err(problem)?);
        }
        if let Some(cutoff) = global {
            add(metrics.expire_runs_before(cutoff, &|run| !own.contains_key(run)).map_err(problem)?);
        }
        Ok(total)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("retention task failed: {e}")))?
}

/// Runs [`expire_once`] every `retention_interval_secs` until `stop` turns true; nothing when no retention
/// is configured. Failures are logged and tried again at the next interval.
pub fn start(
    backend: Arc<dyn Backend>,
    settings: RunMetricsSettings,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !settings.enabled() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(settings.retention_interval_secs));
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            match expire_once(&backend, &settings, now as i64).await {
                Ok(r) if r.blocks > 0 => {
                    tracing::info!(blocks = r.blocks, points = r.points, series = r.series, "run metrics expired")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e.detail, "run metrics retention failed; trying again later"),
            }
        }
    }))
}
