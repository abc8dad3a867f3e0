//! The API's shapes as types, and the OpenAPI 3.0 document built from them
//! (served at `/api/v1/openapi.json`). The handlers in [`crate::api`]
//! serialize these same types, and the schemas of the documents and the
//! status come from the types the daemon decodes and stores, so the
//! document describes what the API does.

pub use rollout_api::{
    Accepted, Applied, ApplyResult, CommandBody, Deleted, ErrorBody, ErrorDetail, EventList,
    HealthBody, NotificationList, NotificationState, RolloutList, RolloutResource, RunList,
    SourceList, WhoAmI,
};
use rollout_spec::{AnalysisTemplate, Rollout};
use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

/// Every route the API serves: method, path, and what it does. The router
/// and the document are both checked against this list by the API test.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/healthz", "The process is alive."),
    (
        "get",
        "/readyz",
        "The database is reachable and every migration applied.",
    ),
    ("get", "/metrics", "Prometheus text exposition."),
    ("get", "/api/v1/openapi.json", "This document."),
    (
        "post",
        "/api/v1/apply",
        "Create or update Rollouts and AnalysisTemplates, all or nothing.",
    ),
    ("get", "/api/v1/rollouts", "Every rollout."),
    (
        "get",
        "/api/v1/watch",
        "Server-sent events: a `snapshot` of every rollout (as `GET /api/v1/rollouts`), then `rollout` (a rollout's new resource), `deleted` and `event` (an event of the log, with `rollout` and `id`) as they are written; `stale` while the database cannot be read, then `fresh` and a new `snapshot`.",
    ),
    (
        "get",
        "/api/v1/whoami",
        "What the caller may do: `canChange` is false with the read-only token; `tokens` whether tokens are configured.",
    ),
    (
        "get",
        "/api/v1/sources",
        "How each file of the specs directory fared in its last sync.",
    ),
    ("get", "/api/v1/rollouts/{name}", "One rollout."),
    (
        "delete",
        "/api/v1/rollouts/{name}",
        "Stop managing a rollout: a run holding canary traffic first returns it to stable (202), then the rollout is removed; `?orphan=true` removes it at once and leaves the weights.",
    ),
    (
        "get",
        "/api/v1/rollouts/{name}/events",
        "The rollout's event log, oldest first.",
    ),
    (
        "get",
        "/api/v1/rollouts/{name}/notifications",
        "How far the delivery of the rollout's events to each notifier got.",
    ),
    (
        "get",
        "/api/v1/rollouts/{name}/watch",
        "Server-sent events for one rollout: a `snapshot` (`rollout` and its `events`), then `rollout`, `event` and `deleted` as they are written; `stale`/`fresh` as for every rollout.",
    ),
    (
        "get",
        "/api/v1/rollouts/{name}/runs",
        "Every run's report, newest first: how it ended and what each check measured (the effect with a 95% interval, a verdict).",
    ),
    (
        "get",
        "/api/v1/rollouts/{name}/runs/{run}",
        "One run's report.",
    ),
    (
        "post",
        "/api/v1/rollouts/{name}/abort",
        "Abort the run: all traffic back to stable.",
    ),
    (
        "post",
        "/api/v1/rollouts/{name}/promote",
        "Skip the current pause or analysis gate; `{\"full\": true}` jumps to 100%.",
    ),
    (
        "post",
        "/api/v1/rollouts/{name}/pause",
        "Hold the run where it is.",
    ),
    (
        "post",
        "/api/v1/rollouts/{name}/resume",
        "Go on after a pause by hand or for inconclusive analysis.",
    ),
    (
        "post",
        "/api/v1/rollouts/{name}/retry",
        "Start an aborted, rolled-back or failed run again.",
    ),
];

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn errors(codes: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    codes
        .iter()
        .map(|(code, why)| (code.to_string(), json_response(why, reference("ErrorBody"))))
        .collect()
}

/// The errors every request under `/api/v1` may get.
const AUTH_ERRORS: [(&str, &str); 3] = [
    ("401", "Missing or wrong bearer token."),
    ("403", "The read-only token cannot change anything."),
    ("503", "The database is unavailable."),
];

/// `getRollouts`, `postAbort`…: the method and the path's words.
fn operation_id(method: &str, path: &str) -> String {
    format!(
        "{method}{}",
        path.replace("/api/v1", "")
            .replace(['{', '}', '.'], "")
            .split('/')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<String>()
    )
}

