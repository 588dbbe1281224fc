//! `GET /v1/changes?since=SEQ`: the change feed, resumable from a sequence, as a long-poll JSON page or as
//! server-sent events (`Accept: text/event-stream`, resuming from `Last-Event-ID`). Waiters wake when the
//! server commits a write, and poll once a second besides.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cairn_store::{Change, ChangeOp};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::auth::{Principal, Role};
use super::extract::{collection_name, Params};
use super::state::AppState;
use crate::problem::ApiError;

/// Largest page of changes.
const MAX_CHANGES: usize = 1000;
/// Default page of changes.
const DEFAULT_CHANGES: usize = 100;
/// How often waiters look for changes the server was not told about.
const POLL: Duration = Duration::from_secs(1);

/// A change as a request is shown it.
#[derive(Debug, Clone)]
struct Shown {
    change: Change,
    /// The change moved the record out of the scoped token's project: shown as a delete without document.
    moved_out: bool,
}

/// A change as the API shows it.
fn change_json(s: &Shown) -> Value {
    let c = &s.change;
    let mut v = json!({
        "seq": c.seq,
        "collection": c.collection,
        "id": c.id,
        "op": c.op,
        "version": c.version,
        "at_ms": c.at_ms,
        "document": c.doc,
    });
    if s.moved_out {
        v["moved_out"] = Value::Bool(true);
    }
    v
}

/// What a request asks of the feed.
#[derive(Debug, Clone)]
struct Feed {
    collection: Option<String>,
    limit: usize,
    who: Principal,
}

impl Feed {
    /// The change as this request sees it, if at all: its collection must match; a scoped token sees a change
    /// whose document names its project as it is, and a change whose previous document named its project
    /// (`prev_project`) but whose document does not (a delete, or an update that moved the record to another
    /// project) as a delete without document, `moved_out` for a move. Deletes written before events carried
    /// `prev_project` are not shown to scoped tokens.
    fn shown(&self, c: Change) -> Option<Shown> {
        if self.collection.as_ref().is_some_and(|name| *name != c.collection) {
            return None;
        }
        let Some(project) = self.who.project() else { return Some(Shown { change: c, moved_out: false }) };
        if c.doc.as_ref().is_some_and(|d| self.who.sees(d)) {
            return Some(Shown { change: c, moved_out: false });
        }
        if c.prev_project.as_ref().and_then(Value::as_str) != Some(project) {
            return None;
        }
        let moved_out = c.doc.is_some();
        Some(Shown { change: Change { op: ChangeOp::Delete, doc: None, ..c }, moved_out })
    }
}

/// One read of the feed after `since`: the changes shown and the sequence to resume after.
async fn fetch(state: &AppState, feed: &Feed, since: u64) -> Result<(Vec<Shown>, u64), ApiError> {
    let limit = feed.limit;
    let page = state.backend.changes_since(since, limit).await?;
    let next = page.last().map_or(since, |c| c.seq);
    let shown = page.into_iter().filter_map(|c| feed.shown(c)).collect();
    Ok((shown, next))
}

/// `GET /v1/changes`.
pub async fn changes(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    who.require(Role::Read)?;
    let collection = params.get("collection").map(str::to_owned);
    if let Some(c) = &collection {
        collection_name(c)?;
    }
    let limit = params.u64("limit")?.map_or(DEFAULT_CHANGES, |n| (n as usize).clamp(1, MAX_CHANGES));
    let feed = Feed { collection, limit, who };
    let sse =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    if sse {
        let last_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
        let since = match last_id {
            Some(id) => Some(
                id.trim()
                    .parse::<u64>()
                    .map_err(|_| ApiError::bad_request("Last-Event-ID must be a sequence number"))?,
            ),
            None => params.u64("since")?,
        };
        return stream_changes(state, feed, since.unwrap_or(0)).await;
    }
    let since = params.u64("since")?.unwrap_or(0);
    let wait = Duration::from_millis(params.u64("wait_ms")?.unwrap_or(0).min(state.limits.max_wait_ms));
    long_poll(state, feed, since, wait).await
}

