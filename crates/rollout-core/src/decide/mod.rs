//! The decision: `(spec, status, observations, commands, now) -> (status,
//! actions, events)`. Level-triggered: every call starts from what is
//! observed, and calling it twice with the same inputs gives the same result.
//!
//! One reconcile runs these stages in order:
//! 1. record the weights the load balancer holds, and notice weights this
//!    run did not write (drift: an event, then `spec.onDrift`);
//! 2. a new `spec.revision` supersedes the run (traffic back to stable first);
//! 3. apply new commands (abort, promote, pause, resume, retry);
//! 4. a fatal observation (ARN not found, access denied) fails the run;
//! 5. notice when the desired weight is seen applied;
//! 6. judge the analysis intervals that are due (may roll back);
//! 7. move the run forward (steps, pauses, blue-green stages, rollback steps);
//! 8. fail a run that made no progress for `progressDeadline`;
//! 9. ask for a weight write when the load balancer differs from the desired
//!    weights and the run owns the traffic (never while paused for drift,
//!    never when target groups the rollout does not name carry traffic);
//!    a rollout being deleted is forgotten once it owns no traffic.

use std::collections::BTreeMap;

mod analysis;
mod blue_green;
mod canary;
mod chaos;
mod commands;
mod ending;
mod gates;
mod pacing;
mod plan;
mod targets;
mod traffic;

pub use chaos::client_token;
use plan::{analysis_config, due_intervals, grid_floor, AnalysisConfig};
pub use plan::{plan, plan_reads};
pub use targets::{expand, pool, split_unit, unit_key, unit_reads, Expanded};
pub use traffic::write_urgency;

use rollout_analysis::Verdict;
use rollout_spec::{AnalysisTemplateSpec, CanaryStep, Rollout};
use serde::{Deserialize, Serialize};

use crate::command::{check, Command, CommandKind};
use crate::observe::{
    IntervalRequest, IntervalResult, ObservationPlan, Observations, Observed, Urgency,
};
use crate::status::{
    BlueGreenStage, BlueGreenStatus, IntervalMark, JudgedInterval, LearntNoise, PauseReason, Phase,
    RolloutStatus, RunRecord, Weights, HISTORY_INTERVALS, HISTORY_LIMIT, MARKS_KEPT,
    NOISE_INTERVALS,
};
use crate::time::Time;

/// How many due intervals of one template are asked for in one reconcile (a
/// daemon that was down catches up over a few reconciles).
pub const MAX_INTERVALS_PER_TICK: u32 = 10;

/// While a weight change waits to be seen on the load balancer, look again this soon.
pub const VERIFY_REQUEUE_MS: u64 = 2_000;

/// After a weight write, look again this soon (to see it applied).
pub const WRITTEN_REQUEUE_MS: u64 = 200;

/// How many queued commands one decision applies (the oldest first); the
/// rest wait for the next reconcile, which comes at once. A decision's
/// events stay bounded however many commands were queued.
pub const MAX_COMMANDS_PER_DECISION: usize = 100;

/// When more commands wait than one decision applies, look again this soon.
const MORE_COMMANDS_REQUEUE_MS: u64 = 100;

/// The spec side of a decision: the rollout and the templates it names.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The rollout.
    pub rollout: &'a Rollout,
    /// AnalysisTemplates by name (at least those the rollout names).
    pub templates: &'a BTreeMap<String, AnalysisTemplateSpec>,
}

/// Something the daemon must do in the world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Action {
    /// Set the forward action's weights (then read them back), unless the
    /// load balancer no longer holds what the decision saw (someone else
    /// wrote in between: the next reconcile sees it as drift).
    SetWeights {
        /// The split to write.
        weights: Weights,
        /// The raw weights the decision was taken on.
        seen: crate::observe::ForwardWeights,
        /// Which traffic target (0: the spec's own; `i`: its
        /// `additionalTargets[i - 1]`).
        #[serde(default, skip_serializing_if = "is_main_target")]
        target: u32,
        /// Its place in the API budget: returning traffic to stable goes
        /// before everything ([`Urgency::Rollback`]); a raise of a run under
        /// way before routine reads ([`Urgency::ReadBack`]); a run's first
        /// raise (from no canary traffic) waits behind the steps of runs
        /// already under way ([`Urgency::Routine`]), so that a burst of new
        /// releases delays its own starts, not the steps of releases that
        /// already expose users to a canary.
        #[serde(default)]
        urgency: Urgency,
    },
}

