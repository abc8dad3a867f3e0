//! The HTTP API (`../shared/CONTRACT.md` §3), on axum: JSON everywhere,
//! errors as `{"error": "...", "details": [...]}`, 4xx for the caller's
//! mistakes and 5xx only for ours.
//!
//! Reads come straight from the store. Writes go through the store too:
//! `apply` is all-or-nothing (every document is validated first, against the
//! templates in the request and on the server; then one transaction), and a
//! manual override is checked against the rollout's current status (409
//! when it does not apply), queued, and its rollout woken so the next
//! reconcile applies it at once. With a token configured, every mutating
//! request needs `Authorization: Bearer <token>`, compared in constant time.
//! While the database cannot be reached, reads answer with the last state
//! they read, marked `"stale": true` (and a `Warning` header), and writes
//! answer 503: nothing is accepted that cannot be recorded.

use rollout_core::sync::lock;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rollout_core::{check_command, CommandKind, RolloutStatus};
use rollout_store::{Store, StoredRollout};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

mod reads;
mod runs;
mod scrape;
mod watch;

use crate::daemon::Clock;
use crate::metrics::Metrics;

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The last successful answer of each read, served (marked stale) while the
/// database cannot be reached. Answers are kept as the bytes sent, so
/// keeping one costs a reference count, not a copy.
#[derive(Default)]
pub struct LastKnown {
    answers: std::sync::Mutex<std::collections::HashMap<String, Bytes>>,
}

impl LastKnown {
    fn keep(&self, key: &str, body: &Bytes) {
        {
            let mut a = lock(&self.answers);
            match a.get_mut(key) {
                Some(old) => *old = body.clone(),
                None => {
                    a.insert(key.to_string(), body.clone());
                }
            }
        }
    }

    fn stale(&self, key: &str, why: &rollout_store::StoreError) -> Option<Response> {
        warn!(error = %crate::redact::redact(&why.to_string()), "serving the last state read: the database is unavailable");
        let bytes = lock(&self.answers).get(key)?.clone();
        let mut v: Value = serde_json::from_slice(&bytes).ok()?;
        if let Value::Object(map) = &mut v {
            map.insert("stale".into(), Value::Bool(true));
            map.insert(
                "staleReason".into(),
                Value::String(
                    "the database is unavailable; this is the last state read".to_string(),
                ),
            );
        }
        Some(
            (
                [(
                    header::WARNING,
                    "110 rolloutd \"data may be stale: database unavailable\"",
                )],
                Json(v),
            )
                .into_response(),
        )
    }
}

/// The last-known key of the list (no rollout name contains `/`).
const LIST_KEY: &str = "rollouts/";

/// The last-known key of one rollout: never the list's, whatever its name.
fn one_key(name: &str) -> String {
    format!("rollouts/{name}")
}

/// A JSON answer from bytes already serialized.
fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Serializes an answer once, to send and to keep.
fn to_bytes<T: serde::Serialize>(v: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(v).map(Bytes::from).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialize the answer: {e}"),
        )
    })
}

/// What the API needs.
pub struct Api {
    /// The store.
    pub store: Store,
    /// Wakes a rollout's reconcile (after an apply or a command).
    pub poke: Box<dyn Fn(&str) + Send + Sync>,
    /// Tells the daemon that an apply changed a template.
    pub templates_changed: Box<dyn Fn() + Send + Sync>,
    /// The bearer token mutating requests need, if any.
    pub token: Option<String>,
    /// A token that may read but not change; when set, reads under
    /// `/api/v1` need it (or the write token). Health checks and `/metrics`
    /// stay open.
    pub read_token: Option<String>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Answers to serve while the database is down.
    pub last_known: LastKnown,
    /// The specs directory's last sync, when `--specs-dir` is set.
    pub sources: Option<Arc<tokio::sync::Mutex<crate::specs::DirState>>>,
    /// The daemon's clock: applies, deletes and commands are stamped by it.
    pub clock: Clock,
    /// The server-sent-event streams open now.
    pub watchers: watch::Watchers,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    details: Vec<Value>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            details: Vec::new(),
        }
    }
}

