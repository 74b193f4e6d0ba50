//! `GET /api/projects/{projectId}/deployments/{deploymentId}/events`: a deployment's event
//! log as Server-Sent Events (`id:` is the event's seq). A client that connects late, or
//! reconnects with `Last-Event-ID`, first gets what it missed from the store, then live
//! events as they are stored; the stream ends after the `finished` event.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{endpoint, ApiError, Auth, Endpoint, PathParam, QueryParams, SharedState};
use crate::domain::{rfc3339_ms, shorten, DeployEvent};
use crate::store::Store;

const BATCH: usize = 500;

pub fn endpoints() -> Vec<Endpoint> {
    vec![endpoint(
        Method::GET,
        "/api/projects/{projectId}/deployments/{deploymentId}/events",
        get(events),
    )]
}

/// Where a client resumes: `Last-Event-ID` (what browsers send on reconnect), else the
/// `lastEventId` query parameter, else the beginning.
pub fn resume_point(headers: &HeaderMap, q: &QueryParams) -> Result<u64, ApiError> {
    q.only(&["lastEventId"])?;
    let raw = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID must be a number"))?
                .to_owned(),
        ),
        None => q.0.get("lastEventId").cloned(),
    };
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(0),
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "Last-Event-ID must be the seq of an event, not {:?}",
                shorten(v)
            ))
        }),
    }
}

/// The JSON of one event as clients see it: times as RFC 3339.
pub fn event_json(e: &DeployEvent) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    v["at"] = Value::String(rfc3339_ms(e.at));
    for key in ["startedAt", "completedAt"] {
        if let Some(ms) = v.get(key).and_then(Value::as_i64) {
            v[key] = Value::String(rfc3339_ms(ms));
        }
    }
    v
}

/// Reads a deployment's log after a cursor, waiting for more until the finished event.
struct Cursor {
    store: Store,
    id: String,
    after: u64,
    live: watch::Receiver<u64>,
    buffer: VecDeque<DeployEvent>,
    done: bool,
    cancel: CancellationToken,
}

impl Cursor {
    async fn next(&mut self) -> Option<DeployEvent> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                self.after = e.seq;
                if e.kind.is_finished() {
                    self.done = true;
                }
                return Some(e);
            }
            if self.done {
                return None;
            }
            // The receiver is marked seen before reading, so a write after this read
            // wakes the wait below.
            self.live.borrow_and_update();
            let batch = self.store.events(&self.id, self.after, BATCH).ok()?;
            if !batch.is_empty() {
                self.buffer.extend(batch);
                continue;
            }
            // A finished deployment whose log is read to the end (the final event and the
            // terminal status are written together, so read once more after the check).
            let terminal = self
                .store
                .deployment(&self.id)
                .ok()
                .flatten()
                .is_none_or(|d| d.status.is_terminal());
            if terminal {
                let rest = self.store.events(&self.id, self.after, BATCH).ok()?;
                if rest.is_empty() {
                    return None;
                }
                self.buffer.extend(rest);
                continue;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = self.live.changed() => {}
                // A safety net: re-read now and then even without a notification.
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
        }
    }
}

fn stream(cursor: Cursor) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(cursor, |mut c| async move {
        let e = c.next().await?;
        let sse = Event::default()
            .id(e.seq.to_string())
            .event(e.kind.name())
            .data(event_json(&e).to_string());
        Some((Ok(sse), c))
    })
}

async fn events(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam((project, id)): PathParam<(String, String)>,
    headers: HeaderMap,
    q: QueryParams,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    super::deployments::readable(&state, &p, &project, &id)?;
    let after = resume_point(&headers, &q)?;
    // Subscribe before the first read, so nothing stored in between is missed.
    let live = state.dispatcher.live().subscribe(&id);
    let cursor = Cursor {
        store: state.store.clone(),
        id,
        after,
        live,
        buffer: VecDeque::new(),
        done: false,
        cancel: state.cancel.clone(),
    };
    Ok(Sse::new(stream(cursor)).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::{DeploymentStatus, EventKind};
    use crate::queue::Live;

    fn log(seq: u64) -> DeployEvent {
        DeployEvent {
            seq,
            at: 1_700_000_000_000,
            kind: EventKind::Log {
                step: "Build Image".into(),
                line: format!("line {seq}"),
            },
        }
    }

    #[test]
    fn resume_point_reads_the_header_then_the_query() {
        let mut h = HeaderMap::new();
        let none = QueryParams(Default::default());
        assert_eq!(resume_point(&h, &none).ok(), Some(0));
        h.insert("last-event-id", "7".parse().expect("header"));
        assert_eq!(resume_point(&h, &none).ok(), Some(7));
        let q = QueryParams(
            [("lastEventId".to_owned(), "3".to_owned())]
                .into_iter()
                .collect(),
        );
        assert_eq!(resume_point(&HeaderMap::new(), &q).ok(), Some(3));
        h.insert("last-event-id", "x".parse().expect("header"));
        assert!(resume_point(&h, &none).is_err());
    }

    /// A reader that starts mid-deployment gets the stored events after its cursor, then
    /// live ones, and stops after the finished event.
    #[tokio::test]
    async fn resumes_after_the_cursor_then_follows_live_events(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = crate::store::open(dir.path())?;
        let live = Arc::new(Live::default());
        let d = store.insert_deployment(&crate::domain::deployment_tests::queued("d1"))?;
        for seq in 1..=3 {
            store.append_event(&d.id, &log(seq))?;
        }
        let mut cursor = Cursor {
            store: store.clone(),
            id: d.id.clone(),
            after: 1,
            live: live.subscribe(&d.id),
            buffer: VecDeque::new(),
            done: false,
            cancel: CancellationToken::new(),
        };
        assert_eq!(cursor.next().await.map(|e| e.seq), Some(2));
        assert_eq!(cursor.next().await.map(|e| e.seq), Some(3));
        let writer = {
            let store = store.clone();
            let live = live.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let d = store.append_event("d1", &log(4))?;
                live.publish("d1", d.last_seq);
                let close = d.closing_event(DeploymentStatus::Succeeded, "done".into(), 5);
                let d = store.append_event("d1", &close)?;
                live.publish("d1", d.last_seq);
                Ok::<_, crate::store::StoreError>(())
            })
        };
        assert_eq!(cursor.next().await.map(|e| e.seq), Some(4));
        let last = cursor.next().await.ok_or("no finished event")?;
        assert!(last.kind.is_finished());
        assert!(
            cursor.next().await.is_none(),
            "the stream ends after finished"
        );
        writer.await??;
        Ok(())
    }
}
