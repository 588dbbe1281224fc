//! Where objects go: an `object_store` backend and a prefix inside it, from a URL.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::error::SyncError;

/// An object store and a prefix in it. Build with [`ObjectLocation::new`] and the setters, then
/// [`ObjectLocation::open`].
///
/// URLs: `s3://bucket/prefix` (credentials and region from the standard `AWS_*` environment variables
/// unless set here), `file:///absolute/dir` (created if missing) and `memory://` (tests).
#[derive(Clone)]
pub struct ObjectLocation {
    url: String,
    endpoint: Option<String>,
    credentials: Option<(String, String)>,
    region: Option<String>,
    max_retries: usize,
    opened: Option<(Arc<dyn ObjectStore>, Path)>,
}

impl std::fmt::Debug for ObjectLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectLocation").field("url", &self.url).field("endpoint", &self.endpoint).finish()
    }
}

impl ObjectLocation {
    /// The location named by `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), endpoint: None, credentials: None, region: None, max_retries: 10, opened: None }
    }

    /// An S3-compatible server's endpoint (`http://127.0.0.1:9000`); plain HTTP is allowed when the endpoint
    /// is `http://`. Default: AWS itself (or `AWS_ENDPOINT` from the environment).
    pub fn endpoint(mut self, endpoint: Option<String>) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// An access key id and secret. Default: from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub fn credentials(mut self, key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.credentials = Some((key_id.into(), secret.into()));
        self
    }

    /// The S3 region. Default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Retries of a failed request (timeouts, 5xx, throttling), with exponential backoff from 100 ms up to
    /// 15 s. Default: 10.
    pub fn max_retries(mut self, retries: usize) -> Self {
        self.max_retries = retries;
        self
    }

    /// Connects the backend (no request is made yet).
    pub fn open(mut self) -> Result<Self, SyncError> {
        let url = url::Url::parse(&self.url).map_err(|e| SyncError::invalid(format!("bad URL {}: {e}", self.url)))?;
        let prefix = Path::from(url.path().trim_matches('/'));
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" => {
                let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                    SyncError::invalid(format!("{}: an s3:// URL needs a bucket (s3://bucket/prefix)", self.url))
                })?;
                let retry = RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(15),
                        base: 2.0,
                    },
                    max_retries: self.max_retries,
                    retry_timeout: Duration::from_secs(180),
                };
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry);
                if let Some(endpoint) = &self.endpoint {
                    b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some((key, secret)) = &self.credentials {
                    b = b.with_access_key_id(key).with_secret_access_key(secret);
                }
                if let Some(region) = &self.region {
                    b = b.with_region(region);
                }
                Arc::new(b.build()?)
            }
            "file" => {
                let dir =
                    url.to_file_path().map_err(|()| SyncError::invalid(format!("{}: not a local path", self.url)))?;
                std::fs::create_dir_all(&dir)?;
                let fs = LocalFileSystem::new_with_prefix(&dir)?;
                return Ok(Self { opened: Some((Arc::new(fs), Path::default())), ..self });
            }
            "memory" => Arc::new(InMemory::new()),
            other => {
                return Err(SyncError::invalid(format!(
                    "{}: unsupported scheme {other}: (use s3://, file:// or memory://)",
                    self.url
                )))
            }
        };
        self.opened = Some((store, prefix));
        Ok(self)
    }

    /// The opened object store and the prefix every path of this location starts with (empty for a
    /// `file://` location, whose directory is the store's root); `None` before [`open`](Self::open).
    pub fn opened(&self) -> Option<(Arc<dyn ObjectStore>, Path)> {
        self.opened.clone()
    }

    /// The URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn store(&self) -> Result<&Arc<dyn ObjectStore>, SyncError> {
        self.opened.as_ref().map(|o| &o.0).ok_or_else(|| SyncError::invalid("object location not opened"))
    }

    /// `prefix/relative`.
    pub(crate) fn path(&self, relative: &str) -> Path {
        let prefix = self.opened.as_ref().map(|o| o.1.as_ref()).unwrap_or_default();
        if prefix.is_empty() {
            Path::from(relative)
        } else {
            Path::from(format!("{prefix}/{relative}"))
        }
    }

    /// The name of `path` relative to the prefix.
    pub(crate) fn relative<'a>(&self, path: &'a Path) -> &'a str {
        let prefix = self.opened.as_ref().map(|o| o.1.as_ref()).unwrap_or_default();
        let full = path.as_ref();
        if prefix.is_empty() {
            full
        } else {
            full.strip_prefix(prefix).map_or(full, |r| r.trim_start_matches('/'))
        }
    }
}