impl From<rollout_store::StoreError> for ApiError {
    fn from(e: rollout_store::StoreError) -> Self {
        if let rollout_store::StoreError::Owned {
            rollout,
            target,
            owner,
        } = &e
        {
            let mut err = ApiError::new(StatusCode::CONFLICT, e.to_string());
            err.details = vec![json!({"rollout": rollout, "target": target, "owner": owner})];
            return err;
        }
        // The client gets a stable message; what the database said (which
        // may name hosts, users or SQL) goes to the log only.
        warn!(error = %crate::redact::redact(&e.to_string()), "store error while serving a request");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable or failed; nothing was changed by this request (rolloutd's log has the details)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(crate::openapi::ErrorBody {
                error: self.error,
                details: self.details,
            }),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Whether a presented token is the expected one, compared in constant
/// time (`subtle`; the length is not secret).
fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    presented.ct_eq(expected).into()
}

fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

fn authorize(api: &Api, headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(token) = &api.token else {
        return Ok("api".into());
    };
    let given = bearer(headers);
    if token_matches(given.as_bytes(), token.as_bytes()) {
        Ok("token".into())
    } else if api
        .read_token
        .as_ref()
        .is_some_and(|r| token_matches(given.as_bytes(), r.as_bytes()))
    {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the read-only token cannot change anything; use the API token",
        ))
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this request needs `Authorization: Bearer <token>` with the API token",
        ))
    }
}

fn authorize_read(api: &Api, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(read) = &api.read_token else {
        return Ok(());
    };
    let given = bearer(headers).as_bytes();
    let ok = token_matches(given, read.as_bytes())
        || api
            .token
            .as_ref()
            .is_some_and(|t| token_matches(given, t.as_bytes()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "reading needs `Authorization: Bearer <token>` with the read-only or the API token",
        ))
    }
}

/// A rollout as the API shows it.
/// A rollout as the API shows it. A rollout whose reconcile has been
/// waiting for AWS (the API budget, or a slow answer) says so in its status
/// message, as this replica knows it.
fn resource<'a>(
    waits: &crate::metrics::Waits,
    r: &'a StoredRollout,
) -> crate::openapi::RolloutResource<'a> {
    let status =
        r.status
            .as_ref()
            .map(|st| match waits.message(r.rollout.metadata.name.as_str()) {
                Some(waiting) => {
                    let mut st = st.clone();
                    st.message = format!("{} ({waiting})", st.message);
                    std::borrow::Cow::Owned(st)
                }
                None => std::borrow::Cow::Borrowed(st),
            });
    use std::borrow::Cow::Borrowed;
    crate::openapi::RolloutResource {
        api_version: Borrowed(rollout_spec::API_VERSION),
        kind: Borrowed("Rollout"),
        metadata: Borrowed(&r.rollout.metadata),
        spec: Borrowed(&r.rollout.spec),
        status,
        generation: r.generation,
        source: Borrowed(&r.source),
    }
}

/// The OpenAPI document, built once.
fn openapi_document() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(crate::openapi::document)
}

/// The routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async {
                Json(crate::openapi::HealthBody {
                    status: "ok".into(),
                })
            }),
        )
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(openapi_document().clone()) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape::metrics))
        .route("/api/v1/apply", post(apply))
        .route("/api/v1/rollouts", get(list))
        .route("/api/v1/watch", get(watch::all))
        .route("/api/v1/whoami", get(reads::whoami))
        .route("/api/v1/sources", get(sources))
        .route("/api/v1/rollouts/{name}", get(one).delete(delete))
        .route("/api/v1/rollouts/{name}/events", get(events))
        .route(
            "/api/v1/rollouts/{name}/notifications",
            get(reads::notifications),
        )
        .route("/api/v1/rollouts/{name}/watch", get(watch::one))
        .route("/api/v1/rollouts/{name}/runs", get(runs::list))
        .route("/api/v1/rollouts/{name}/runs/{run}", get(runs::one))
        .route("/api/v1/rollouts/{name}/{verb}", post(command))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&api), gate))
        .merge(crate::dashboard::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}

/// Checks the token before the handler runs, so before a body is read: an
/// unauthenticated request is answered at once, whatever it says it will
/// send. Changes under `/api/v1` need the API token; reads there the read
/// token when one is set. The handlers check again (and learn the actor).
async fn gate(
    State(api): State<Arc<Api>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    if path.starts_with("/api/v1/") && path != "/api/v1/openapi.json" {
        let checked = if req.method() == axum::http::Method::GET
            || req.method() == axum::http::Method::HEAD
        {
            authorize_read(&api, req.headers())
        } else {
            authorize(&api, req.headers()).map(|_| ())
        };
        if let Err(e) = checked {
            return e.into_response();
        }
    }
    next.run(req).await
}

