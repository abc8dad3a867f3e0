//! What the daemon tells the core about the world, and what the core asks it
//! to look at. The core names the data it needs ([`ObservationPlan`]); the
//! daemon fetches it from the load balancer and CloudWatch (or a simulation)
//! and hands it back as [`Observations`].

use rollout_analysis::IntervalMetrics;
use serde::{Deserialize, Serialize};

use crate::status::Weights;
use crate::time::Time;

/// Why something could not be observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservationError {
    /// True when retrying cannot help (resource not found, access denied).
    pub fatal: bool,
    /// What went wrong, naming the resource (and the permission, if any).
    pub message: String,
}

/// One observed value: fetched, failed, or not fetched this time.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Observed<T> {
    /// Not fetched this time.
    #[default]
    Missing,
    /// The value.
    Ok(T),
    /// The fetch failed.
    Err(ObservationError),
}

impl<T> Observed<T> {
    /// The value, when there is one.
    pub fn ok(&self) -> Option<&T> {
        match self {
            Observed::Ok(v) => Some(v),
            _ => None,
        }
    }

    /// The error, when the fetch failed.
    pub fn err(&self) -> Option<&ObservationError> {
        match self {
            Observed::Err(e) => Some(e),
            _ => None,
        }
    }
}

/// The weights of the forward action as the load balancer holds them (raw
/// ALB weights, 0–999 each, not percentages).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ForwardWeights {
    /// The stable target group's weight (0 when absent).
    pub stable: u32,
    /// The canary target group's weight (0 when absent).
    pub canary: u32,
    /// The sum of the weights of target groups the rollout does not own.
    pub other: u32,
}

impl ForwardWeights {
    fn total(&self) -> u64 {
        u64::from(self.stable) + u64::from(self.canary) + u64::from(self.other)
    }

    /// Whether the load balancer sends exactly `stable`/`canary` percent to
    /// the two arms and nothing elsewhere (any scaling of the raw weights).
    pub fn matches(&self, w: Weights) -> bool {
        let total = self.total();
        total > 0
            && self.other == 0
            && u64::from(self.canary) * 100 == u64::from(w.canary) * total
            && u64::from(self.stable) * 100 == u64::from(w.stable) * total
    }

    /// Whether a write of the two arms' weights may go ahead on a forward
    /// action that holds `self` now, for a decision taken on `seen`: not when
    /// it changed since (someone else wrote; transient), nor when target
    /// groups the rollout does not name carry traffic (fatal: rolloutd
    /// never changes them). `place` names the listener or rule.
    pub fn may_write(&self, seen: &ForwardWeights, place: &str) -> Result<(), ObservationError> {
        if self.other > 0 {
            return Err(ObservationError {
                fatal: true,
                message: format!(
                    "{place}: target groups the rollout does not name carry weight {} in the forward action; rolloutd never changes them, so it writes nothing",
                    self.other
                ),
            });
        }
        if self != seen {
            return Err(ObservationError {
                fatal: false,
                message: format!(
                    "{place} changed since it was read (stable {} / canary {} then, stable {} / canary {} now); not written",
                    seen.stable, seen.canary, self.stable, self.canary
                ),
            });
        }
        Ok(())
    }

    /// Whether stable carries all of the traffic.
    pub fn stable_carries_all(&self) -> bool {
        self.stable > 0 && self.canary == 0 && self.other == 0
    }

    /// The split in whole percent (rounded; `other` takes the remainder).
    pub fn percentages(&self) -> Weights {
        let total = self.total();
        if total == 0 {
            return Weights::default();
        }
        let pct = |w: u32| ((u64::from(w) * 100 + total / 2) / total) as u8;
        let stable = pct(self.stable);
        let canary = pct(self.canary).min(100 - stable);
        Weights {
            stable,
            canary,
            other: 100 - stable - canary,
        }
    }
}

/// The canary target group's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetHealth {
    /// Targets in state `healthy`.
    pub healthy: u32,
    /// All registered targets.
    pub total: u32,
}

/// An analysis interval the core wants judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntervalRequest {
    /// The AnalysisTemplate.
    pub template: String,
    /// The canary arm's interval start (inclusive).
    pub start: Time,
    /// Its end (exclusive); results are matched by template and end.
    pub end: Time,
    /// The stable arm's interval: the same, except after a blue-green switch,
    /// when it is the fixed baseline before the switch.
    pub stable_start: Time,
    /// The stable arm's interval end.
    pub stable_end: Time,
}

/// The metrics of one requested interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntervalResult {
    /// The template.
    pub template: String,
    /// The interval's end (as requested).
    pub end: Time,
    /// Both arms' metrics, or why they could not be read.
    pub metrics: Result<IntervalMetrics, ObservationError>,
}

/// How much a read of the load balancer matters, highest last: an AWS API
/// budget serves the more urgent first, and an [`Urgency::Optional`] read is
/// made only when the budget has tokens to spare.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Urgency {
    /// Worth doing only when it costs nobody anything (a drift check before
    /// its cadence is due).
    #[default]
    Optional,
    /// Routine: the drift check at its cadence.
    Routine,
    /// Before a raise (the weights and the canary's health), or before a
    /// run starts.
    BeforeRaise,
    /// A raise's write and its read-back.
    ReadBack,
    /// Returning traffic to stable (rollback, abort, a superseded or deleted
    /// run): never waits behind anything.
    Rollback,
}

impl Urgency {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Optional => "optional",
            Urgency::Routine => "routine",
            Urgency::BeforeRaise => "beforeRaise",
            Urgency::ReadBack => "readBack",
            Urgency::Rollback => "rollback",
        }
    }
}

/// A CloudWatch alarm as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmState {
    /// The alarm's name.
    pub name: String,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    /// CloudWatch's reason for the state.
    pub reason: String,
}

