//! What the core remembers between reconciles: the status of a rollout's
//! current run. It is everything the next decision needs besides the spec,
//! the observations and the time, and it is what the API shows.

use std::collections::BTreeMap;

use rollout_analysis::{IntervalMetrics, IntervalVerdict, Verdict};
use serde::{Deserialize, Serialize};

use crate::time::Time;

/// The phase of a run (the contract's list).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum Phase {
    /// Not started: waiting for its preconditions.
    Pending,
    /// Moving through its steps.
    Progressing,
    /// Holding where it is: a pause step, a person, or inconclusive analysis.
    Paused,
    /// Finished with the canary at 100%.
    Succeeded,
    /// Analysis failed; traffic returned to stable.
    RolledBack,
    /// A person aborted it; traffic returned to stable.
    Aborted,
    /// It cannot proceed (a missing ARN, access denied, no progress).
    Failed,
}

impl Phase {
    /// Every phase, in the contract's order.
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Paused,
        Phase::Succeeded,
        Phase::RolledBack,
        Phase::Aborted,
        Phase::Failed,
    ];

    /// Whether the run is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::RolledBack | Phase::Aborted | Phase::Failed
        )
    }

    /// The name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Succeeded => "Succeeded",
            Phase::RolledBack => "RolledBack",
            Phase::Aborted => "Aborted",
            Phase::Failed => "Failed",
        }
    }
}

/// Traffic split in percent; `stable + canary + other == 100` when read from
/// a load balancer (other: target groups the rollout does not own).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Weights {
    /// Stable's share.
    pub stable: u8,
    /// Canary's share.
    pub canary: u8,
    /// Other target groups' share.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl Weights {
    /// The split for a canary weight (clamped to 100): stable gets the rest.
    pub fn for_canary(canary: u8) -> Self {
        let canary = canary.min(100);
        Weights {
            stable: 100 - canary,
            canary,
            other: 0,
        }
    }
}

/// Why a run is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum PauseReason {
    /// A `pause: {}` step: waits for `promote`.
    Step,
    /// A person paused it.
    Manual {
        /// Who asked.
        actor: String,
        /// Their reason.
        reason: Option<String>,
        /// When.
        since: Time,
    },
    /// Analysis was inconclusive too many intervals in a row.
    Inconclusive,
    /// A check failed and `spec.rollback.onFailure` is `freeze`: the
    /// weights stay as they are until a person resumes or aborts.
    Frozen,
    /// Blue-green: the preview passed; waiting for `promote`.
    AwaitingPromotion,
    /// The load balancer held weights this run did not write; the run keeps
    /// its hands off them until a person resumes (or aborts) it.
    Drift {
        /// What the load balancer held.
        seen: Weights,
        /// What the run had set.
        expected: Weights,
        /// When it was noticed.
        since: Time,
    },
}

/// A request to stop managing a rollout once its traffic is back on stable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    /// Who asked.
    pub actor: String,
    /// When.
    pub since: Time,
}

/// Where a blue-green run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum BlueGreenStage {
    /// The new target group gets no production traffic; pre-promotion analysis runs.
    Preview,
    /// All traffic is being moved to the new target group.
    Switching,
    /// After the switch; post-promotion analysis runs.
    PostPromotion,
}

/// A blue-green run's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStatus {
    /// The stage.
    pub stage: BlueGreenStage,
    /// When the stage began.
    pub stage_started_at: Time,
    /// Whether the preview passed its checks (and may be promoted).
    pub preview_passed: bool,
    /// Whether the pre-promotion chaos check's experiment completed with
    /// the preview holding up.
    #[serde(default)]
    pub chaos_passed: bool,
}

