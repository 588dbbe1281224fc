//! Prometheus metrics, kept and written by `prometheus-client`: requests by route, method and status,
//! latency histograms by route, shed and timed-out requests, and the engine's figures at scrape time.
//!
//! Every label comes from a bounded set, so no client can grow the exposition: `route` is a route pattern
//! of the router (or `unmatched`), `method` one of the methods HTTP defines (or `OTHER`), `status` a
//! status code.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::replicate::ReplicaStatus;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The `Content-Type` of [`Metrics::render`]'s text: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A request's method as a label: the methods HTTP defines, anything else `OTHER`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms, reason = "label values are the methods' names")]
enum MethodLabel {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    PATCH,
    OPTIONS,
    CONNECT,
    TRACE,
    OTHER,
}

impl From<&Method> for MethodLabel {
    fn from(m: &Method) -> Self {
        match *m {
            Method::GET => Self::GET,
            Method::HEAD => Self::HEAD,
            Method::POST => Self::POST,
            Method::PUT => Self::PUT,
            Method::DELETE => Self::DELETE,
            Method::PATCH => Self::PATCH,
            Method::OPTIONS => Self::OPTIONS,
            Method::CONNECT => Self::CONNECT,
            Method::TRACE => Self::TRACE,
            _ => Self::OTHER,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: MethodLabel,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabels {
    level: usize,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The server's counters.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    /// Requests shed with 503 because the concurrency limit was reached.
    pub shed: AtomicU64,
    /// Requests answered 503 because they took longer than the timeout.
    pub timeouts: AtomicU64,
    /// The replication targets the server runs (`[[replicate]]`).
    replicas: std::sync::Mutex<Vec<Arc<ReplicaStatus>>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: LatencyFamily = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register(
            "cairn_http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register("cairn_http_request_duration_seconds", "Time to answer a request, by route", latency.clone());
        Self {
            registry,
            requests,
            latency,
            shed: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            replicas: std::sync::Mutex::default(),
        }
    }
}

impl Metrics {
    /// Counts one request to the route pattern `route` (`unmatched` if none), and its latency.
    pub fn record(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let route = route.to_owned();
        let labels = RequestLabels { route: route.clone(), method: method.into(), status };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&RouteLabels { route }).observe(elapsed.as_secs_f64());
    }

    /// Shows the state of these replication targets from now on.
    pub fn watch_replicas(&self, replicas: Vec<Arc<ReplicaStatus>>) {
        *self.replicas.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = replicas;
    }

    /// The exposition text ([`CONTENT_TYPE`]), with the backend's figures: the engine's counters (embedded
    /// backend), the change feed's (its size, trimming, each durable consumer's lag: consumer names are
    /// registered by the store's users, a bounded set), the replication targets' lag among them, and the
    /// calls the backend shed.
    pub fn render(&self, figures: &crate::backend::Figures) -> String {
        let feed = figures.feed.as_ref();
        let replicas = self.replicas.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let replicas = replicas
            .iter()
            .map(|r| {
                let consumer = feed.and_then(|f| f.consumers.iter().find(|c| c.name == r.consumer));
                Replica {
                    name: r.name.clone(),
                    up: r.up.load(Ordering::Acquire),
                    failures: r.failures.load(Ordering::Relaxed),
                    lag: consumer.map_or_else(|| feed.map_or(0, |f| f.last_change), |c| c.lag_seqs),
                }
            })
            .collect();
        let mut now = Registry::default();
        now.register_collector(Box::new(Figures {
            feed: feed.cloned(),
            stats: figures.engine.clone(),
            last_sequence: figures.last_sequence,
            shed: self.shed.load(Ordering::Relaxed) + figures.shed,
            timeouts: self.timeouts.load(Ordering::Relaxed),
            replicas,
            blobs: figures.blobs.clone(),
            queues: figures.queues.clone().unwrap_or_default(),
        }));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &now);
        out
    }
}

/// One figure of a level of tables.
type LevelFigure = fn(&cairn_engine::LevelStats) -> u64;

/// The figures read at scrape time: the shedding counters, the engine's, and the replication targets'.
#[derive(Debug)]
struct Figures {
    stats: Option<cairn_engine::Stats>,
    last_sequence: u64,
    feed: Option<cairn_store::FeedStats>,
    shed: u64,
    timeouts: u64,
    replicas: Vec<Replica>,
    blobs: Option<cairn_store::artifacts::BlobHealth>,
    queues: Vec<(String, cairn_store::queue::QueueCounts)>,
}

/// One figure of a replication target.
type ReplicaFigure = fn(&Replica) -> i64;

/// A replication target at scrape time.
#[derive(Debug)]
struct Replica {
    name: String,
    up: bool,
    failures: u64,
    /// Sequence numbers from its consumer's acknowledged change to the feed's newest.
    lag: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = [
            ("cairn_http_shed", "Requests shed with 503 at the concurrency limit", self.shed),
            ("cairn_http_timeouts", "Requests answered 503 after the request timeout", self.timeouts),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let gauge = ConstGauge::new(self.last_sequence as i64);
        gauge.encode(encoder.encode_descriptor(
            "cairn_last_sequence",
            "Sequence number of the newest commit",
            None,
            gauge.metric_type(),
        )?)?;
        if let Some(s) = &self.stats {
            encode_engine(&mut encoder, s)?;
        }
        if !self.replicas.is_empty() {
            let per_target: [(&str, &str, ReplicaFigure); 2] = [
                (
                    "cairn_replica_up",
                    "Whether the replication target's exporter runs without error (1) or is retrying (0)",
                    |r| i64::from(r.up),
                ),
                ("cairn_replica_lag_sequence", "Sequence numbers from the change the replication target acknowledged last to the feed's newest (0: caught up)", |r| r.lag as i64),
            ];
            for (name, help, value) in per_target {
                let mut family =
                    encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
                for r in &self.replicas {
                    ConstGauge::new(value(r))
                        .encode(family.encode_family(&TargetLabels { target: r.name.clone() })?)?;
                }
            }
            let mut family = encoder.encode_descriptor(
                "cairn_replica_failures",
                "Failed attempts of the replication target's exporter",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for r in &self.replicas {
                ConstCounter::new(r.failures)
                    .encode(family.encode_family(&TargetLabels { target: r.name.clone() })?)?;
            }
        }
        if let Some(feed) = &self.feed {
            encode_feed(&mut encoder, feed)?;
        }
        if let Some(blobs) = &self.blobs {
            encode_blobs(&mut encoder, blobs)?;
        }
        if !self.queues.is_empty() {
            encode_queues(&mut encoder, &self.queues)?;
        }
        Ok(())
    }
}

/// The blob store's figures (the artifact store's, `<data dir>/blobs`).
fn encode_blobs(
    encoder: &mut DescriptorEncoder,
    b: &cairn_store::artifacts::BlobHealth,
) -> Result<(), std::fmt::Error> {
    let gauges = [
        ("cairn_blob_files", "Blob files of the artifact store", b.files as i64),
        ("cairn_blob_disk_bytes", "Bytes of the blob files on disk", b.disk_bytes as i64),
        ("cairn_blob_live_bytes", "Bytes of the blob files that objects and parts use, as of the last garbage collection", b.live_bytes as i64),
        (
            "cairn_blob_gc_error",
            "1 if the artifact store's last background run (garbage collection or retention) failed (the error is in /healthz and the log)",
            i64::from(b.last_error.is_some()),
        ),
        (
            "cairn_blob_last_gc_timestamp_ms",
            "When garbage was last collected, in milliseconds since the Unix epoch (0: not yet)",
            b.last_gc_ms.unwrap_or(0),
        ),
    ];
    for (name, help, value) in gauges {
        let gauge = ConstGauge::new(value);
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
    }
    Ok(())
}

/// The labels of a job queue's count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
    state: &'static str,
}

/// The job queues' counts: one gauge per queue and state.
fn encode_queues(
    encoder: &mut DescriptorEncoder,
    queues: &[(String, cairn_store::queue::QueueCounts)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "cairn_queue_jobs",
        "Jobs of the queue in the state (kept on write; finished ones until pruned)",
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (queue, counts) in queues {
        for state in cairn_store::queue::JobState::ALL {
            let labels = QueueLabels { queue: queue.clone(), state: state.as_str() };
            ConstGauge::new(counts.get(state) as i64).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The embedded engine's figures.
fn encode_engine(encoder: &mut DescriptorEncoder, s: &cairn_engine::Stats) -> Result<(), std::fmt::Error> {
    let counters = [
        ("cairn_commits", "Commits since open", s.commits),
        ("cairn_wal_syncs", "WAL syncs since open", s.wal_syncs),
        ("cairn_wal_bytes", "Bytes appended to the WAL since open", s.wal_bytes_written),
        ("cairn_flushes", "Memtable flushes since open", s.flushes),
        ("cairn_compactions", "Compactions since open", s.compactions),
        ("cairn_compaction_bytes_written", "Bytes written by compactions", s.compaction_bytes_written),
        ("cairn_write_stall_micros", "Microseconds writers waited on flushes and compactions", s.write_stall_micros),
        ("cairn_cache_hits", "Block cache hits", s.cache_hits),
        ("cairn_cache_misses", "Block cache misses", s.cache_misses),
    ];
    for (name, help, value) in counters {
        let counter = ConstCounter::new(value);
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
    }
    let gauges = [("cairn_memtable_bytes", "Approximate bytes in the active memtable", s.memtable_bytes)];
    for (name, help, value) in gauges {
        let gauge = ConstGauge::new(value as i64);
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
    }
    let per_level: [(&str, &str, LevelFigure); 2] = [
        ("cairn_level_bytes", "Bytes of tables per level", |l| l.bytes),
        ("cairn_level_tables", "Tables per level", |l| l.tables as u64),
    ];
    for (name, help, value) in per_level {
        let mut family = encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
        for (level, l) in s.levels.iter().enumerate() {
            let labels = LevelLabels { level };
            ConstGauge::new(value(l) as i64).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The change feed's figures.
fn encode_feed(encoder: &mut DescriptorEncoder, f: &cairn_store::FeedStats) -> Result<(), std::fmt::Error> {
    let counters = [
        ("cairn_changes_trimmed_events", "Change events trimmed since open", f.trimmed_events),
        ("cairn_changes_trims", "Trims of the change feed since open", f.trims),
        ("cairn_changes_trim_errors", "Trims of the change feed that failed since open", f.trim_errors),
    ];
    for (name, help, value) in counters {
        let counter = ConstCounter::new(value);
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
    }
    let trimmed_consumers = f.consumers.iter().filter(|c| c.trimmed).count() as u64;
    let gauges = [
        ("cairn_changes_bytes", "Bytes (keys and values) of the change events kept", f.bytes),
        ("cairn_changes_trimmed_through", "Highest commit sequence trimmed from the change feed", f.trimmed_through),
        (
            "cairn_changes_trimmed_consumers",
            "Durable consumers that lagged so far that changes they had not acknowledged were trimmed",
            trimmed_consumers,
        ),
    ];
    for (name, help, value) in gauges {
        let gauge = ConstGauge::new(value as i64);
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
    }
    type ConsumerFigure = fn(&cairn_store::ConsumerLag) -> u64;
    let per_consumer: [(&str, &str, ConsumerFigure); 2] = [
        ("cairn_changes_consumer_lag", "Commit sequences between a consumer's cursor and the newest commit", |c| {
            c.lag_seqs
        }),
        ("cairn_changes_consumer_trimmed", "1 if changes a consumer had not acknowledged were trimmed", |c| {
            u64::from(c.trimmed)
        }),
    ];
    for (name, help, value) in per_consumer {
        let mut family = encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
        for c in &f.consumers {
            let labels = ConsumerLabels { consumer: c.name.clone() };
            ConstGauge::new(value(c) as i64).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Middleware (run by the router's one layer): counts every request by its route pattern (`unmatched`
/// when no route matched), with the latency of `inner`, which answers it.
pub async fn track<F: Future<Output = Response>>(
    metrics: &Metrics,
    req: Request,
    inner: impl FnOnce(Request) -> F,
) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = req.method().clone();
    let start = Instant::now();
    let resp = inner(req).await;
    metrics.record(&route, &method, resp.status().as_u16(), start.elapsed());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Figures as BackendFigures;

    fn engine_only() -> BackendFigures {
        BackendFigures { engine: Some(cairn_engine::Stats::default()), ..BackendFigures::default() }
    }

    fn with_feed(feed: cairn_store::FeedStats) -> BackendFigures {
        BackendFigures { feed: Some(feed), ..engine_only() }
    }

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.record("/v1/x/{id}", &Method::GET, 200, Duration::from_micros(300));
        m.record("/v1/x/{id}", &Method::GET, 200, Duration::from_millis(30));
        m.record("/v1/x/{id}", &Method::GET, 404, Duration::from_secs(60));
        let text = m.render(&engine_only());
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

    /// Methods a client makes up all count as `OTHER`: the exposition does not grow with them.
    #[test]
    fn unknown_methods_share_one_label() {
        let m = Metrics::default();
        for i in 0..100 {
            let method = Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
            m.record("unmatched", &method, 405, Duration::from_millis(1));
        }
        m.record("unmatched", &Method::GET, 404, Duration::from_millis(1));
        let text = m.render(&engine_only());
        assert!(
            text.contains("cairn_http_requests_total{route=\"unmatched\",method=\"OTHER\",status=\"405\"} 100\n"),
            "{text}"
        );
        assert!(!text.contains("BREW"), "{text}");
        let series = text.lines().filter(|l| l.starts_with("cairn_http_requests_total")).count();
        assert_eq!(series, 2, "{text}");
    }

    #[test]
    fn shows_the_blob_store() {
        let health = cairn_store::artifacts::BlobHealth {
            files: 3,
            disk_bytes: 4096,
            live_bytes: 1000,
            last_gc_ms: Some(1_700_000_000_000),
            last_error: Some("disk full".into()),
        };
        let text = Metrics::default().render(&BackendFigures { blobs: Some(health), ..engine_only() });
        assert!(text.contains("cairn_blob_files 3\n"), "{text}");
        assert!(text.contains("cairn_blob_disk_bytes 4096\n"), "{text}");
        assert!(text.contains("cairn_blob_live_bytes 1000\n"), "{text}");
        assert!(text.contains("cairn_blob_gc_error 1\n"), "{text}");
        assert!(text.contains("cairn_blob_last_gc_timestamp_ms 1700000000000\n"), "{text}");
        assert!(!Metrics::default().render(&engine_only()).contains("cairn_blob_"));
    }

    /// A consumer that fell too far behind is trimmed past, and the exposition says so.
    #[test]
    fn shows_the_feed_and_trimmed_consumers() {
        let dir = tempfile::tempdir().unwrap();
        let opts = cairn_store::StoreOptions::default()
            .change_retention_bytes(1)
            .max_consumer_lag_bytes(1)
            .change_trim_interval(Duration::ZERO);
        let store = cairn_store::Store::with_db(cairn_engine::Db::open(dir.path()).unwrap(), opts).unwrap();
        store.declare(cairn_store::CollectionSpec::new("c", vec![])).unwrap();
        store.register_consumer("replica", 0).unwrap();
        let c = store.collection_dyn("c").unwrap();
        c.insert("a", serde_json::json!({"x": 1})).unwrap();
        c.insert("b", serde_json::json!({"x": 2})).unwrap();
        let m = Metrics::default();
        let before = m.render(&with_feed(store.feed_stats().unwrap()));
        assert!(before.contains("cairn_changes_trimmed_consumers 0\n"), "{before}");
        assert!(before.contains("cairn_changes_consumer_trimmed{consumer=\"replica\"} 0\n"), "{before}");
        store.trim_changes().unwrap();
        let text = m.render(&with_feed(store.feed_stats().unwrap()));
        assert!(text.contains("cairn_changes_trimmed_consumers 1\n"), "{text}");
        assert!(text.contains("cairn_changes_consumer_trimmed{consumer=\"replica\"} 1\n"), "{text}");
        assert!(text.contains("cairn_changes_trimmed_events_total 2\n"), "{text}");
        assert!(text.contains("cairn_changes_bytes 0\n"), "{text}");
    }
}
