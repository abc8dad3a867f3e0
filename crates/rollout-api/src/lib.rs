//! The HTTP API's request and response types: the server (`rolloutd`)
//! serializes them, `rolloutctl` reads them, and the OpenAPI document is
//! built from them (`rolloutd::openapi`). Resources the server builds from
//! what it holds borrow it (`Cow::Borrowed`); a client's are owned. Beside
//! them, the one piece of I/O both binaries share: [`stdout`], their
//! standard output.
#![forbid(unsafe_code)]

pub mod stdout;

use std::borrow::Cow;

use rollout_core::{Event, RolloutStatus, Time};
use rollout_spec::{ObjectMeta, RolloutSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

// The server builds it from borrowed parts; a client reads it owned.
/// One rollout as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RolloutResource<'a> {
    /// Always `rolloutd.dev/v1alpha1`: with `kind`, the resource is a
    /// document `rolloutctl apply` takes back (it ignores `status`,
    /// `generation` and `source`, which the server writes).
    #[serde(rename = "apiVersion")]
    pub api_version: Cow<'a, str>,
    /// Always `Rollout`.
    pub kind: Cow<'a, str>,
    /// Name and labels.
    pub metadata: Cow<'a, ObjectMeta>,
    /// The spec as applied.
    pub spec: Cow<'a, RolloutSpec>,
    /// Where the run stands; absent until the rollout was first reconciled.
    pub status: Option<Cow<'a, RolloutStatus>>,
    /// Grows by one with every change of the spec.
    pub generation: i64,
    /// Where the document came from (a file of the specs directory, or the
    /// API caller).
    pub source: Cow<'a, str>,
}

/// A list of rollouts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RolloutList<'a> {
    /// The rollouts, by name.
    pub items: Vec<RolloutResource<'a>>,
}

/// `GET /api/v1/rollouts/{name}/notifications`: how far the delivery of
/// the rollout's events got, per notifier.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NotificationList {
    /// One per notifier that has delivered or tried to.
    pub items: Vec<NotificationState>,
}

/// The delivery state of one rollout's events to one notifier.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationState {
    /// The notifier (the daemon's config).
    pub notifier: String,
    /// Events delivered so far.
    pub delivered: i64,
    /// Events waiting for delivery (in order; the first holds back the rest).
    pub pending: i64,
    /// Failed attempts at the first waiting event.
    pub attempts: i64,
    /// When the next attempt is due, if one failed.
    pub next_attempt_at: Option<Time>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A rollout's event log, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EventList {
    /// What happened, when, why, who asked, weights before and after.
    pub items: Vec<Event>,
}

/// Every run's report, newest first: the current run (live), then the
/// ended runs the status keeps.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunList {
    /// The reports.
    pub items: Vec<rollout_core::report::RunReport>,
}

/// What an apply did (or, with `dryRun`, would do) to one document.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Applied {
    /// `Rollout` or `AnalysisTemplate`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// `created`, `configured` or `unchanged`.
    pub change: String,
}

/// The answer to an apply.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    /// Whether nothing was changed (`?dryRun=true`).
    pub dry_run: bool,
    /// One entry per document.
    pub results: Vec<Applied>,
}

/// How the specs directory fared.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceList {
    /// Whether the daemon runs with `--specs-dir`.
    pub specs_dir: bool,
    /// One entry per file.
    pub items: Vec<Source>,
    /// How the last scan went (with `--specs-dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanReport>,
}

/// A manual override was queued.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Accepted {
    /// The action.
    pub accepted: String,
    /// The rollout.
    pub rollout: String,
    /// The command's ID (the event log names it when it is applied).
    pub command: u64,
}

/// A rollout is no longer managed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct CommandBody {
    /// Why, for the event log.
    pub reason: Option<String>,
    /// `promote` only: jump to 100% at once.
    #[serde(default)]
    pub full: bool,
}

/// Where a problem is.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// For 422: one entry per problem.
    pub details: Vec<Value>,
}

/// `GET /api/v1/whoami`: what the caller's token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    /// Whether the API has a token (requests without one are refused).
    pub tokens: bool,
    /// Whether this caller may abort, promote, pause, resume, retry,
    /// apply and delete (false with the read-only token).
    pub can_change: bool,
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HealthBody {
    /// `ok` or `ready`.
    pub status: String,
}

/// One file of the specs directory, as the last sync found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// The file.
    pub file: String,
    /// Whether its documents are valid (and applied).
    pub valid: bool,
    /// The Rollouts it manages (for an invalid file: those it applied before).
    pub rollouts: Vec<String>,
    /// The line where each Rollout's document starts (valid files).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lines: std::collections::BTreeMap<String, u32>,
    /// Its problems, each with line, column, path and message.
    pub errors: Vec<serde_json::Value>,
}

/// How the last scan of the specs directory went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    /// Whether it was complete (and so applied); a scan that is not
    /// changes nothing.
    pub complete: bool,
    /// Why it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
    /// Rollouts absent from the directory, waiting out the removal grace
    /// before they are deleted.
    pub pending_removal: Vec<String>,
}