/// The analysis of one template in the current run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateAnalysis {
    /// Intervals judged (or given up on) since the analysis origin.
    #[serde(alias = "windowsDone")]
    pub intervals_done: u32,
    /// Passing intervals since the analysis origin (the current weight).
    pub passes: u32,
    /// Failed intervals in the whole run.
    pub failed: u32,
    /// Inconclusive intervals in a row.
    pub inconclusive_in_a_row: u32,
    /// Metric-source errors in a row (intervals that could not be read).
    pub errors_in_a_row: u32,
    /// The last interval's end and verdict.
    pub last: Option<JudgedInterval>,
    /// The metrics of every interval judged in this run, oldest first (the
    /// sequential and Mann-Whitney judges weigh them all); at most
    /// [`HISTORY_INTERVALS`] entries, the oldest merged in pairs
    /// (`rollout_analysis::compact`), so a run of any length is covered.
    #[serde(default)]
    pub history: Vec<IntervalMetrics>,
    /// The entries of `history` judged while the run's last chaos
    /// experiment ran: `[from, to)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<[u32; 2]>,
    /// The newest judged intervals' end, weight and verdicts (at most
    /// [`MARKS_KEPT`]), oldest first: the last entries of `history` that
    /// were not merged are these intervals, so a chart can mark each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<IntervalMark>,
    /// What stable's intervals before the run taught about how much its
    /// 5xx rate wanders; absent until they were read (at the run's start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<LearntNoise>,
}

impl TemplateAnalysis {
    /// The per-interval CV of each arm's 5xx rate learnt before the run,
    /// when it was: what every test of the run (the judge, the pacing's
    /// evidence, the report) takes the wander to be.
    pub fn error_cv(&self) -> Option<f64> {
        self.noise.and_then(|n| n.error_cv)
    }
}

/// How much stable's 5xx rate wandered from one interval to the next in
/// the [`NOISE_INTERVALS`] intervals before the run
/// (`rollout_analysis::noise`): the judge assumes it for both arms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LearntNoise {
    /// The per-interval CV of each arm's 5xx rate the judge assumes;
    /// absent when the history taught nothing (then it assumes 50%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_cv: Option<f64>,
    /// Stable's intervals with requests that it was learnt from.
    pub intervals: u32,
}

/// How many of stable's intervals before a run are read to learn how much
/// its 5xx rate wanders: an hour of one-minute intervals.
pub const NOISE_INTERVALS: u32 = 60;

/// How many judged intervals keep their mark (an hour and a half of
/// one-minute intervals): enough for a chart, small beside the history
/// (about 14 KB at most for a two-check template).
pub const MARKS_KEPT: usize = 90;

/// One judged interval, for a chart: when it ended, at which weight, and
/// what each check said with its limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntervalMark {
    /// The interval's end.
    pub end: Time,
    /// The canary weight during it.
    pub weight: u8,
    /// The combined verdict.
    pub verdict: Verdict,
    /// Each check's verdict and the largest canary value that passes.
    pub checks: Vec<MarkCheck>,
}

/// `x` to six significant digits: a chart's precision, a third of the text.
fn six_digits(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(5 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// One check's part of an [`IntervalMark`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarkCheck {
    /// `errorRate`, `latency` or a custom metric's name.
    pub metric: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// The largest canary value that passes, when one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
}

impl IntervalMark {
    /// The mark of an interval judged `result`.
    pub fn of(end: Time, weight: u8, result: &IntervalVerdict) -> IntervalMark {
        IntervalMark {
            end,
            weight,
            verdict: result.verdict,
            checks: result
                .metrics
                .iter()
                .map(|m| MarkCheck {
                    metric: m.metric.clone(),
                    verdict: m.verdict,
                    limit: m.limit.map(six_digits),
                })
                .collect(),
        }
    }
}

/// How many entries of metrics a template keeps per run: the newest
/// intervals whole (about 5½ hours of one-minute intervals), older ones
/// merged. Bounds a status: see docs/BENCHMARKS.md ("A long run's status").
pub const HISTORY_INTERVALS: usize = 360;

/// One judged interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JudgedInterval {
    /// The interval's end.
    pub end: Time,
    /// The canary weight during it.
    pub canary_weight: u8,
    /// The verdict with its evidence.
    pub result: IntervalVerdict,
}

/// The analysis of the current run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// Intervals are `[origin + k·interval, origin + (k+1)·interval)`; set
    /// when the current weight was seen applied, none while nothing is judged.
    pub origin: Option<Time>,
    /// For blue-green post-promotion: stable's fixed baseline interval (the
    /// one before the switch), since stable has no traffic after it.
    pub baseline: Option<(Time, Time)>,
    /// Per template.
    pub templates: BTreeMap<String, TemplateAnalysis>,
}

