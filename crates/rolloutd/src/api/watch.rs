//! Server-sent events: `GET /api/v1/watch` (every rollout) and
//! `GET /api/v1/rollouts/{name}/watch` (one, with its events).
//!
//! Each stream first sends a `snapshot` (what the list or the rollout's
//! page would read), then, as they are written, `rollout` (a rollout's new
//! resource: status or spec changed), `deleted` and `event` (one entry of
//! the event log, with its id). A stream polls the store's cheap
//! fingerprints every [`POLL`]: it sees writes of every replica, not only
//! this one's. While the database cannot be read it sends `stale` once
//! (with the reason), then `fresh` and a new `snapshot` when it can again.
//! Comments keep idle connections open through proxies.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use rollout_store::{Fingerprint, StoreError, StoredRollout, WatchedEvent};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::{resource, Api, ApiError};

/// How often a stream looks for writes.
pub const POLL: Duration = Duration::from_millis(250);
/// How many streams may be open at once; more are refused with 503.
pub const MAX_WATCHERS: usize = 256;
/// Events read per poll at most (the rest at the next).
const EVENT_BATCH: u32 = 500;

/// The streams open now (bounded by [`MAX_WATCHERS`]), and the signal
/// that ends them all when the daemon stops (an open stream would
/// otherwise hold its connection for the whole shutdown grace).
pub struct Watchers {
    permits: Arc<tokio::sync::Semaphore>,
    closing: tokio::sync::watch::Sender<bool>,
}

impl Default for Watchers {
    fn default() -> Self {
        Watchers {
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_WATCHERS)),
            closing: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Watchers {
    /// Ends every stream (and refuses new ones): the daemon is stopping.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
        self.permits.close();
    }
}

/// `GET /api/v1/watch`.
pub async fn all(State(api): State<Arc<Api>>) -> Response {
    stream(api, None)
}

/// `GET /api/v1/rollouts/{name}/watch`: 404 when there is no such rollout.
pub async fn one(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    match api.store.fingerprints(Some(&name)).await {
        Ok(found) if found.is_empty() => {
            ApiError::new(StatusCode::NOT_FOUND, format!("rollout `{name}` not found"))
                .into_response()
        }
        // Unreadable now: the stream says so and follows when it can.
        Ok(_) | Err(_) => stream(api, Some(name)),
    }
}

fn stream(api: Arc<Api>, name: Option<String>) -> Response {
    let Ok(permit) = Arc::clone(&api.watchers.permits).try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_WATCHERS} streams are open already; try again later"),
        )
        .into_response();
    };
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    tokio::spawn(async move {
        let _permit = permit;
        let mut closing = api.watchers.closing.subscribe();
        let mut w = Watch {
            api,
            name,
            tx,
            known: None,
            last_event: 0,
            stale: false,
        };
        tokio::select! {
            () = w.run() => {}
            _ = closing.wait_for(|c| *c) => {}
        }
    });
    let events = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// One stream's state.
struct Watch {
    api: Arc<Api>,
    /// The rollout watched, or every one.
    name: Option<String>,
    tx: mpsc::Sender<SseEvent>,
    /// What the client was last sent of each rollout; `None` until a
    /// snapshot was sent (and again after an outage).
    known: Option<HashMap<String, Fingerprint>>,
    /// The newest event sent.
    last_event: i64,
    /// Whether `stale` was sent and no `fresh` since.
    stale: bool,
}

/// The client went away.
struct Gone;