/// A route's answers (and its parameters and body, put into `op`).
fn responses(
    method: &str,
    path: &str,
    op: &mut serde_json::Map<String, Value>,
) -> serde_json::Map<String, Value> {
    let mut responses = serde_json::Map::new();
    match (method, path) {
        ("get", "/healthz") => {
            responses.insert(
                "200".into(),
                json_response("Alive.", reference("HealthBody")),
            );
        }
        ("get", "/readyz") => {
            responses.insert(
                "200".into(),
                json_response("Ready.", reference("HealthBody")),
            );
            responses.extend(errors(&[(
                "503",
                "The database is unreachable or migrations are missing.",
            )]));
        }
        ("get", "/metrics") => {
            responses.insert(
                "200".into(),
                json!({"description": "The metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}}),
            );
        }
        ("get", "/api/v1/openapi.json") => {
            responses.insert(
                "200".into(),
                json_response("The OpenAPI document.", json!({"type": "object"})),
            );
        }
        ("post", "/api/v1/apply") => apply_operation(op, &mut responses),
        ("get", "/api/v1/rollouts") => {
            responses.insert(
                "200".into(),
                json_response(
                    "Every rollout (`stale: true` while the database is down).",
                    reference("RolloutList"),
                ),
            );
            responses.extend(errors(&AUTH_ERRORS));
        }
        ("get", "/api/v1/sources") => {
            responses.insert(
                "200".into(),
                json_response("One entry per file.", reference("SourceList")),
            );
            responses.extend(errors(&AUTH_ERRORS));
        }
        ("get", "/api/v1/rollouts/{name}") => {
            responses.insert(
                "200".into(),
                json_response(
                    "The rollout (`stale: true` while the database is down).",
                    reference("RolloutResource"),
                ),
            );
            responses.extend(errors(&[("404", "No such rollout.")]));
            responses.extend(errors(&AUTH_ERRORS));
        }
        ("delete", _) => {
            responses.insert(
                "200".into(),
                json_response("No longer managed.", reference("Deleted")),
            );
            responses.insert(
                "202".into(),
                json_response(
                    "Its traffic returns to stable; removed once the load balancer shows it.",
                    reference("Deleted"),
                ),
            );
            responses.extend(errors(&[("404", "No such rollout.")]));
            responses.extend(errors(&AUTH_ERRORS));
        }
        ("get", "/api/v1/watch" | "/api/v1/rollouts/{name}/watch" | "/api/v1/whoami") => {
            live_responses(path, &mut responses);
        }
        ("get", _) => {
            let (why, schema) = subresource(path);
            responses.insert("200".into(), json_response(why, reference(schema)));
            responses.extend(errors(&[("404", "No such rollout (or run).")]));
            responses.extend(errors(&AUTH_ERRORS));
        }
        _ => command_operation(op, &mut responses),
    }
    responses
}

/// The streams and `whoami`: what the dashboard reads besides the rest.
fn live_responses(path: &str, responses: &mut serde_json::Map<String, Value>) {
    if path == "/api/v1/whoami" {
        responses.insert(
            "200".into(),
            json_response("What the caller may do.", reference("WhoAmI")),
        );
    } else {
        responses.insert(
            "200".into(),
            json!({"description": "A stream of server-sent events (`event:` names the kind, `data:` is JSON).", "content": {"text/event-stream": {"schema": {"type": "string"}}}}),
        );
        responses.extend(errors(&[("404", "No such rollout.")]));
    }
    responses.extend(errors(&AUTH_ERRORS));
}

/// `POST /api/v1/apply`.
fn apply_operation(
    op: &mut serde_json::Map<String, Value>,
    responses: &mut serde_json::Map<String, Value>,
) {
    op.insert(
            "parameters".into(),
            json!([{"name": "dryRun", "in": "query", "required": false, "schema": {"type": "boolean", "default": false}, "description": "Report what would change; change nothing."}]),
        );
    op.insert(
            "requestBody".into(),
            json!({"required": true, "description": "Rollout and AnalysisTemplate documents: YAML (several, separated by `---`) or JSON. At most 1 MiB.",
                   "content": {
                       "application/yaml": {"schema": {"type": "string"}},
                       "application/json": {"schema": {"oneOf": [reference("Rollout"), reference("AnalysisTemplate")]}}
                   }}),
        );
    responses.insert(
        "200".into(),
        json_response(
            "Applied (or, with dryRun, what would change).",
            reference("ApplyResult"),
        ),
    );
    responses.extend(errors(&[
            ("400", "The body is not UTF-8 text."),
            ("413", "The body is over 1 MiB."),
            ("409", "A Rollout names a listener rule (or default action) another Rollout owns; `details` names the owner, and nothing was applied."),
            ("422", "A document is invalid; `details` has path, line, column and message of each problem, and nothing was applied."),
        ]));
    responses.extend(errors(&AUTH_ERRORS));
}

/// The overrides: `POST /api/v1/rollouts/{name}/{abort,promote,…}`.
fn command_operation(
    op: &mut serde_json::Map<String, Value>,
    responses: &mut serde_json::Map<String, Value>,
) {
    op.insert(
            "requestBody".into(),
            json!({"required": false, "content": {"application/json": {"schema": reference("CommandBody")}}}),
        );
    responses.insert(
        "202".into(),
        json_response(
            "Queued; the rollout is reconciled at once.",
            reference("Accepted"),
        ),
    );
    responses.extend(errors(&[
        ("400", "The body is not valid JSON."),
        ("404", "No such rollout."),
        (
            "409",
            "The action does not apply to the run as it stands; `error` says why.",
        ),
    ]));
    responses.extend(errors(&AUTH_ERRORS));
}

/// A rollout's readable parts: what the answer holds, and its schema.
fn subresource(path: &str) -> (&'static str, &'static str) {
    match path.rsplit('/').next() {
        Some("notifications") => ("One entry per notifier.", "NotificationList"),
        Some("runs") => ("Every run's report, newest first.", "RunList"),
        Some("{run}") => ("The run's report.", "RunReport"),
        _ => ("The events.", "EventList"),
    }
}

/// The OpenAPI 3.0 document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    // Registering a type puts it (and everything it names) in the components.
    let _ = generator.subschema_for::<RolloutResource<'static>>();
    let _ = generator.subschema_for::<RolloutList<'static>>();
    let _ = generator.subschema_for::<EventList>();
    let _ = generator.subschema_for::<NotificationList>();
    let _ = generator.subschema_for::<RunList>();
    let _ = generator.subschema_for::<ApplyResult>();
    let _ = generator.subschema_for::<SourceList>();
    let _ = generator.subschema_for::<Accepted>();
    let _ = generator.subschema_for::<Deleted>();
    let _ = generator.subschema_for::<CommandBody>();
    let _ = generator.subschema_for::<ErrorBody>();
    let _ = generator.subschema_for::<ErrorDetail>();
    let _ = generator.subschema_for::<HealthBody>();
    let _ = generator.subschema_for::<WhoAmI>();
    let _ = generator.subschema_for::<Rollout>();
    let _ = generator.subschema_for::<AnalysisTemplate>();
    let schemas = generator.take_definitions(true);

    let name_param = json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The rollout's name."}]);
    let mut paths = serde_json::Map::new();
    for (method, path, summary) in ROUTES {
        let mut op = serde_json::Map::new();
        op.insert("summary".into(), json!(summary));
        op.insert("operationId".into(), json!(operation_id(method, path)));
        if path.contains("{run}") {
            let mut params = name_param.clone();
            if let Value::Array(a) = &mut params {
                a.push(json!({"name": "run", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0}, "description": "The run's number."}));
            }
            op.insert("parameters".into(), params);
        } else if path.contains("{name}") {
            op.insert("parameters".into(), name_param.clone());
        }
        let responses = responses(method, path, &mut op);
        if path.starts_with("/api/v1/") && *path != "/api/v1/openapi.json" {
            op.insert("security".into(), json!([{"bearer": []}, {}]));
        }
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        if let Value::Object(m) = entry {
            m.insert(method.to_string(), Value::Object(op));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "rolloutd",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Progressive delivery for services behind AWS Application Load Balancers: status and manual overrides of Rollouts. Errors are `{\"error\", \"details\"}`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "The API token (`--api-token-file`) for changes; the read-only token (`--api-read-token-file`) or the API token for reads when one is configured."}},
        },
    })
}