impl AnalysisStatus {
    /// Whether an interval ending at `end` is one of stable's before the
    /// run (read once to learn its noise, never judged): it ends at or
    /// before the origin, every run interval after it.
    pub fn before_run(&self, end: Time) -> bool {
        self.origin.is_some_and(|o| end <= o)
    }
}

/// A run that ended, kept for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The run's number.
    pub run: u32,
    /// Its revision.
    pub revision: String,
    /// How it ended: a phase name, or `Superseded`.
    pub outcome: String,
    /// When it started, if it did.
    pub started_at: Option<Time>,
    /// When it ended.
    pub ended_at: Time,
    /// Its last message.
    pub message: String,
    /// Requests the canary served in its judged intervals.
    #[serde(default)]
    pub canary_requests: f64,
    /// What each template's checks measured (its report, computed when it
    /// ended).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: crate::report::Checks,
    /// The same over the intervals judged while its last chaos experiment
    /// ran.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub under_chaos: crate::report::Checks,
}

/// A webhook step's calls so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// The step's index.
    pub step: u32,
    /// Calls made that got no answer.
    pub attempts: u32,
    /// The next call is not made before this.
    pub next_at: Time,
    /// What the last call said.
    pub last: Option<String>,
    /// A blue-green gate answered 2xx (a canary step moves on instead).
    #[serde(default)]
    pub passed: bool,
}

/// A chaos step's experiment: the intent (written before it starts) and
/// what FIS last said of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosStatus {
    /// The step's index.
    pub step: u32,
    /// The experiment template (`EXT…`).
    pub template_id: String,
    /// The client token it is started with (and tagged with).
    pub client_token: String,
    /// When the step asked for it: its duration counts from here.
    pub requested_at: Time,
    /// The experiment's id, once FIS gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// Its last state (`running`, `completed`, `stopped`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// FIS's reason for that state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The run left the step other than by its success: the experiment is
    /// being stopped (until FIS shows it ended).
    #[serde(default)]
    pub stop: bool,
}

/// How many ended runs the status summarises (their reports are in the
/// store's run history, `GET …/runs`).
pub const HISTORY_LIMIT: usize = 10;

/// One traffic target of a rollout that moves several in lockstep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// The target's name (`main` for the spec's own `trafficRouting`).
    pub name: String,
    /// The listener rule, or the listener whose default action, it shifts.
    pub place: String,
    /// Its stable target group.
    pub stable_target_group_arn: String,
    /// Its canary target group.
    pub canary_target_group_arn: String,
    /// The weights last read from it.
    pub observed_weights: Option<Weights>,
    /// Whether it held the run's desired weights when last read.
    pub holds_run_weights: bool,
}

