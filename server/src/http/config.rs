//! The server's configuration: a TOML file (every key optional), overridden by command-line flags.
//! Documented in `docs/server.md`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::auth::{TokenConfig, Tokens};
use crate::replicate::ReplicateConfig;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid configuration {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The parse error.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default: `127.0.0.1:7070`; `--listen` overrides it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// Bearer tokens. Default: none, which turns authentication off and restricts listening to loopback.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Targets the server replicates the store to while it runs (`[[replicate]]` sections). Default: none.
    #[serde(default)]
    pub replicate: Vec<ReplicateConfig>,
    /// Change-feed retention, applied by `cairn serve` when it opens the data directory.
    #[serde(default)]
    pub changes: ChangeRetention,
    /// Where the records live (`[backend]`). Default: the embedded store of `--data`.
    #[serde(default)]
    pub backend: BackendConfig,
    /// The S3 API of the artifact store (`[s3]`).
    #[serde(default)]
    pub s3: S3Settings,
    /// Where the artifact store keeps its bytes on the PostgreSQL backend (`[artifacts]`).
    #[serde(default)]
    pub artifacts: ArtifactSettings,
    /// The job queue's retention, backoff and maintenance (`[queue]`).
    #[serde(default)]
    pub queue: QueueSettings,
    /// Retention of run metrics (`[run_metrics]`).
    #[serde(default)]
    pub run_metrics: RunMetricsSettings,
}

/// Retention of run metrics (`[run_metrics]`; see `docs/metrics.md`): points older than a number of days
/// are removed in the background, for every run or per experiment (the runs whose record in collection
/// `runs` has that `experiment_id`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RunMetricsSettings {
    /// Days points are kept, for runs of experiments without a retention of their own. Default: none
    /// (kept until deleted).
    pub retention_days: Option<u32>,
    /// Days points are kept for the runs of each experiment named (`[run_metrics.experiment_retention_days]`,
    /// experiment id = days), instead of `retention_days`.
    pub experiment_retention_days: std::collections::BTreeMap<String, u32>,
    /// How often retention runs, in seconds. Default: 3600.
    pub retention_interval_secs: u64,
}

impl Default for RunMetricsSettings {
    fn default() -> Self {
        Self {
            retention_days: None,
            experiment_retention_days: std::collections::BTreeMap::new(),
            retention_interval_secs: 3600,
        }
    }
}

impl RunMetricsSettings {
    /// Whether any retention is configured.
    pub fn enabled(&self) -> bool {
        self.retention_days.is_some() || !self.experiment_retention_days.is_empty()
    }
}

/// The job queue (`[queue]`; see `docs/queue.md`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Completed jobs are deleted this many seconds after they finished. Default: 3600.
    pub completed_retention_secs: u64,
    /// Discarded and cancelled jobs are deleted this many seconds after they finished. Default: 604800 (7
    /// days).
    pub discarded_retention_secs: u64,
    /// How often the server promotes due jobs, rescues expired leases and prunes old jobs, in milliseconds.
    /// Default: 1000.
    pub maintenance_interval_ms: u64,
    /// The backoff of failed jobs (`[queue.backoff]`: `constant_ms`, `unit_ms`, `exponent`, `max_ms`,
    /// `jitter`). Default: Oban's, attempt⁴ + 15 s plus up to 10% jitter.
    pub backoff: cairn_store::queue::Backoff,
    /// Backoffs of single queues (`[queue.backoffs.<queue>]`), overriding `backoff`.
    pub backoffs: std::collections::BTreeMap<String, cairn_store::queue::Backoff>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            completed_retention_secs: 3600,
            discarded_retention_secs: 7 * 24 * 3600,
            maintenance_interval_ms: 1000,
            backoff: cairn_store::queue::Backoff::default(),
            backoffs: std::collections::BTreeMap::new(),
        }
    }
}