fn is_main_target(target: &u32) -> bool {
    *target == 0
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum EventKind {
    /// A run began moving traffic.
    RunStarted,
    /// The desired weights changed.
    WeightSet,
    /// The load balancer was seen holding the desired weights.
    WeightVerified,
    /// The run moved to another step.
    StepAdvanced,
    /// An analysis interval was judged.
    AnalysisJudged,
    /// An analysis interval could not be read.
    AnalysisError,
    /// The run paused.
    Paused,
    /// The run resumed.
    Resumed,
    /// A person promoted the run.
    Promoted,
    /// The run finished with the canary at 100%.
    Succeeded,
    /// Analysis failed; traffic goes back to stable.
    RolledBack,
    /// A person aborted the run.
    Aborted,
    /// The run cannot proceed.
    Failed,
    /// A new revision replaced the run.
    Superseded,
    /// A failed run starts again.
    Retried,
    /// A command did not apply.
    CommandIgnored,
    /// The load balancer held weights this run did not write.
    WeightDrift,
    /// The rollout is being deleted: traffic returns to stable first.
    Deleting,
    /// Ping-pong target groups: the one carrying all traffic was taken as
    /// stable, the other as the canary.
    RolesSwapped,
    /// A webhook step answered 2xx.
    WebhookPassed,
    /// A chaos step's experiment: asked for, its state, stopped.
    Chaos,
    /// The canary reached 100%: the bake after promotion began.
    BakeStarted,
}

/// One entry of a run's history: what happened, when, why, who asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When.
    pub at: Time,
    /// The run it belongs to.
    pub run: u32,
    /// That run's revision.
    pub revision: String,
    /// What happened.
    pub kind: EventKind,
    /// Why, in a sentence.
    pub message: String,
    /// Who asked, for a person's command.
    pub actor: Option<String>,
    /// The desired canary weight before.
    pub weight_before: u8,
    /// The desired canary weight after.
    pub weight_after: u8,
}

/// What the message of a judged interval says when its verdict failed
/// (`"T at canary W%: fail (…)"`, see `analysis.rs`).
const FAILED_VERDICT: &str = ": fail (";

/// What the message of a drift that pauses the run says.
const DRIFT_PAUSES: &str = "the run is paused";

impl Event {
    /// Whether people hear of it (notifications): every kind but a judged
    /// interval, and of those only a failing verdict.
    pub fn notable(&self) -> bool {
        self.kind != EventKind::AnalysisJudged || self.message.contains(FAILED_VERDICT)
    }

    /// The phase the event leaves the run in.
    pub fn phase_after(&self) -> &'static str {
        match self.kind {
            EventKind::Paused => "Paused",
            EventKind::Succeeded => "Succeeded",
            EventKind::RolledBack => "RolledBack",
            EventKind::Aborted => "Aborted",
            EventKind::Failed => "Failed",
            EventKind::Superseded => "Superseded",
            EventKind::WeightDrift if self.message.contains(DRIFT_PAUSES) => "Paused",
            _ => "Progressing",
        }
    }
}

/// The outcome of one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The new status (the same as before when nothing changed).
    pub status: RolloutStatus,
    /// Whether the status differs from the one given (only then is it written).
    pub changed: bool,
    /// What to do in the world, after the status is recorded.
    pub actions: Vec<Action>,
    /// What happened, for the event log.
    pub events: Vec<Event>,
    /// The run this decision ended, whole (its report included), for the
    /// store's run history; the status keeps a summary of the last few.
    pub ended_runs: Vec<RunRecord>,
    /// Look again within this many milliseconds (a pause ends, an interval
    /// falls due); `None`: at the daemon's regular interval.
    pub requeue_after_ms: Option<u64>,
    /// The rollout is being deleted and owns no traffic any more: remove it
    /// (instead of writing this status).
    pub forget: bool,
}

/// When the load balancer was last read for a rollout, and how often a
/// run that holds its weight checks it for drift.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reads {
    /// The last successful read of the forward weights (none: never, or
    /// not known).
    pub last_traffic: Option<Time>,
    /// A holding run reads the load balancer at least this often (drift);
    /// between those reads only when the API budget has tokens to spare.
    pub drift_check_ms: u64,
    /// Commands are queued: one may return traffic to stable (abort,
    /// delete), so the load balancer is read first, at that urgency.
    pub commands_queued: bool,
    /// The last read of the rollout's alarms (none: never, or not known).
    pub last_alarms: Option<Time>,
    /// A run under way reads its alarms at least this often.
    pub alarm_check_ms: u64,
}

/// The rollout as the next decision must see it: for ping-pong target
/// groups (`spec.targetGroups`), `stable` and `canary` are the roles the
/// status records (the first of the pair stable before any run said
/// otherwise). Everything that observes or decides for a rollout (the
/// load balancer, the metric reads, [`plan`], [`decide`]) takes this, so
/// they all agree on which group is which.
pub fn with_roles<'a>(
    rollout: &'a Rollout,
    status: Option<&RolloutStatus>,
) -> std::borrow::Cow<'a, Rollout> {
    let spec = status.and_then(|s| rollout.spec.with_roles(&s.stable_target_group_arn));
    match spec {
        Some(spec) if spec != rollout.spec => std::borrow::Cow::Owned(Rollout {
            spec,
            ..rollout.clone()
        }),
        _ => std::borrow::Cow::Borrowed(rollout),
    }
}