/// The status of a rollout: its current run, and the last few before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The phase.
    pub phase: Phase,
    /// The revision of the current run.
    pub revision: String,
    /// The run's number: 1 for the first, +1 for each new revision or retry.
    pub run: u32,
    /// `canary` or `blueGreen`.
    pub strategy: String,
    /// The target group that serves the revision running before this run
    /// (all traffic returns there on a rollback).
    #[serde(default)]
    pub stable_target_group_arn: String,
    /// The target group of this run's revision: where the new version is
    /// deployed, and where traffic moves step by step.
    #[serde(default)]
    pub canary_target_group_arn: String,
    /// The current step.
    pub current_step_index: u32,
    /// The desired canary weight.
    pub canary_weight: u8,
    /// The weights last read from the load balancer (the main target's,
    /// when the rollout moves several).
    pub observed_weights: Option<Weights>,
    /// Each traffic target, when the rollout moves several in lockstep
    /// (`spec.additionalTargets`): what was last read from each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetStatus>,
    /// What is happening, or what the run waits for, in a sentence.
    pub message: String,
    /// When the run started moving traffic.
    pub started_at: Option<Time>,
    /// When this status last changed.
    pub updated_at: Time,
    /// When the run ended.
    pub ended_at: Option<Time>,
    /// When the current step began.
    pub step_started_at: Option<Time>,
    /// When the desired weight was seen applied; none while it is not.
    pub weight_verified_at: Option<Time>,
    /// The last time the run moved forward (for the progress deadline).
    pub last_progress_at: Option<Time>,
    /// Why the run is paused, when it is.
    pub pause: Option<PauseReason>,
    /// A person promoted the current step (skips its analysis gate).
    pub step_promoted: bool,
    /// Blue-green progress.
    pub blue_green: Option<BlueGreenStatus>,
    /// Gradual rollback progress: the index into `spec.rollback.steps`.
    pub rollback_step: Option<u32>,
    /// The superseded run whose traffic this pending run returns first.
    pub returning_from: Option<String>,
    /// The analysis.
    pub analysis: AnalysisStatus,
    /// A canary run's bake after promotion (`strategy.canary.postPromotion`):
    /// when it began, while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_started_at: Option<Time>,
    /// The webhook step being called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookStatus>,
    /// The chaos step's experiment (also one still being stopped after
    /// the run left its step, or after a new run began).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<ChaosStatus>,
    /// The last command applied.
    pub last_command_id: u64,
    /// Set when the rollout is being deleted: its traffic goes back to
    /// stable, then the rollout is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting: Option<Deletion>,
    /// The last ended runs, newest last: how each ended (their reports are
    /// in the store's run history).
    pub history: Vec<RunRecord>,
}

impl RolloutStatus {
    /// The status of a rollout seen for the first time.
    pub fn new(revision: &str, strategy: &str, now: Time) -> Self {
        RolloutStatus {
            phase: Phase::Pending,
            revision: revision.to_string(),
            run: 1,
            strategy: strategy.to_string(),
            stable_target_group_arn: String::new(),
            canary_target_group_arn: String::new(),
            current_step_index: 0,
            canary_weight: 0,
            observed_weights: None,
            targets: Vec::new(),
            message: "starting".into(),
            started_at: None,
            updated_at: now,
            ended_at: None,
            step_started_at: None,
            weight_verified_at: None,
            last_progress_at: None,
            pause: None,
            step_promoted: false,
            blue_green: None,
            rollback_step: None,
            returning_from: None,
            analysis: AnalysisStatus::default(),
            bake_started_at: None,
            webhook: None,
            chaos: None,
            last_command_id: 0,
            deleting: None,
            history: Vec::new(),
        }
    }

    /// Whether the run owns the traffic of its listener rule: after it
    /// started (stable was seen carrying all of it) until its final weights
    /// were seen, or while it returns the traffic of a run it superseded. A
    /// run that does not own the traffic never writes weights.
    pub fn owns_traffic(&self) -> bool {
        match self.phase {
            Phase::Pending => self.returning_from.is_some(),
            Phase::Progressing => true,
            // Paused by hand before it started: it owns nothing yet (only
            // the traffic of a run it supersedes, which goes to stable).
            Phase::Paused => self.started_at.is_some() || self.returning_from.is_some(),
            _ => self.started_at.is_some() && self.weight_verified_at.is_none(),
        }
    }

    /// Whether deleting the rollout must first return traffic to stable: the
    /// run owns traffic that is not all on stable (a finished, successful
    /// run's traffic belongs to its revision and is left alone).
    pub fn holds_canary_traffic(&self) -> bool {
        self.owns_traffic() && self.phase != Phase::Succeeded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status stored before `windowsDone` was called `intervalsDone`
    /// reads back with its count.
    #[test]
    fn a_stored_windows_done_still_reads() {
        let old = r#"{"windowsDone": 3, "passes": 1, "failed": 0, "inconclusiveInARow": 0, "errorsInARow": 0, "last": null}"#;
        let t: TemplateAnalysis = serde_json::from_str(old).expect("reads");
        assert_eq!((t.intervals_done, t.passes), (3, 1));
        let new = serde_json::to_value(&t).expect("writes");
        assert_eq!(new["intervalsDone"], 3);
    }
}
