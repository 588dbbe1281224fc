//! Load shedding and the per-request timeout. (The body size limit is enforced by `JsonBody`, the only
//! extractor that reads bodies, which answers 413 after draining what the client is still sending; the
//! page size is capped where queries are built; engine tasks in flight are bounded in `state`, where they
//! are started.)

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::metrics::Metrics;
use crate::problem::ApiError;

/// What the guard needs.
#[derive(Clone)]
pub struct Guard {
    /// Permits for requests in flight.
    pub permits: Arc<Semaphore>,
    /// The per-request timeout.
    pub timeout: std::time::Duration,
    /// Where shed and timed-out requests are counted.
    pub metrics: Arc<Metrics>,
}

/// Middleware: sheds a request with 503 and `Retry-After: 1` when `max_concurrency` requests are already in
/// flight, and answers 503 if the handler takes longer than the timeout. `/healthz` is never shed.
/// `inner` answers the request (this is one of the middlewares the router runs as one layer).
pub async fn guard<F: Future<Output = Response>>(
    g: &Guard,
    req: Request,
    inner: impl FnOnce(Request) -> F,
) -> Response {
    if req.uri().path() == "/healthz" {
        return inner(req).await;
    }
    let Ok(_permit) = g.permits.try_acquire() else {
        g.metrics.shed.fetch_add(1, Ordering::Relaxed);
        return ApiError::unavailable("the server is at its concurrency limit; retry shortly", 1).into_response();
    };
    match tokio::time::timeout(g.timeout, inner(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            g.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
            ApiError::unavailable(
                format!(
                    "the request took longer than {} ms; a write may or may not have been applied",
                    g.timeout.as_millis()
                ),
                1,
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::extract::State;
    use axum::middleware::Next;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    fn app(permits: usize, timeout_ms: u64, metrics: Arc<Metrics>) -> Router {
        let g =
            Guard { permits: Arc::new(Semaphore::new(permits)), timeout: Duration::from_millis(timeout_ms), metrics };
        Router::new()
            .route("/slow", get(|| async { tokio::time::sleep(Duration::from_millis(300)).await }))
            .route("/healthz", get(|| async {}))
            .layer(axum::middleware::from_fn_with_state(g, |State(g): State<Guard>, req, next: Next| async move {
                guard(&g, req, |req| next.run(req)).await
            }))
    }

    fn get_req(path: &str) -> Request {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn slow_requests_time_out_with_503() {
        let metrics = Arc::new(Metrics::default());
        let resp = app(4, 50, metrics.clone()).oneshot(get_req("/slow")).await.unwrap();
        assert_eq!(resp.status().as_u16(), 503);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(metrics.timeouts.load(Ordering::Relaxed), 1);
        let resp = app(4, 1000, metrics.clone()).oneshot(get_req("/slow")).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }

    #[tokio::test]
    async fn no_permits_sheds_everything_but_healthz() {
        let metrics = Arc::new(Metrics::default());
        let app = app(0, 1000, metrics.clone());
        assert_eq!(app.clone().oneshot(get_req("/slow")).await.unwrap().status().as_u16(), 503);
        assert_eq!(app.oneshot(get_req("/healthz")).await.unwrap().status().as_u16(), 200);
        assert_eq!(metrics.shed.load(Ordering::Relaxed), 1);
    }
}