/// Decides the next status and actions of one rollout.
pub fn decide(
    ctx: Context<'_>,
    prev: Option<&RolloutStatus>,
    obs: &Observations,
    commands: &[Command],
    now: Time,
) -> Decision {
    // Several targets: each template judged per target and pooled.
    let expanded = expand(ctx);
    let ctx = expanded.as_ref().map_or(ctx, Expanded::ctx);
    let spec = &ctx.rollout.spec;
    let strategy = spec.strategy_name();
    let st = prev
        .cloned()
        .unwrap_or_else(|| RolloutStatus::new(&spec.revision, strategy, now));
    let mut r = Reconcile {
        ctx,
        st,
        obs,
        now,
        events: Vec::new(),
        requeue: None,
        ended: Vec::new(),
    };
    r.st.strategy = strategy.to_string();
    r.st.stable_target_group_arn = spec.stable.target_group_arn.to_string();
    r.st.canary_target_group_arn = spec.canary.target_group_arn.to_string();
    r.observe_traffic();
    r.observe_targets();
    r.check_drift();
    if r.st.deleting.is_none() {
        r.check_revision();
    }
    r.apply_commands(commands);
    r.check_fatal();
    r.verify_weight();
    r.analyze();
    r.check_alarms();
    r.webhook_answered();
    r.experiment_observed();
    if r.st.deleting.is_none() {
        r.progress();
    }
    r.check_deadline();
    r.chaos_left();
    r.explain_foreign_traffic();
    let actions = r.traffic_actions();
    // A rollout being deleted is forgotten once its traffic is back on
    // stable and no experiment of its own still runs.
    let forget = r.st.deleting.is_some() && !r.st.holds_canary_traffic() && r.st.chaos.is_none();
    let unseen = r.st.owns_traffic() && !r.settled();
    if !actions.is_empty() {
        // Written now: look again soon to see it applied.
        r.requeue = Some(
            r.requeue
                .map_or(WRITTEN_REQUEUE_MS, |q| q.min(WRITTEN_REQUEUE_MS)),
        );
    } else if unseen && r.some_traffic_missing() {
        // Weights to write (a rollback, an abort), but the load balancer
        // was not read for this decision: read it at once.
        r.requeue = Some(1);
    }

    let Reconcile {
        mut st,
        events,
        requeue,
        ended,
        ..
    } = r;
    let changed = match prev {
        None => true,
        Some(p) => {
            let mut cmp = st.clone();
            cmp.updated_at = p.updated_at;
            &cmp != p
        }
    };
    if changed {
        st.updated_at = now;
    } else if let Some(p) = prev {
        st.updated_at = p.updated_at;
    }
    Decision {
        status: st,
        changed,
        actions,
        events,
        ended_runs: ended,
        requeue_after_ms: requeue,
        forget,
    }
}

struct Reconcile<'a> {
    ctx: Context<'a>,
    st: RolloutStatus,
    obs: &'a Observations,
    now: Time,
    events: Vec<Event>,
    requeue: Option<u64>,
    ended: Vec<RunRecord>,
}

impl Reconcile<'_> {
    /// Pauses the run for `reason`: the phase, the reason, the message,
    /// and a `Paused` event saying why (and who asked, if someone did).
    fn pause(&mut self, reason: PauseReason, message: String, actor: Option<&str>) {
        self.st.phase = Phase::Paused;
        self.st.pause = Some(reason);
        self.st.message = message.clone();
        self.event(EventKind::Paused, message, actor);
    }

    fn event(&mut self, kind: EventKind, message: impl Into<String>, actor: Option<&str>) {
        let w = self.st.canary_weight;
        self.event_weights(kind, message, actor, w, w);
    }

    fn event_weights(
        &mut self,
        kind: EventKind,
        message: impl Into<String>,
        actor: Option<&str>,
        before: u8,
        after: u8,
    ) {
        self.events.push(Event {
            at: self.now,
            run: self.st.run,
            revision: self.st.revision.clone(),
            kind,
            message: message.into(),
            actor: actor.map(str::to_string),
            weight_before: before,
            weight_after: after,
        });
    }

    fn requeue_at(&mut self, at: Time) {
        let ms = at.since(self.now).max(1);
        self.requeue = Some(self.requeue.map_or(ms, |r| r.min(ms)));
    }

    /// The canary's steps, or an experiment's (none for blue-green).
    fn steps(&self) -> std::borrow::Cow<'_, [CanaryStep]> {
        self.ctx
            .rollout
            .spec
            .strategy
            .canary_steps()
            .unwrap_or_default()
    }

    fn healthy_canary(&self) -> Result<(), String> {
        for i in 0..self.target_count() {
            let why = match self.obs.health_of(i) {
                Observed::Ok(h) if h.healthy > 0 => continue,
                Observed::Ok(h) => format!(
                    "waiting for healthy targets in the canary target group ({} of {} healthy)",
                    h.healthy, h.total
                ),
                Observed::Err(e) => {
                    format!("cannot read the canary's target health: {}", e.message)
                }
                Observed::Missing => "waiting to read the canary's target health".into(),
            };
            return Err(self.on_target(i, &why));
        }
        Ok(())
    }
}
