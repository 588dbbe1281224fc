//! Every route the server answers, in one table (which the OpenAPI test checks against
//! `docs/openapi.json`), and the middleware stack around them.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{middleware, Extension, Json, Router};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::auth::{self, Principal, Role};
use super::limits::{self, Guard};
use super::state::AppState;
use super::{admin, artifacts, changes, collections, metrics, queue, records, run_metrics, transactions};
use crate::problem::ApiError;

/// The OpenAPI document, as kept in `docs/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Every route: method, path pattern, handler.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::GET, "/healthz", get(healthz)),
        (Method::GET, "/metrics", get(metrics)),
        (Method::GET, "/openapi.json", get(openapi)),
        (Method::GET, "/v1/stats", get(stats)),
        (Method::GET, "/v1/collections", get(collections::list)),
        (Method::POST, "/v1/collections", post(collections::declare)),
        (Method::GET, "/v1/collections/{collection}/records", get(records::list)),
        (Method::GET, "/v1/collections/{collection}/records/{id}", get(records::get)),
        (Method::GET, "/v1/collections/{collection}/count", get(records::count)),
        (Method::PUT, "/v1/collections/{collection}/records/{id}", put(records::put)),
        (Method::DELETE, "/v1/collections/{collection}/records/{id}", delete(records::delete)),
        (Method::POST, "/v1/collections/{collection}/claim", post(collections::claim)),
        (Method::POST, "/v1/transactions", post(transactions::run)),
        (Method::GET, "/v1/changes", get(changes::changes)),
        (Method::POST, "/v1/admin/backup", post(admin::backup)),
        (Method::POST, "/v1/admin/check", post(admin::check)),
        (Method::GET, "/v1/artifacts/buckets", get(artifacts::list)),
        (Method::GET, "/v1/artifacts/buckets/{bucket}", get(artifacts::get)),
        (Method::PUT, "/v1/artifacts/buckets/{bucket}/retention", put(artifacts::set_retention)),
        (Method::GET, "/v1/artifacts/stats", get(artifacts::stats)),
        (Method::POST, "/v1/artifacts/gc", post(artifacts::collect)),
        (Method::POST, "/v1/queue/jobs", post(queue::enqueue)),
        (Method::POST, "/v1/queue/jobs/batch", post(queue::enqueue_batch)),
        (Method::GET, "/v1/queue/jobs/{id}", get(queue::get)),
        (Method::DELETE, "/v1/queue/jobs/{id}", delete(queue::purge)),
        (Method::POST, "/v1/queue/jobs/{id}/complete", post(queue::complete)),
        (Method::POST, "/v1/queue/jobs/{id}/fail", post(queue::fail)),
        (Method::POST, "/v1/queue/jobs/{id}/snooze", post(queue::snooze)),
        (Method::POST, "/v1/queue/jobs/{id}/heartbeat", post(queue::heartbeat)),
        (Method::POST, "/v1/queue/jobs/{id}/cancel", post(queue::cancel)),
        (Method::POST, "/v1/queue/jobs/{id}/retry", post(queue::retry)),
        (Method::POST, "/v1/queue/claim", post(queue::claim)),
        (Method::POST, "/v1/queue/complete", post(queue::complete_batch)),
        (Method::GET, "/v1/queue/queues", get(queue::queues)),
        (Method::GET, "/v1/queue/queues/{queue}", get(queue::counts)),
        (Method::GET, "/v1/queue/queues/{queue}/jobs", get(queue::list)),
        (Method::DELETE, "/v1/queue/queues/{queue}/discarded", delete(queue::purge_discarded)),
        (Method::POST, "/v1/runs/{run}/metrics", post(run_metrics::log)),
        (Method::GET, "/v1/runs/{run}/metrics", get(run_metrics::latest)),
        (Method::DELETE, "/v1/runs/{run}/metrics", delete(run_metrics::delete)),
        (Method::GET, "/v1/runs/{run}/metrics/{key}/history", get(run_metrics::history)),
        (Method::GET, "/v1/runs/{run}/metrics/{key}/downsample", get(run_metrics::downsample)),
        (Method::GET, "/v1/metrics/{key}/latest", get(run_metrics::latest_of)),
        (Method::GET, "/v1/metrics/{key}/compare", get(run_metrics::compare)),
    ]
}