impl QueueSettings {
    /// Refuses a zero maintenance interval, a backoff with negative times or a jitter outside 0 to 1, and
    /// a backoff for a name that cannot be a queue's.
    fn validate(&self) -> Result<(), String> {
        if self.maintenance_interval_ms == 0 {
            return Err("queue.maintenance_interval_ms must be at least 1".into());
        }
        let named = std::iter::once(("queue.backoff".to_owned(), &self.backoff))
            .chain(self.backoffs.iter().map(|(q, b)| (format!("queue.backoffs.{q}"), b)));
        for (name, b) in named {
            if b.constant_ms < 0 || b.unit_ms < 0 || b.max_ms < 0 {
                return Err(format!("{name}: constant_ms, unit_ms and max_ms must not be negative"));
            }
            if !(0.0..=1.0).contains(&b.jitter) {
                return Err(format!("{name}: jitter must be between 0 and 1"));
            }
        }
        for q in self.backoffs.keys() {
            cairn_store::queue::check_queue(q).map_err(|e| format!("queue.backoffs.{q}: {e}"))?;
        }
        Ok(())
    }

    /// The queue options these settings give.
    pub fn options(&self) -> cairn_store::queue::QueueOptions {
        let mut opts = cairn_store::queue::QueueOptions::default()
            .completed_retention(std::time::Duration::from_secs(self.completed_retention_secs))
            .discarded_retention(std::time::Duration::from_secs(self.discarded_retention_secs))
            .maintenance_interval(std::time::Duration::from_millis(self.maintenance_interval_ms))
            .backoff(self.backoff.clone());
        for (queue, backoff) in &self.backoffs {
            opts = opts.queue_backoff(queue, backoff.clone());
        }
        opts
    }
}

/// The artifact store on the PostgreSQL backend (`[artifacts]`; see `docs/server.md`): its metadata are
/// tables of the backend's database, its bytes objects of an object store. Without `objects` that backend
/// runs without an artifact store (no S3 listener, `/v1/artifacts` answers 501). The embedded backend keeps
/// its bytes in `<data dir>/blobs` and refuses `objects`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactSettings {
    /// Where the bytes go: `s3://bucket/prefix` or `file:///absolute/dir`; `--artifact-objects` overrides
    /// it. Default: none.
    pub objects: Option<String>,
    /// An S3-compatible server's endpoint (`http://127.0.0.1:9000`). Default: AWS (or `AWS_ENDPOINT`).
    pub endpoint: Option<String>,
    /// The S3 region. Default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// The access key id. Default: `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// The secret access key. Default: `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// Stored bytes younger than this many seconds are never garbage-collected (longer than any upload takes
    /// from its first byte to its commit, on any server), and unreferenced bytes are deleted this long after a
    /// collection first found them so (longer than any read). Default: 3600.
    pub gc_grace_secs: u64,
    /// How often each server expires objects and collects garbage (one server at a time collects), in
    /// seconds; 0 never. Default: 60.
    pub maintenance_interval_secs: u64,
}

impl Default for ArtifactSettings {
    fn default() -> Self {
        Self {
            objects: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            gc_grace_secs: 3600,
            maintenance_interval_secs: 60,
        }
    }
}

/// The S3 API of the artifact store (`[s3]`; see `docs/server.md`, "The S3 API"): its own listener, beside
/// the HTTP API's.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// Whether `cairn serve` answers the S3 API. Default: on when the server has an artifact store: with the
    /// embedded backend, and with the PostgreSQL backend when `[artifacts] objects` is set (without it, off,
    /// and `true` is refused at start).
    pub enabled: Option<bool>,
    /// Address of the S3 listener; `--s3-listen` overrides it. Default: `127.0.0.1:9000`. Without tokens it
    /// must be a loopback address, as `listen`.
    pub listen: SocketAddr,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self { enabled: None, listen: SocketAddr::from(([127, 0, 0, 1], 9000)) }
    }
}

/// The storage backend (`[backend]`; see `docs/server.md`): the embedded store of the data directory, or a
/// PostgreSQL database that several servers may share.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// `postgres://user@host:port/database` for the PostgreSQL backend; `--backend` overrides it. Default:
    /// none, the embedded store.
    pub url: Option<String>,
    /// The PostgreSQL schema of the tables (created if missing). Default: `public`, where `cairn export
    /// postgres` writes by default.
    pub schema: String,
    /// Connections to PostgreSQL this server keeps. Default: 16.
    pub pool_size: usize,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self { url: None, schema: "public".to_owned(), pool_size: 16 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            limits: Limits::default(),
            tokens: Vec::new(),
            replicate: Vec::new(),
            changes: ChangeRetention::default(),
            backend: BackendConfig::default(),
            s3: S3Settings::default(),
            artifacts: ArtifactSettings::default(),
            queue: QueueSettings::default(),
            run_metrics: RunMetricsSettings::default(),
        }
    }
}