impl Watch {
    async fn run(&mut self) {
        loop {
            let step = match self.known {
                None => self.snapshot().await,
                Some(_) => self.changes().await,
            };
            match step {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    if self.outage(&why).await.is_err() {
                        return;
                    }
                }
                Err(Gone) => return,
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = self.tx.closed() => return,
            }
        }
    }

    async fn send(&self, kind: &str, data: &Value) -> Result<(), Gone> {
        let mut event = SseEvent::default().event(kind).data(data.to_string());
        if kind == "snapshot" {
            event = event.retry(Duration::from_secs(2));
        }
        self.tx.send(event).await.map_err(|_| Gone)
    }

    /// Says once that the store cannot be read; the next read starts over
    /// with a snapshot.
    async fn outage(&mut self, why: &StoreError) -> Result<(), Gone> {
        self.known = None;
        if !self.stale {
            self.stale = true;
            // The client hears a stable message; what the database said
            // (hosts, users) goes to the log only.
            tracing::warn!(error = %crate::redact::redact(&why.to_string()), "a watch stream cannot read the database");
            self.send(
                "stale",
                &json!({"stale": true, "staleReason": "the database is unavailable; this is the last state read"}),
            )
            .await?;
        }
        Ok(())
    }

    fn fingerprint(r: &StoredRollout) -> Fingerprint {
        Fingerprint {
            name: r.rollout.metadata.name.to_string(),
            uid: r.uid.clone(),
            generation: r.generation,
            version: r.version,
        }
    }

    /// A rollout as `GET /api/v1/rollouts/{name}` answers it (`waits`
    /// read once per batch, as the list does).
    fn resource_json(waits: &crate::metrics::Waits, r: &StoredRollout) -> Value {
        serde_json::to_value(resource(waits, r)).unwrap_or(Value::Null)
    }

    fn event_json(e: &WatchedEvent) -> Value {
        let mut v = serde_json::to_value(&e.logged.event).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.insert("rollout".into(), Value::String(e.rollout.clone()));
            map.insert("id".into(), Value::from(e.logged.id));
        }
        v
    }

    async fn snapshot(&mut self) -> Result<Result<(), StoreError>, Gone> {
        let store = &self.api.store;
        let read = async {
            // The event cursor is read first: an event written while the
            // rest is read is sent after the snapshot, never lost.
            let last = store.last_event_id().await?;
            match &self.name {
                None => Ok((last, store.rollouts().await?, Vec::new())),
                Some(name) => {
                    let r = store.rollout(name).await?;
                    let events = match &r {
                        Some(_) => store.events_after(0, Some(name), u32::MAX).await?,
                        None => Vec::new(),
                    };
                    Ok((last, r.into_iter().collect(), events))
                }
            }
        };
        let (last, rollouts, events) = match read.await {
            Ok(x) => x,
            Err(e) => return Ok(Err(e)),
        };
        if self.stale {
            self.stale = false;
            self.send("fresh", &json!({})).await?;
        }
        let waits = self.api.metrics.waits();
        let data = match &self.name {
            None => {
                json!({"items": rollouts.iter().map(|r| Self::resource_json(&waits, r)).collect::<Vec<_>>()})
            }
            Some(_) => json!({
                "rollout": rollouts.first().map(|r| Self::resource_json(&waits, r)),
                "events": events.iter().map(Self::event_json).collect::<Vec<_>>(),
            }),
        };
        self.send("snapshot", &data).await?;
        self.last_event = events.iter().map(|e| e.logged.id).fold(last, i64::max);
        self.known = Some(
            rollouts
                .iter()
                .map(|r| (r.rollout.metadata.name.to_string(), Self::fingerprint(r)))
                .collect(),
        );
        Ok(Ok(()))
    }

    async fn changes(&mut self) -> Result<Result<(), StoreError>, Gone> {
        let store = &self.api.store;
        let now = match store.fingerprints(self.name.as_deref()).await {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        let known = self.known.take().unwrap_or_default();
        let mut next = HashMap::with_capacity(now.len());
        // Read only when something moved (most polls see nothing).
        let mut waits = None;
        for f in now {
            if known.get(&f.name) != Some(&f) {
                match store.rollout(&f.name).await {
                    Ok(Some(r)) => {
                        let waits = waits.get_or_insert_with(|| self.api.metrics.waits());
                        let data = Self::resource_json(waits, &r);
                        self.send("rollout", &data).await?;
                        next.insert(f.name.clone(), Self::fingerprint(&r));
                        continue;
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        self.known = Some(known);
                        return Ok(Err(e));
                    }
                }
            }
            next.insert(f.name.clone(), f);
        }
        for name in known.keys().filter(|n| !next.contains_key(*n)) {
            self.send("deleted", &json!({ "name": name })).await?;
        }
        self.known = Some(next);
        let events = match store
            .events_after(self.last_event, self.name.as_deref(), EVENT_BATCH)
            .await
        {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        for e in &events {
            self.send("event", &Self::event_json(e)).await?;
            self.last_event = self.last_event.max(e.logged.id);
        }
        Ok(Ok(()))
    }
}