/// The application: routes, then (outermost first) tracing, metrics, load shedding and timeout,
/// authentication, and the body limit. Metrics, shedding and authentication are one layer (`edge_layer`): each
/// layer of a router costs every request a clone of the services inside it and a boxed future.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes() {
        router = router.route(path, handler);
    }
    let edge = Edge {
        guard: Guard {
            permits: Arc::new(Semaphore::new(state.limits.max_concurrency)),
            timeout: state.limits.request_timeout(),
            metrics: state.metrics.clone(),
        },
        tokens: state.tokens.clone(),
        metrics: state.metrics.clone(),
    };
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(edge, edge_layer))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .with_state(state)
}

/// What the [`edge_layer`] middleware needs.
#[derive(Clone)]
struct Edge {
    metrics: Arc<super::metrics::Metrics>,
    guard: Guard,
    tokens: Arc<auth::Tokens>,
}

/// Middleware: [`metrics::track`] around [`limits::guard`] around [`auth::authenticate`], in one layer.
async fn edge_layer(State(edge): State<Edge>, req: Request, next: Next) -> Response {
    metrics::track(&edge.metrics, req, |req| {
        limits::guard(&edge.guard, req, |req| auth::authenticate(&edge.tokens, req, |req| next.run(req)))
    })
    .await
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// `GET /healthz`: 200 while the server runs, with the last commit sequence (read without an engine task,
/// so that it is never shed) and, when the server has an artifact store, the blob store's health (kept in
/// memory: no I/O). No token needed.
async fn healthz(State(state): State<AppState>) -> Json<Value> {
    let mut out = json!({ "status": "ok", "last_sequence": state.backend.last_sequence() });
    if let Some(a) = &state.artifacts {
        out["blobs"] = artifacts::health_json(&a.health());
    }
    Json(out)
}

/// `GET /openapi.json`. No token needed.
async fn openapi() -> Response {
    let mut resp = OPENAPI.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `GET /v1/stats`: the engine's figures as JSON (those of `cairn stats --json`). Database-wide, so not for
/// project-scoped tokens.
async fn stats(State(state): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Read)?;
    Ok(Json(state.backend.stats().await?))
}

/// `GET /metrics`: the Prometheus text of [`Metrics`](super::metrics::Metrics) and the engine's figures.
/// Database-wide, so not for project-scoped tokens.
pub async fn metrics(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Response, ApiError> {
    who.require_unscoped(Role::Read)?;
    let mut figures = state.backend.figures().await?;
    figures.blobs = state.artifacts.as_ref().map(|a| a.health());
    figures.queues = queue::all_counts(&state).await;
    let text = state.metrics.render(&figures);
    let mut resp = text.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(super::metrics::CONTENT_TYPE));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves is in the OpenAPI document with its method, and the document parses.
    #[test]
    fn openapi_documents_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("docs/openapi.json parses");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let paths = doc["paths"].as_object().expect("paths");
        for (method, path, _) in routes() {
            let ops = paths.get(path).unwrap_or_else(|| panic!("{path} missing from docs/openapi.json"));
            let m = method.as_str().to_ascii_lowercase();
            assert!(ops.get(&m).is_some(), "{method} {path} missing from docs/openapi.json");
        }
        let served: std::collections::HashSet<(String, String)> =
            routes().iter().map(|(m, p, _)| (m.as_str().to_ascii_lowercase(), (*p).to_owned())).collect();
        for (path, ops) in paths {
            for m in ops.as_object().expect("path item").keys().filter(|k| *k != "parameters") {
                assert!(served.contains(&(m.clone(), path.clone())), "{m} {path} is documented but not served");
            }
        }
    }
}
