//! Prometheus text exposition, written by hand: requests by route, method and status, latency histograms
//! by route, shed and timed-out requests, and the engine's figures.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram: counts per bucket (not cumulative), total count and sum.
#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            if let Some(slot) = self.buckets.get_mut(i) {
                *slot += 1;
            }
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Requests shed with 503 because the concurrency limit was reached.
    pub shed: AtomicU64,
    /// Requests answered 503 because they took longer than the timeout.
    pub timeouts: AtomicU64,
}

impl Metrics {
    /// Counts one request to `route` and its latency.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut requests = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *requests.entry((route.to_owned(), method.to_owned(), status)).or_default() += 1;
        drop(requests);
        let mut latency = self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        latency.entry(route.to_owned()).or_default().observe(elapsed.as_secs_f64());
    }

    /// The exposition text, with the engine's figures from `stats`.
    pub fn render(&self, stats: &cairn_engine::Stats) -> String {
        let mut out = String::new();
        out.push_str("# HELP cairn_http_requests_total HTTP requests answered, by route, method and status.\n");
        out.push_str("# TYPE cairn_http_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for ((route, method, status), n) in &requests {
            let _ = writeln!(
                out,
                "cairn_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP cairn_http_request_duration_seconds Time to answer a request, by route.\n");
        out.push_str("# TYPE cairn_http_request_duration_seconds histogram\n");
        let latency = self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for (route, h) in &latency {
            let route = escape(route);
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "cairn_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "cairn_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "cairn_http_request_duration_seconds_sum{{route=\"{route}\"}} {}", h.sum_seconds);
            let _ = writeln!(out, "cairn_http_request_duration_seconds_count{{route=\"{route}\"}} {}", h.count);
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        counter(
            &mut out,
            "cairn_http_shed_total",
            "Requests shed with 503 at the concurrency limit.",
            self.shed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cairn_http_timeouts_total",
            "Requests answered 503 after the request timeout.",
            self.timeouts.load(Ordering::Relaxed),
        );
        out.push_str("# HELP cairn_level_bytes Bytes of tables per level.\n# TYPE cairn_level_bytes gauge\n");
        for (level, l) in stats.levels.iter().enumerate() {
            let _ = writeln!(out, "cairn_level_bytes{{level=\"{level}\"}} {}", l.bytes);
        }
        out.push_str("# HELP cairn_level_tables Tables per level.\n# TYPE cairn_level_tables gauge\n");
        for (level, l) in stats.levels.iter().enumerate() {
            let _ = writeln!(out, "cairn_level_tables{{level=\"{level}\"}} {}", l.tables);
        }
        gauge(&mut out, "cairn_memtable_bytes", "Approximate bytes in the active memtable.", stats.memtable_bytes);
        gauge(&mut out, "cairn_last_sequence", "Sequence number of the newest commit.", stats.last_sequence);
        counter(&mut out, "cairn_commits_total", "Commits since open.", stats.commits);
        counter(&mut out, "cairn_wal_syncs_total", "WAL syncs since open.", stats.wal_syncs);
        counter(&mut out, "cairn_wal_bytes_total", "Bytes appended to the WAL since open.", stats.wal_bytes_written);
        counter(&mut out, "cairn_flushes_total", "Memtable flushes since open.", stats.flushes);
        counter(&mut out, "cairn_compactions_total", "Compactions since open.", stats.compactions);
        counter(
            &mut out,
            "cairn_compaction_bytes_written_total",
            "Bytes written by compactions.",
            stats.compaction_bytes_written,
        );
        counter(
            &mut out,
            "cairn_write_stall_micros_total",
            "Microseconds writers waited on flushes and compactions.",
            stats.write_stall_micros,
        );
        counter(&mut out, "cairn_cache_hits_total", "Block cache hits.", stats.cache_hits);
        counter(&mut out, "cairn_cache_misses_total", "Block cache misses.", stats.cache_misses);
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Middleware: counts every request by its route pattern (`unmatched` when no route matched).
pub async fn track(State(metrics): State<std::sync::Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    metrics.record(&route, &method, resp.status().as_u16(), start.elapsed());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.record("/v1/x/{id}", "GET", 200, Duration::from_micros(300));
        m.record("/v1/x/{id}", "GET", 200, Duration::from_millis(30));
        m.record("/v1/x/{id}", "GET", 404, Duration::from_secs(60));
        let text = m.render(&cairn_engine::Stats::default());
        assert!(text.contains("cairn_http_requests_total{route=\"/v1/x/{id}\",method=\"GET\",status=\"200\"} 2\n"));
        assert!(text.contains("cairn_http_requests_total{route=\"/v1/x/{id}\",method=\"GET\",status=\"404\"} 1\n"));
        assert!(text.contains("cairn_http_request_duration_seconds_bucket{route=\"/v1/x/{id}\",le=\"0.0005\"} 1\n"));
        assert!(text.contains("cairn_http_request_duration_seconds_bucket{route=\"/v1/x/{id}\",le=\"0.05\"} 2\n"));
        assert!(text.contains("cairn_http_request_duration_seconds_bucket{route=\"/v1/x/{id}\",le=\"10\"} 2\n"));
        assert!(text.contains("cairn_http_request_duration_seconds_bucket{route=\"/v1/x/{id}\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("cairn_http_request_duration_seconds_count{route=\"/v1/x/{id}\"} 3\n"));
        assert!(text.contains("# TYPE cairn_wal_syncs_total counter\ncairn_wal_syncs_total 0\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