/// How long and how much of the change feed is kept (`[changes]`; see `docs/server.md`). The store trims it
/// in the background: changes older than `retention_secs`, and the oldest changes while the feed holds more
/// than `retention_bytes`, unless a durable consumer has not acknowledged them and lags by at most
/// `max_consumer_lag_bytes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangeRetention {
    /// Age after which changes are trimmed, in seconds. Default: 604 800 (7 days).
    pub retention_secs: u64,
    /// Most bytes of change events kept. Default: 1 GiB.
    pub retention_bytes: u64,
    /// A consumer further behind than this many bytes of the feed no longer holds trimming back. Default:
    /// 4 GiB.
    pub max_consumer_lag_bytes: u64,
    /// How often the feed is trimmed, in milliseconds. Default: 10 000.
    pub trim_interval_ms: u64,
}

impl Default for ChangeRetention {
    fn default() -> Self {
        Self {
            retention_secs: 7 * 24 * 3600,
            retention_bytes: 1 << 30,
            max_consumer_lag_bytes: 4 << 30,
            trim_interval_ms: 10_000,
        }
    }
}

impl ChangeRetention {
    /// These settings applied to `opts`.
    pub fn apply(&self, opts: cairn_store::StoreOptions) -> cairn_store::StoreOptions {
        opts.change_retention(Duration::from_secs(self.retention_secs))
            .change_retention_bytes(self.retention_bytes)
            .max_consumer_lag_bytes(self.max_consumer_lag_bytes)
            .change_trim_interval(Duration::from_millis(self.trim_interval_ms))
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}

/// Limits on requests. Every field has a default; see `docs/server.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, in bytes; larger ones are answered 413. Default: 1 MiB.
    pub max_body_bytes: usize,
    /// Time a request may take before it is answered 503. Default: 30 000 ms.
    pub request_timeout_ms: u64,
    /// Requests handled at once, and engine tasks running at once (a timed-out request's task counts until it
    /// ends); more are shed with 503 and `Retry-After`. Default: 256.
    pub max_concurrency: usize,
    /// Largest page of a query; larger `limit`s are capped to it. Default: 1000.
    pub max_page: usize,
    /// Page size when a query gives no `limit`. Default: 50.
    pub default_page: usize,
    /// Most operations in one transaction. Default: 1000.
    pub max_transaction_ops: usize,
    /// Longest long-poll wait on the change feed, in milliseconds. Default: 20 000.
    pub max_wait_ms: u64,
    /// Change streams (server-sent events) open at once; more are answered 503. Default: 64.
    pub max_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            request_timeout_ms: 30_000,
            max_concurrency: 256,
            max_page: 1000,
            default_page: 50,
            max_transaction_ops: 1000,
            max_wait_ms: 20_000,
            max_streams: 64,
        }
    }
}