/// Answers the first non-empty page after `since`, waiting up to `wait` for one.
async fn long_poll(state: AppState, feed: Feed, mut since: u64, wait: Duration) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut written = state.backend.subscribe();
    let mut shutdown = state.shutdown.clone();
    loop {
        written.borrow_and_update();
        let (shown, next) = fetch(&state, &feed, since).await?;
        let advanced = next != since;
        since = next;
        let now = tokio::time::Instant::now();
        if !shown.is_empty() || now >= deadline || *shutdown.borrow() {
            let changes: Vec<Value> = shown.iter().map(change_json).collect();
            return Ok(Json(json!({ "changes": changes, "next_since": since })).into_response());
        }
        if advanced {
            continue; // Everything read was filtered out; read on before waiting.
        }
        let nap = (deadline - now).min(POLL);
        tokio::select! {
            _ = written.changed() => {}
            _ = tokio::time::sleep(nap) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The event of change `c`, followed by `next` in the stream. A page of the feed never splits a commit, so
/// `c` is the last change of its commit when `next` is absent or of another commit: only that event carries
/// an `id` (the commit's sequence). A client whose connection dropped in the middle of a commit resumes
/// (`Last-Event-ID`) after the previous commit and gets the whole commit again, never loses its rest.
fn change_event(c: &Shown, next: Option<&Shown>) -> Event {
    let event = Event::default().event("change").data(change_json(c).to_string());
    if next.is_some_and(|n| n.change.seq == c.change.seq) {
        event
    } else {
        event.id(c.change.seq.to_string())
    }
}

/// The state of one event stream.
struct Streamer {
    state: AppState,
    feed: Feed,
    since: u64,
    buffer: VecDeque<Shown>,
    written: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl Streamer {
    /// The next event; `None` ends the stream (on shutdown, or after an error event).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            if let Some(c) = self.buffer.pop_front() {
                return Some(change_event(&c, self.buffer.front()));
            }
            if *self.shutdown.borrow() {
                return None;
            }
            self.written.borrow_and_update();
            match fetch(&self.state, &self.feed, self.since).await {
                Ok((shown, next)) => {
                    let advanced = next != self.since;
                    self.since = next;
                    self.buffer.extend(shown);
                    if advanced {
                        continue;
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Event::default().event("error").data(e.body().to_string()));
                }
            }
            tokio::select! {
                _ = self.written.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = self.shutdown.changed() => {}
            }
        }
    }
}

/// Answers with an event stream of the changes after `since`: `id` is the change's sequence, `event` is
/// `change`, `data` the change as JSON.
async fn stream_changes(state: AppState, feed: Feed, since: u64) -> Result<Response, ApiError> {
    let permit = state
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::unavailable("too many open change streams", 5))?;
    // The first read happens before answering, so a trimmed or bad start is a proper error status.
    let (shown, next) = fetch(&state, &feed, since).await?;
    let streamer = Streamer {
        written: state.backend.subscribe(),
        shutdown: state.shutdown.clone(),
        state,
        feed,
        since: next,
        buffer: shown.into(),
        done: false,
        _permit: permit,
    };
    let events = stream::unfold(streamer, |mut s| async move { s.next().await.map(|e| (Ok::<_, Infallible>(e), s)) });
    Ok(sse_response(events))
}

fn sse_response(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64, collection: &str, doc: Option<Value>, prev_project: Option<&str>) -> Change {
        Change {
            seq,
            collection: collection.into(),
            id: "i".into(),
            op: if doc.is_some() { ChangeOp::Update } else { ChangeOp::Delete },
            version: 1,
            at_ms: 0,
            doc,
            prev_project: prev_project.map(|p| json!(p)),
        }
    }

    /// Only the last event of a commit carries the id a client resumes after.
    #[tokio::test]
    async fn only_a_commits_last_event_has_an_id() {
        let shown = |seq| Shown { change: change(seq, "jobs", Some(json!({})), None), moved_out: false };
        let (a1, a2, b) = (shown(5), shown(5), shown(6));
        let events = vec![change_event(&a1, Some(&a2)), change_event(&a2, Some(&b)), change_event(&b, None)];
        let resp = Sse::new(stream::iter(events.into_iter().map(Ok::<_, Infallible>))).into_response();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let ids: Vec<&str> = text.lines().filter(|l| l.starts_with("id:")).collect();
        assert_eq!(ids, ["id: 5", "id: 6"], "{text}");
        assert!(text.starts_with("event: change\ndata: "), "the first change of commit 5 has no id: {text}");
    }

    #[test]
    fn feeds_filter_by_collection_and_project() {
        let all = Feed { collection: None, limit: 10, who: Principal::for_tests(None) };
        assert!(all.shown(change(1, "jobs", None, None)).is_some());
        let jobs = Feed { collection: Some("jobs".into()), ..all.clone() };
        assert!(jobs.shown(change(1, "jobs", Some(json!({})), None)).is_some());
        assert!(jobs.shown(change(1, "runs", Some(json!({})), None)).is_none());
        let scoped = Feed { who: Principal::for_tests(Some("p1")), ..all };
        assert!(scoped
            .shown(change(1, "jobs", Some(json!({"project": "p1"})), Some("p2")))
            .is_some_and(|s| !s.moved_out));
        assert!(scoped.shown(change(1, "jobs", Some(json!({"project": "p2"})), None)).is_none());
        assert!(scoped.shown(change(1, "jobs", None, None)).is_none(), "old deletes carry no project");
        assert!(scoped.shown(change(1, "jobs", None, Some("p2"))).is_none(), "another project's delete");
        let deleted = scoped.shown(change(1, "jobs", None, Some("p1"))).unwrap();
        assert_eq!(change_json(&deleted)["op"], "delete");
        assert!(change_json(&deleted).get("moved_out").is_none());
        let moved = scoped.shown(change(1, "jobs", Some(json!({"project": "p2", "secret": 1})), Some("p1"))).unwrap();
        let shown = change_json(&moved);
        assert_eq!(
            (&shown["op"], &shown["document"], &shown["moved_out"]),
            (&json!("delete"), &Value::Null, &json!(true))
        );
    }
}
