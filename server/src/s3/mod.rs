//! The S3 API of the artifact store (`cairn serve`'s second listener; `docs/server.md`, "The S3 API"). The
//! protocol (SigV4, XML, routing, path-style addressing) is the `s3s` crate's; this module maps it onto
//! an artifact store ([`ArtifactApi`](crate::backend::ArtifactApi): the embedded one or the PostgreSQL
//! backend's):
//!
//! - `service`: the operations, one method each, the blocking artifact calls run on the blocking pool;
//! - `auth`: access keys from the configured tokens, roles and project scopes;
//! - `body`: request and response bodies streamed through bounded channels;
//! - `errors`: each artifact error's S3 error code.
//!
//! [`s3_service`] builds an [`S3Server`] over an open artifact store; [`S3Server::serve`] answers on a
//! listener until told to stop.

mod auth;
mod body;
mod errors;
mod service;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{HttpError, HttpResponse};
use tokio::net::TcpListener;

use crate::backend::ArtifactStore;
use crate::{Config, ConfigError};

/// How long in-flight S3 requests may go on after the stop signal.
const DRAIN: Duration = Duration::from_secs(30);

/// The S3 API over one artifact store, as a hyper service. Cheap to clone.
///
/// With tokens configured, every request must be signed (SigV4, or presigned) with a token's key pair
/// (`docs/server.md`). Without tokens (open mode, loopback only) nothing is checked: a request's
/// `Authorization` header and presigned query parameters are dropped before s3s sees them, so any key
/// (or none) works, as on the HTTP API.
#[derive(Clone, Debug)]
pub struct S3Server {
    service: S3Service,
    open: bool,
}

/// The S3 API over `artifacts` (an embedded [`Artifacts`](cairn_store::artifacts::Artifacts) or any
/// [`ArtifactStore`]), with `config`'s tokens as access keys and at most
/// `config.limits.max_concurrency` blocking artifact calls at once (more are answered `SlowDown`). Fails if
/// `config` does not pass [`Config::validate`]. Serve it with [`S3Server::serve`].
pub fn s3_service(artifacts: impl Into<ArtifactStore>, config: &Config) -> Result<S3Server, ConfigError> {
    config.validate()?;
    let open = config.tokens.is_empty();
    let ops = service::ArtifactS3::new(artifacts.into(), config.limits.max_concurrency, open);
    let mut builder = S3ServiceBuilder::new(ops);
    if !open {
        let keys = Arc::new(auth::KeyTable::new(&config.tokens));
        builder.set_auth(auth::Secrets(keys.clone()));
        builder.set_access(auth::Grants(keys));
    }
    Ok(S3Server { service: builder.build(), open })
}

impl S3Server {
    /// Answers S3 requests on `listener` (HTTP/1.1) until `stop` resolves, then lets in-flight requests
    /// finish (for at most 30 s).
    pub async fn serve(self, listener: TcpListener, stop: impl Future<Output = ()> + Send) -> std::io::Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let http = hyper::server::conn::http1::Builder::new();
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of file descriptors, say: wait instead of spinning.
                            tracing::warn!(error = %e, "the S3 listener could not accept a connection");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), self.clone()));
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "S3 connection ended with an error");
                        }
                    });
                }
                () = &mut stop => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
            tracing::warn!("S3 requests still running {DRAIN:?} after the stop signal were cut");
        }
        Ok(())
    }
}

/// The query parameters of a presigned URL (SigV4 and SigV2), dropped in open mode.
const PRESIGNED: [&str; 10] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "AWSAccessKeyId",
    "Signature",
    "Expires",
];

/// A request without its credentials: open mode checks none.
fn strip_credentials(req: &mut hyper::Request<Incoming>) {
    req.headers_mut().remove(hyper::header::AUTHORIZATION);
    let Some(query) = req.uri().query() else { return };
    let signed = query.split('&').any(|p| matches!(p.split('=').next(), Some("X-Amz-Signature" | "Signature")));
    if !signed {
        return;
    }
    let kept: Vec<&str> =
        query.split('&').filter(|p| !p.split('=').next().is_some_and(|n| PRESIGNED.contains(&n))).collect();
    let path = req.uri().path();
    let path_and_query = if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) };
    let mut parts = req.uri().clone().into_parts();
    match path_and_query.parse() {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(_) => return,
    }
    if let Ok(uri) = hyper::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for S3Server {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        if self.open {
            strip_credentials(&mut req);
        }
        hyper::service::Service::call(&self.service, req)
    }
}