impl Limits {
    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let config: Config = toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.display().to_string(), source: Box::new(source) })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and token entries (each valid, none twice).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let positive = [
            ("max_body_bytes", l.max_body_bytes as u64),
            ("request_timeout_ms", l.request_timeout_ms),
            ("max_concurrency", l.max_concurrency as u64),
            ("max_page", l.max_page as u64),
            ("default_page", l.default_page as u64),
            ("max_transaction_ops", l.max_transaction_ops as u64),
            ("max_streams", l.max_streams as u64),
        ];
        let c = &self.changes;
        let changes = [
            ("retention_secs", c.retention_secs),
            ("retention_bytes", c.retention_bytes),
            ("max_consumer_lag_bytes", c.max_consumer_lag_bytes),
            ("trim_interval_ms", c.trim_interval_ms),
        ];
        if let Some((name, _)) = changes.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("changes.{name} must be at least 1")));
        }
        if self.backend.pool_size == 0 {
            return Err(ConfigError::Invalid("backend.pool_size must be at least 1".into()));
        }
        if self.backend.url.is_some() && !self.replicate.is_empty() {
            return Err(ConfigError::Invalid(
                "[[replicate]] copies the embedded store; with the PostgreSQL backend, use PostgreSQL's own replication"
                    .into(),
            ));
        }
        if self.backend.url.is_none() && self.artifacts.objects.is_some() {
            return Err(ConfigError::Invalid(
                "artifacts.objects (--artifact-objects) is for the PostgreSQL backend: the embedded backend keeps \
                 the artifacts' bytes in <data dir>/blobs"
                    .into(),
            ));
        }
        if self.artifacts.access_key_id.is_some() != self.artifacts.secret_access_key.is_some() {
            return Err(ConfigError::Invalid(
                "artifacts.access_key_id and artifacts.secret_access_key go together".into(),
            ));
        }
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("limits.{name} must be at least 1")));
        }
        if l.max_page > cairn_store::MAX_PAGE {
            return Err(ConfigError::Invalid(format!("limits.max_page must be at most {}", cairn_store::MAX_PAGE)));
        }
        if l.max_wait_ms >= l.request_timeout_ms {
            return Err(ConfigError::Invalid("limits.max_wait_ms must be below limits.request_timeout_ms".into()));
        }
        if l.default_page > l.max_page {
            return Err(ConfigError::Invalid("limits.default_page must not exceed limits.max_page".into()));
        }
        self.queue.validate().map_err(ConfigError::Invalid)?;
        let m = &self.run_metrics;
        if m.retention_days == Some(0) || m.experiment_retention_days.values().any(|d| *d == 0) {
            return Err(ConfigError::Invalid("run_metrics retention days must be at least 1".into()));
        }
        if m.retention_interval_secs == 0 {
            return Err(ConfigError::Invalid("run_metrics.retention_interval_secs must be at least 1".into()));
        }
        for (i, r) in self.replicate.iter().enumerate() {
            r.validate().map_err(ConfigError::Invalid)?;
            if self.replicate.iter().skip(i + 1).any(|o| o.consumer() == r.consumer()) {
                return Err(ConfigError::Invalid(format!("replicate {} is named twice", r.name)));
            }
        }
        Tokens::new(&self.tokens).map(drop).map_err(ConfigError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_bad_values_are_refused() {
        let c: Config = toml::from_str("").unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.limits.max_page, 1000);
        let c: Config = toml::from_str("[limits]\nmax_page = 0").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("max_page"));
        assert!(toml::from_str::<Config>("[limits]\nmax_pages = 3").is_err(), "unknown keys are refused");
        assert_eq!(c.changes.retention_bytes, 1 << 30);
        let c: Config = toml::from_str("[changes]\ntrim_interval_ms = 0").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("changes.trim_interval_ms"));
        let c: Config = toml::from_str("[changes]\nretention_bytes = 65536").unwrap();
        c.validate().unwrap();
        assert_eq!((c.changes.retention_bytes, c.changes.retention_secs), (65536, 7 * 24 * 3600));
        let c: Config = toml::from_str("[[tokens]]\nname = \"x\"\nsha256 = \"abc\"\nrole = \"read\"").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("64 hex"));
        assert!(toml::from_str::<Config>("[[tokens]]\nname = \"x\"\nsha256 = \"\"\nrole = \"root\"").is_err());
        assert_eq!(c.s3, S3Settings::default());
        assert_eq!(c.s3.listen, SocketAddr::from(([127, 0, 0, 1], 9000)));
        let c: Config = toml::from_str("[s3]\nenabled = false\nlisten = \"127.0.0.1:9100\"").unwrap();
        assert_eq!((c.s3.enabled, c.s3.listen.port()), (Some(false), 9100));
        assert!(toml::from_str::<Config>("[s3]\nport = 1").is_err(), "unknown keys are refused");
    }

    #[test]
    fn artifact_objects_are_for_the_postgres_backend() {
        let c: Config = toml::from_str("[artifacts]\nobjects = \"file:///tmp/x\"").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("PostgreSQL backend"));
        let c: Config = toml::from_str(
            "[backend]\nurl = \"postgres://h/db\"\n[artifacts]\nobjects = \"s3://b/p\"\ngc_grace_secs = 60",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!((c.artifacts.gc_grace_secs, c.artifacts.maintenance_interval_secs), (60, 60));
        let c: Config = toml::from_str(
            "[backend]\nurl = \"postgres://h/db\"\n[artifacts]\nobjects = \"s3://b/p\"\naccess_key_id = \"k\"",
        )
        .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("go together"));
        assert!(toml::from_str::<Config>("[artifacts]\nbucket = \"x\"").is_err(), "unknown keys are refused");
    }
}