async fn readyz(State(api): State<Arc<Api>>) -> ApiResult {
    match api.store.ready().await {
        Ok(true) => Ok(Json(crate::openapi::HealthBody {
            status: "ready".into(),
        })
        .into_response()),
        Ok(false) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "migrations are not applied (run `rolloutd migrate`)",
        )),
        Err(e) => {
            warn!(error = %crate::redact::redact(&e.to_string()), "readiness: the database cannot be reached");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database cannot be reached",
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    orphan: bool,
}

#[derive(Debug, Deserialize)]
struct ApplyQuery {
    #[serde(rename = "dryRun", default)]
    dry_run: bool,
}

/// Applies parsed at once (each on a blocking thread).
static PARSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

async fn apply(
    State(api): State<Arc<Api>>,
    Query(q): Query<ApplyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let actor = authorize(&api, &headers)?;
    let Ok(text) = std::str::from_utf8(&body) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body is not UTF-8 text",
        ));
    };
    let known: Vec<String> = api.store.templates().await?.into_keys().collect();
    // Parsing and validating is CPU work: off the async workers (which run
    // the reconciles and lease renewals), and at most two at once.
    let parsed = {
        let _slot = PARSING
            .acquire()
            .await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "rolloutd is stopping"))?;
        let text = text.to_string();
        tokio::task::spawn_blocking(move || {
            rollout_spec::load([("<request>", text.as_str())], &known)
        })
        .await
        .map_err(|e| {
            warn!(error = %e, "parsing an apply failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the documents could not be read",
            )
        })?
    };
    let set = match parsed {
        Ok(set) => set,
        Err(diags) => {
            let mut e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "{} problem(s) in the documents; nothing was applied",
                    diags.len()
                ),
            );
            e.details = diags
                .iter()
                .map(|d| json!({"path": d.path, "line": d.line, "column": d.column, "message": d.message}))
                .collect();
            return Err(e);
        }
    };
    if set.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no documents in the body",
        ));
    }
    let applied = api
        .store
        .apply(&set, &actor, api.clock.now(), q.dry_run)
        .await?;
    if !q.dry_run {
        let changed = |a: &&rollout_store::Applied| a.change != rollout_store::Change::Unchanged;
        if applied
            .iter()
            .filter(changed)
            .any(|a| a.kind == "AnalysisTemplate")
        {
            (api.templates_changed)();
        }
        for a in applied.iter().filter(|a| a.kind == "Rollout") {
            (api.poke)(&a.name);
        }
    }
    let results = applied
        .iter()
        .map(|a| crate::openapi::Applied {
            kind: a.kind.to_string(),
            name: a.name.clone(),
            change: a.change.as_str().to_string(),
        })
        .collect();
    Ok(Json(crate::openapi::ApplyResult {
        dry_run: q.dry_run,
        results,
    })
    .into_response())
}

/// How each file of the specs directory fared in the last sync.
async fn sources(State(api): State<Arc<Api>>, headers: HeaderMap) -> ApiResult {
    authorize_read(&api, &headers)?;
    let (items, scan) = match &api.sources {
        Some(state) => {
            let state = state.lock().await;
            (state.sources(), Some(state.scan()))
        }
        None => (Vec::new(), None),
    };
    Ok(Json(crate::openapi::SourceList {
        specs_dir: api.sources.is_some(),
        items,
        scan,
    })
    .into_response())
}

async fn list(State(api): State<Arc<Api>>, headers: HeaderMap) -> ApiResult {
    authorize_read(&api, &headers)?;
    match api.store.rollouts().await {
        Ok(all) => {
            let body = to_bytes(&crate::openapi::RolloutList {
                items: {
                    let waits = api.metrics.waits();
                    all.iter().map(|r| resource(&waits, r)).collect()
                },
            })?;
            api.last_known.keep(LIST_KEY, &body);
            Ok(json_bytes(body))
        }
        Err(e) => api.last_known.stale(LIST_KEY, &e).ok_or_else(|| e.into()),
    }
}

async fn find(api: &Api, name: &str) -> Result<StoredRollout, ApiError> {
    api.store
        .rollout(name)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("rollout `{name}` not found")))
}