/// A webhook step's call, as the core asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCall {
    /// The step's index.
    pub step: u32,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    /// The JSON body to POST (rollout, revision, run, step, weights, the
    /// last verdicts).
    pub body: String,
    /// The webhook (URL, timeout, secrets), as the spec gives it.
    pub hook: rollout_spec::Webhook,
}

/// How a webhook call went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WebhookOutcome {
    /// A 2xx answer; the body's reason, if any.
    Passed {
        /// The HTTP status.
        status: u16,
        /// The reason the body gave (its `reason` field, or its start).
        reason: String,
    },
    /// An answer other than 2xx: the hook said no.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The reason the body gave.
        reason: String,
    },
    /// No answer (timeout, connection refused, a secret file unreadable).
    NoAnswer {
        /// What went wrong.
        message: String,
    },
}

/// A call to AWS Fault Injection Service the core asks for (a chaos step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExperimentCall {
    /// Start the template's experiment, tagged with the client token; the
    /// same token returns the experiment already started (a repeat after
    /// a crash starts nothing new).
    Start {
        /// `EXT…`.
        template_id: String,
        /// Derived from the rollout, its run and the step's start.
        client_token: String,
    },
    /// Read the experiment's state.
    Get {
        /// `EXP…`.
        id: String,
    },
    /// Stop the experiment (unless it already ended), then read its state.
    Stop {
        /// `EXP…`.
        id: String,
    },
    /// Find the experiment started with this token (its id was never
    /// recorded: a crash between the start and the write) and stop it.
    FindAndStop {
        /// `EXT…`.
        template_id: String,
        /// The token it would carry.
        client_token: String,
    },
}

impl ExperimentCall {
    /// Its place in the API budget: stopping an experiment goes first
    /// (as returning traffic does); starting or reading one is a step's
    /// routine.
    pub fn urgency(&self) -> Urgency {
        match self {
            ExperimentCall::Stop { .. } | ExperimentCall::FindAndStop { .. } => Urgency::Rollback,
            ExperimentCall::Start { .. } | ExperimentCall::Get { .. } => Urgency::ReadBack,
        }
    }
}

/// An FIS experiment as FIS reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentState {
    /// `EXP…`.
    pub id: String,
    /// `pending`, `initiating`, `running`, `completed`, `stopping`,
    /// `stopped`, `failed` or `cancelled`.
    pub status: String,
    /// FIS's reason for it.
    pub reason: String,
}

impl ExperimentState {
    /// Whether the experiment has ended (its state no longer moves).
    pub fn ended(&self) -> bool {
        experiment_ended(&self.status)
    }
}

/// Whether an FIS experiment in `status` has ended (its state no longer
/// moves).
pub fn experiment_ended(status: &str) -> bool {
    matches!(status, "completed" | "stopped" | "failed" | "cancelled")
}

/// What the core needs looked at for its next decision.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservationPlan {
    /// The load balancer's forward weights: read them (at `urgency`).
    pub traffic: bool,
    /// How much that read matters (an optional read may be skipped).
    pub urgency: Urgency,
    /// The canary target group's health.
    pub canary_health: bool,
    /// Analysis intervals that are due.
    pub intervals: Vec<IntervalRequest>,
    /// CloudWatch alarms to read (the rollout's alarm gates).
    #[serde(default)]
    pub alarms: Vec<String>,
    /// A webhook step to call.
    #[serde(default)]
    pub webhook: Option<WebhookCall>,
    /// A chaos step's experiment to start, read or stop.
    #[serde(default)]
    pub experiment: Option<ExperimentCall>,
}

/// What the daemon saw.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observations {
    /// The forward weights.
    pub traffic: Observed<ForwardWeights>,
    /// The canary target group's health.
    pub canary_health: Observed<TargetHealth>,
    /// Results for the requested intervals.
    pub intervals: Vec<IntervalResult>,
    /// The alarms asked for (those that exist).
    #[serde(default)]
    pub alarms: Observed<Vec<AlarmState>>,
    /// The webhook call asked for: its step, attempt and outcome.
    #[serde(default)]
    pub webhook: Option<(u32, u32, WebhookOutcome)>,
    /// The experiment call asked for and what FIS said (`Ok(None)`: a
    /// `FindAndStop` found none: it was never started).
    #[serde(default)]
    pub experiment: Option<(ExperimentCall, Observed<Option<ExperimentState>>)>,
    /// The additional targets' reads (`spec.additionalTargets`, in order),
    /// asked for by the same `traffic` and `canaryHealth` of the plan; the
    /// spec's own target's are `traffic` and `canaryHealth`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_targets: Vec<TargetObservations>,
}

/// What the daemon saw of one additional traffic target.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetObservations {
    /// Its forward weights.
    pub traffic: Observed<ForwardWeights>,
    /// Its canary target group's health.
    pub canary_health: Observed<TargetHealth>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_ignores_scale() {
        let fw = ForwardWeights {
            stable: 950,
            canary: 50,
            other: 0,
        };
        assert!(fw.matches(Weights::for_canary(5)));
        assert!(!fw.matches(Weights::for_canary(10)));
        let single = ForwardWeights {
            stable: 1,
            canary: 0,
            other: 0,
        };
        assert!(single.matches(Weights::for_canary(0)));
        assert!(single.stable_carries_all());
        let foreign = ForwardWeights {
            stable: 90,
            canary: 0,
            other: 10,
        };
        assert!(!foreign.stable_carries_all());
        assert_eq!(
            foreign.percentages(),
            Weights {
                stable: 90,
                canary: 0,
                other: 10
            }
        );
        assert!(!ForwardWeights::default().matches(Weights::for_canary(0)));
    }
}
