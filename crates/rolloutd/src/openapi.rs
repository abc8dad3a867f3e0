//! The API's shapes as types, and the OpenAPI 3.0 document built from them
//! (served at `/api/v1/openapi.json`). The handlers in [`crate::api`]
//! serialize these same types, and the schemas of the documents and the
//! status come from the types the daemon decodes and stores, so the
//! document describes what the API does.

use rollout_core::{Event, RolloutStatus};
use rollout_spec::{AnalysisTemplate, ObjectMeta, Rollout, RolloutSpec};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::specs::Source;

/// One rollout as the API shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RolloutResource<'a> {
    /// Name and labels.
    pub metadata: &'a ObjectMeta,
    /// The spec as applied.
    pub spec: &'a RolloutSpec,
    /// Where the run stands; absent until the rollout was first reconciled.
    pub status: Option<&'a RolloutStatus>,
    /// Grows by one with every change of the spec.
    pub generation: i64,
    /// Where the document came from (a file of the specs directory, or the
    /// API caller).
    pub source: &'a str,
}

/// A list of rollouts.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RolloutList<'a> {
    /// The rollouts, by name.
    pub items: Vec<RolloutResource<'a>>,
}

/// A rollout's event log, oldest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventList {
    /// What happened, when, why, who asked, weights before and after.
    pub items: Vec<Event>,
}

/// What an apply did (or, with `dryRun`, would do) to one document.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Applied {
    /// `Rollout` or `AnalysisTemplate`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// `created`, `configured` or `unchanged`.
    pub change: String,
}

/// The answer to an apply.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    /// Whether nothing was changed (`?dryRun=true`).
    pub dry_run: bool,
    /// One entry per document.
    pub results: Vec<Applied>,
}

/// How the specs directory fared.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceList {
    /// Whether the daemon runs with `--specs-dir`.
    pub specs_dir: bool,
    /// One entry per file.
    pub items: Vec<Source>,
    /// How the last scan went (with `--specs-dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<crate::specs::ScanReport>,
}

/// A manual override was queued.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Accepted {
    /// The action.
    pub accepted: String,
    /// The rollout.
    pub rollout: String,
    /// The command's ID (the event log names it when it is applied).
    pub command: u64,
}

/// A rollout is no longer managed.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Deleted {
    /// Its name.
    pub deleted: String,
    /// What that means for its traffic.
    pub message: String,
    /// True while its traffic returns to stable (202): the rollout is
    /// removed once the load balancer shows stable carrying all of it.
    pub pending: bool,
}

/// The body of a manual override (optional).
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct CommandBody {
    /// Why, for the event log.
    pub reason: Option<String>,
    /// `promote` only: jump to 100% at once.
    #[serde(default)]
    pub full: bool,
}

/// Where a problem is.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// The field path (`spec.strategy.canary.steps[0].setWeight`).
    pub path: String,
    /// 1-based line in the request body.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Every error: what went wrong, and where for invalid documents.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// For 422: one entry per problem.
    pub details: Vec<Value>,
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthBody {
    /// `ok` or `ready`.
    pub status: String,
}

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

/// The OpenAPI 3.0 document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    // Registering a type puts it (and everything it names) in the components.
    let _ = generator.subschema_for::<RolloutResource<'static>>();
    let _ = generator.subschema_for::<RolloutList<'static>>();
    let _ = generator.subschema_for::<EventList>();
    let _ = generator.subschema_for::<ApplyResult>();
    let _ = generator.subschema_for::<SourceList>();
    let _ = generator.subschema_for::<Accepted>();
    let _ = generator.subschema_for::<Deleted>();
    let _ = generator.subschema_for::<CommandBody>();
    let _ = generator.subschema_for::<ErrorBody>();
    let _ = generator.subschema_for::<ErrorDetail>();
    let _ = generator.subschema_for::<HealthBody>();
    let _ = generator.subschema_for::<Rollout>();
    let _ = generator.subschema_for::<AnalysisTemplate>();
    let schemas = generator.take_definitions(true);

    let name_param = json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The rollout's name."}]);
    let auth_errors = [
        ("401", "Missing or wrong bearer token."),
        ("403", "The read-only token cannot change anything."),
        ("503", "The database is unavailable."),
    ];
    let mut paths = serde_json::Map::new();
    for (method, path, summary) in ROUTES {
        let mut op = serde_json::Map::new();
        op.insert("summary".into(), json!(summary));
        op.insert(
            "operationId".into(),
            json!(format!(
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
            )),
        );
        if path.contains("{name}") {
            op.insert("parameters".into(), name_param.clone());
        }
        let mut responses = serde_json::Map::new();
        match (*method, *path) {
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
            ("post", "/api/v1/apply") => {
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
                responses.extend(errors(&auth_errors));
            }
            ("get", "/api/v1/rollouts") => {
                responses.insert(
                    "200".into(),
                    json_response(
                        "Every rollout (`stale: true` while the database is down).",
                        reference("RolloutList"),
                    ),
                );
                responses.extend(errors(&auth_errors));
            }
            ("get", "/api/v1/sources") => {
                responses.insert(
                    "200".into(),
                    json_response("One entry per file.", reference("SourceList")),
                );
                responses.extend(errors(&auth_errors));
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
                responses.extend(errors(&auth_errors));
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
                responses.extend(errors(&auth_errors));
            }
            ("get", _) => {
                responses.insert(
                    "200".into(),
                    json_response("The events.", reference("EventList")),
                );
                responses.extend(errors(&[("404", "No such rollout.")]));
                responses.extend(errors(&auth_errors));
            }
            _ => {
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
                responses.extend(errors(&auth_errors));
            }
        }
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