async fn one(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize_read(&api, &headers)?;
    match api.store.rollout(&name).await {
        Ok(Some(r)) => {
            let body = to_bytes(&resource(&api.metrics.waits(), &r))?;
            api.last_known.keep(&one_key(&name), &body);
            Ok(json_bytes(body))
        }
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("rollout `{name}` not found"),
        )),
        Err(e) => api
            .last_known
            .stale(&one_key(&name), &e)
            .ok_or_else(|| e.into()),
    }
}

/// `DELETE`: a rollout whose run holds canary traffic first returns it to
/// stable (202; its reconcile removes it once the load balancer shows
/// stable carrying all); otherwise, or with `?orphan=true` (weights left as
/// they are), it is removed at once (200).
async fn delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let actor = authorize(&api, &headers)?;
    let outcome = api
        .store
        .delete_or_hand_back(&name, &actor, q.orphan, api.clock.now())
        .await?;
    (api.poke)(&name);
    match outcome {
        rollout_store::Deleted::Gone => {
            let message = if q.orphan {
                "deleted with orphan=true: no longer managed; the load balancer's weights are left exactly as they are"
            } else {
                "deleted: its run held no canary traffic; no longer managed"
            };
            info!(rollout = %name, actor = %actor, orphan = q.orphan, "{message}");
            Ok(Json(crate::openapi::Deleted {
                deleted: name,
                message: message.into(),
                pending: false,
            })
            .into_response())
        }
        rollout_store::Deleted::HandingBack => Ok((
            StatusCode::ACCEPTED,
            Json(crate::openapi::Deleted {
                deleted: name,
                message: "returning all traffic to stable; the rollout is removed once the load balancer shows it (?orphan=true deletes at once and leaves the weights)".into(),
                pending: true,
            }),
        )
            .into_response()),
        rollout_store::Deleted::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("rollout `{name}` not found"),
        )),
    }
}

async fn events(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize_read(&api, &headers)?;
    let found = api.store.rollout(&name).await?.is_some();
    let items = api.store.events(&name).await?;
    if !found && items.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("rollout `{name}` not found"),
        ));
    }
    Ok(Json(crate::openapi::EventList { items }).into_response())
}

use crate::openapi::CommandBody;

async fn command(
    State(api): State<Arc<Api>>,
    Path((name, verb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let actor = authorize(&api, &headers)?;
    let parsed: CommandBody = if body.iter().all(u8::is_ascii_whitespace) {
        CommandBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            let mut err = ApiError::new(StatusCode::BAD_REQUEST, "the body is not valid JSON");
            err.details = vec![json!({"path": "", "line": e.line(), "column": e.column(), "message": e.to_string()})];
            err
        })?
    };
    let kind = match verb.as_str() {
        "abort" => CommandKind::Abort,
        "promote" => CommandKind::Promote { full: parsed.full },
        "pause" => CommandKind::Pause,
        "resume" => CommandKind::Resume,
        "retry" => CommandKind::Retry,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("unknown action `{other}`: abort, promote, pause, resume or retry"),
            ))
        }
    };
    let r = find(&api, &name).await?;
    let status = r.status.clone().unwrap_or_else(|| {
        let spec = &r.rollout.spec;
        RolloutStatus::new(&spec.revision, spec.strategy_name(), api.clock.now())
    });
    if let Err(why) = check_command(&status, kind) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("cannot {verb} `{name}`: {why}"),
        ));
    }
    let id = api
        .store
        .enqueue_command(
            &name,
            kind,
            &actor,
            parsed.reason.as_deref(),
            api.clock.now(),
        )
        .await?;
    (api.poke)(&name);
    Ok((
        StatusCode::ACCEPTED,
        Json(crate::openapi::Accepted {
            accepted: verb,
            rollout: name,
            command: id,
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn token_comparison() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        assert!(!token_matches(b"s3cret", b"s3creT"));
        assert!(!token_matches(b"s3cret", b"s3cre"));
        assert!(token_matches(b"", b""));
    }

    use super::{one_key, LIST_KEY};

    /// The last-known answer of a rollout named like the list is its own.
    #[test]
    fn a_rollout_named_list_has_its_own_last_known_answer() {
        for name in ["list", "rollouts", "rollouts-list"] {
            assert_ne!(one_key(name), LIST_KEY, "{name}");
        }
    }
}
