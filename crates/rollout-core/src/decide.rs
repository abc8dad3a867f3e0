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

use rollout_analysis::Verdict;
use rollout_spec::{AnalysisTemplateSpec, CanaryStep, Rollout};
use serde::{Deserialize, Serialize};

use crate::command::{check, Command, CommandKind};
use crate::observe::{ObservationPlan, Observations, Observed, Urgency, WindowRequest};
use crate::status::{
    BlueGreenStage, BlueGreenStatus, JudgedInterval, PauseReason, Phase, RolloutStatus, RunRecord,
    Weights, HISTORY_LIMIT, HISTORY_WINDOWS,
};
use crate::time::Time;

/// How many due intervals of one template are asked for in one reconcile (a
/// daemon that was down catches up over a few reconciles).
pub const MAX_WINDOWS_PER_TICK: u32 = 10;

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
    },
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
}

/// What to observe before deciding for a rollout in `status` at `now`
/// (reading the load balancer whenever a decision could use it).
pub fn plan(ctx: Context<'_>, status: Option<&RolloutStatus>, now: Time) -> ObservationPlan {
    plan_reads(ctx, status, now, Reads::default())
}

/// [`plan`], knowing when the load balancer was last read: it is read when
/// a decision needs it (before a run starts, while a weight waits to be
/// seen, before a raise, to return traffic), as a drift check once
/// `reads.drift_check_ms` has passed, and otherwise only optionally (when
/// the API budget has tokens to spare).
pub fn plan_reads(
    ctx: Context<'_>,
    status: Option<&RolloutStatus>,
    now: Time,
    reads: Reads,
) -> ObservationPlan {
    let windows = status
        .map(|st| due_windows(ctx, st, now))
        .unwrap_or_default();
    let health = status.is_none_or(|st| health_may_matter(ctx, st, now, !windows.is_empty()));
    let (traffic, urgency) = match status {
        None => (true, Urgency::BeforeRaise),
        Some(_) if reads.commands_queued => (true, Urgency::Rollback),
        Some(st) => match traffic_urgency(ctx, st, now, health, reads) {
            Some(u) => (true, u),
            None => (false, Urgency::Optional),
        },
    };
    ObservationPlan {
        traffic,
        urgency,
        canary_health: health,
        windows,
    }
}

/// How much reading the forward weights matters now; `None`: not at all.
fn traffic_urgency(
    ctx: Context<'_>,
    st: &RolloutStatus,
    now: Time,
    health_matters: bool,
    reads: Reads,
) -> Option<Urgency> {
    let new_revision = st.revision != ctx.rollout.spec.revision;
    let settled = st.weight_verified_at.is_some();
    // A run of the current revision that has ended needs nothing from the
    // world once its final weights were seen: rolloutd leaves the traffic
    // alone from then on, and reading it would only cost AWS calls (most
    // rollouts are idle most of the time). A new revision reads again.
    if st.phase.is_terminal() && !new_revision && settled {
        return None;
    }
    let returning = st.deleting.is_some()
        || st.returning_from.is_some()
        || matches!(st.phase, Phase::Aborted | Phase::RolledBack | Phase::Failed);
    if st.owns_traffic() && !settled {
        return Some(if returning || st.canary_weight == 0 {
            Urgency::Rollback
        } else {
            Urgency::ReadBack
        });
    }
    let due = reads
        .last_traffic
        .is_none_or(|last| now.since(last) >= reads.drift_check_ms);
    if new_revision || (health_matters && st.phase != Phase::Pending) {
        return Some(Urgency::BeforeRaise);
    }
    // A run waiting for stable to carry all traffic looks at the drift
    // check's cadence (and whenever tokens are to spare); a new revision
    // looks at once (above).
    if st.phase == Phase::Pending {
        return Some(if due {
            Urgency::BeforeRaise
        } else {
            Urgency::Optional
        });
    }
    Some(if due {
        Urgency::Routine
    } else {
        Urgency::Optional
    })
}

/// Whether the canary's target health can matter to the next decision: it
/// gates only raises. So it is read before a run starts (its first step may
/// raise), at a step that raises, once a timed pause has ended (the next
/// step may raise at once), and throughout a blue-green run; not while a
/// canary run holds at a pause, nor after a run of the current revision
/// ended. When it was not read and a raise wants it, the decision waits for
/// it and asks to be looked at again shortly.
fn health_may_matter(ctx: Context<'_>, st: &RolloutStatus, now: Time, windows_due: bool) -> bool {
    if st.revision != ctx.rollout.spec.revision {
        return true;
    }
    if st.phase.is_terminal() {
        return false;
    }
    let Some(canary) = &ctx.rollout.spec.strategy.canary else {
        return true;
    };
    match st.phase {
        Phase::Pending => true,
        Phase::Progressing | Phase::Paused => {
            let raise_may_follow = |i: usize| match canary.steps.get(i) {
                Some(CanaryStep::SetWeight(w)) => {
                    w.get() > st.canary_weight
                        && (windows_due
                            || st.weight_verified_at.is_none()
                            || analysis_gate_open(ctx, st))
                }
                _ => true,
            };
            let i = st.current_step_index as usize;
            match canary.steps.get(i) {
                Some(CanaryStep::SetWeight(_)) => raise_may_follow(i),
                Some(CanaryStep::Pause(p)) => match p.duration {
                    Some(d) => {
                        st.step_started_at
                            .is_none_or(|started| now >= started.plus_ms(d.as_millis()))
                            && raise_may_follow(i + 1)
                    }
                    None => false,
                },
                None => true,
            }
        }
        _ => false,
    }
}

/// Whether the analysis lets the weight go up now (as `analysis_passed`
/// decides): no analysis, a person promoted the step, the canary has no
/// traffic yet, or every template passed an interval at this weight. While
/// it is closed, nothing is read for a raise: it cannot happen before the
/// next interval is judged.
fn analysis_gate_open(ctx: Context<'_>, st: &RolloutStatus) -> bool {
    let Some(analysis) = &ctx.rollout.spec.analysis else {
        return true;
    };
    st.step_promoted
        || st.canary_weight == 0
        || analysis
            .templates
            .iter()
            .all(|t| st.analysis.templates.get(t).is_some_and(|s| s.passes > 0))
}

/// The analysis in force: interval, templates, and how many intervals the
/// phase lasts (blue-green phases are bounded; canary analysis is not).
fn analysis_config(
    ctx: Context<'_>,
    st: &RolloutStatus,
) -> Option<(u64, Vec<String>, Option<u32>)> {
    if !matches!(st.phase, Phase::Progressing | Phase::Paused) {
        return None;
    }
    let strategy = &ctx.rollout.spec.strategy;
    if strategy.canary.is_some() {
        let a = ctx.rollout.spec.analysis.as_ref()?;
        return Some((a.interval.as_millis().max(1), a.templates.clone(), None));
    }
    let bg = strategy.blue_green.as_ref()?;
    let phase = match st.blue_green?.stage {
        BlueGreenStage::Preview => bg.pre_promotion_analysis.as_ref()?,
        BlueGreenStage::PostPromotion => bg.post_promotion_analysis.as_ref()?,
        BlueGreenStage::Switching => return None,
    };
    let interval = phase.interval.as_millis().max(1);
    let count = u32::try_from((phase.duration.as_millis() / interval).max(1)).unwrap_or(u32::MAX);
    Some((interval, phase.templates.clone(), Some(count)))
}

/// `t` rounded down to a multiple of `step` milliseconds since the epoch.
fn grid_floor(t: Time, step: u64) -> Time {
    let step = i64::try_from(step.max(1)).unwrap_or(i64::MAX);
    let ms = t.millis();
    Time::from_millis(ms - ms.rem_euclid(step))
}

fn due_windows(ctx: Context<'_>, st: &RolloutStatus, now: Time) -> Vec<WindowRequest> {
    let Some(origin) = st.analysis.origin else {
        return Vec::new();
    };
    let Some((interval, names, count)) = analysis_config(ctx, st) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names {
        let Some(t) = ctx.templates.get(&name) else {
            continue;
        };
        let delay = t.alb.delay.as_millis();
        let done = st
            .analysis
            .templates
            .get(&name)
            .map_or(0, |a| a.windows_done);
        for k in done..done.saturating_add(MAX_WINDOWS_PER_TICK) {
            if count.is_some_and(|c| k >= c) {
                break;
            }
            let start = origin.plus_ms(interval.saturating_mul(u64::from(k)));
            let end = start.plus_ms(interval);
            if end.plus_ms(delay) > now {
                break;
            }
            let (stable_start, stable_end) = st.analysis.baseline.unwrap_or((start, end));
            out.push(WindowRequest {
                template: name.clone(),
                start,
                end,
                stable_start,
                stable_end,
            });
        }
    }
    out
}

/// Decides the next status and actions of one rollout.
pub fn decide(
    ctx: Context<'_>,
    prev: Option<&RolloutStatus>,
    obs: &Observations,
    commands: &[Command],
    now: Time,
) -> Decision {
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
    };
    r.st.strategy = strategy.to_string();
    r.observe_traffic();
    r.check_drift();
    if r.st.deleting.is_none() {
        r.check_revision();
    }
    r.apply_commands(commands);
    r.check_fatal();
    r.verify_weight();
    r.analyze();
    if r.st.deleting.is_none() {
        r.progress();
    }
    r.check_deadline();
    r.explain_foreign_traffic();
    let actions = r.traffic_actions();
    let forget = r.st.deleting.is_some() && !r.st.holds_canary_traffic();
    let unseen = r.st.owns_traffic() && !r.settled();
    if !actions.is_empty() {
        // Written now: look again soon to see it applied.
        r.requeue = Some(
            r.requeue
                .map_or(WRITTEN_REQUEUE_MS, |q| q.min(WRITTEN_REQUEUE_MS)),
        );
    } else if unseen && matches!(obs.traffic, Observed::Missing) {
        // Weights to write (a rollback, an abort), but the load balancer
        // was not read for this decision: read it at once.
        r.requeue = Some(1);
    }

    let Reconcile {
        mut st,
        events,
        requeue,
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
}

impl Reconcile<'_> {
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

    fn steps(&self) -> &[CanaryStep] {
        self.ctx
            .rollout
            .spec
            .strategy
            .canary
            .as_ref()
            .map_or(&[], |c| c.steps.as_slice())
    }

    fn healthy_canary(&self) -> Result<(), String> {
        match &self.obs.canary_health {
            Observed::Ok(h) if h.healthy > 0 => Ok(()),
            Observed::Ok(h) => Err(format!(
                "waiting for healthy targets in the canary target group ({} of {} healthy)",
                h.healthy, h.total
            )),
            Observed::Err(e) => Err(format!(
                "cannot read the canary's target health: {}",
                e.message
            )),
            Observed::Missing => Err("waiting to read the canary's target health".into()),
        }
    }

    // ---- 1. observe -------------------------------------------------------

    fn observe_traffic(&mut self) {
        if let Observed::Ok(fw) = &self.obs.traffic {
            self.st.observed_weights = Some(fw.percentages());
        }
    }

    /// Weights this run did not write: the load balancer no longer holds
    /// the weights that were seen applied, or target groups the rollout
    /// does not name carry traffic. Recorded as `WeightDrift`; then the
    /// run pauses with its hands off (`onDrift: pause`) or writes its own
    /// weights back (`revert`, only when that changes nothing it does not
    /// own). While a weight of its own is still being written, a mismatch
    /// is that write in flight, not drift.
    fn check_drift(&mut self) {
        let started = matches!(self.st.phase, Phase::Progressing | Phase::Paused)
            && self.st.started_at.is_some();
        if !started
            || self.st.deleting.is_some()
            || matches!(self.st.pause, Some(PauseReason::Drift { .. }))
        {
            return;
        }
        let Some(fw) = self.obs.traffic.ok() else {
            return;
        };
        let expected = Weights::for_canary(self.st.canary_weight);
        let drifted = (self.settled() && !fw.matches(expected)) || fw.other > 0;
        if !drifted {
            return;
        }
        let seen = fw.percentages();
        let revert = self.ctx.rollout.spec.on_drift == rollout_spec::OnDrift::Revert;
        let what = format!(
            "the load balancer holds stable {} / canary {}{} but this run set stable {} / canary {}",
            seen.stable,
            seen.canary,
            if seen.other > 0 {
                format!(" / target groups it does not name {}", seen.other)
            } else {
                String::new()
            },
            expected.stable,
            expected.canary
        );
        // The intervals since the weights changed were not at the run's
        // split: judging starts again once its weights are seen again.
        self.st.weight_verified_at = None;
        self.st.analysis.origin = None;
        for t in self.st.analysis.templates.values_mut() {
            t.windows_done = 0;
            t.passes = 0;
        }
        if revert && fw.other == 0 {
            self.st.message = format!(
                "{what}; onDrift is revert: writing stable {} / canary {} back",
                expected.stable, expected.canary
            );
            let m = self.st.message.clone();
            self.event(EventKind::WeightDrift, m, None);
            return;
        }
        let why = if fw.other > 0 {
            "; rolloutd never changes target groups a rollout does not name: remove them from the forward action, then resume or abort"
        } else {
            "; the run is paused and leaves the weights as they are: resume to write its weights back, or abort"
        };
        self.st.phase = Phase::Paused;
        self.st.pause = Some(PauseReason::Drift {
            seen,
            expected,
            since: self.now,
        });
        self.st.message = format!("{what}{why}");
        let m = self.st.message.clone();
        self.event(EventKind::WeightDrift, m, None);
    }

    /// A run that owns the traffic but cannot write it because target
    /// groups it does not name carry some says so (and writes nothing).
    fn explain_foreign_traffic(&mut self) {
        if !self.st.owns_traffic() || matches!(self.st.pause, Some(PauseReason::Drift { .. })) {
            return;
        }
        if let Some(fw) = self.obs.traffic.ok() {
            if fw.other > 0 {
                let p = fw.percentages();
                self.st.message = format!(
                    "target groups this rollout does not name carry {}% of the forward action; rolloutd never changes them, so it cannot set stable {} / canary {}: remove them from the forward action",
                    p.other,
                    100 - self.st.canary_weight,
                    self.st.canary_weight
                );
            }
        }
    }

    // ---- 2. revisions -----------------------------------------------------

    fn settled(&self) -> bool {
        self.st.weight_verified_at.is_some()
    }

    fn check_revision(&mut self) {
        let new = self.ctx.rollout.spec.revision.clone();
        if new == self.st.revision {
            return;
        }
        let old = self.st.revision.clone();
        let moving = match self.st.phase {
            Phase::Progressing | Phase::Paused => true,
            Phase::Pending => self.st.returning_from.is_some(),
            _ => self.st.started_at.is_some() && !self.settled() && self.st.canary_weight > 0,
        };
        let outcome = if self.st.phase.is_terminal() {
            self.st.phase.as_str().to_string()
        } else {
            "Superseded".to_string()
        };
        if outcome == "Superseded" {
            self.event(
                EventKind::Superseded,
                format!("revision {new} supersedes revision {old}; the old run ends"),
                None,
            );
        }
        self.new_run(&new, &outcome, moving.then_some(old));
    }

    /// Ends the current run (recording it) and starts a new one, Pending.
    fn new_run(&mut self, revision: &str, outcome: &str, returning_from: Option<String>) {
        let st = &mut self.st;
        st.history.push(RunRecord {
            run: st.run,
            revision: st.revision.clone(),
            outcome: outcome.to_string(),
            started_at: st.started_at,
            ended_at: st.ended_at.unwrap_or(self.now),
            message: st.message.clone(),
        });
        if st.history.len() > HISTORY_LIMIT {
            let excess = st.history.len() - HISTORY_LIMIT;
            st.history.drain(..excess);
        }
        st.run = st.run.saturating_add(1);
        st.revision = revision.to_string();
        st.phase = Phase::Pending;
        st.current_step_index = 0;
        st.started_at = None;
        st.ended_at = None;
        st.step_started_at = None;
        st.last_progress_at = None;
        st.pause = None;
        st.step_promoted = false;
        st.blue_green = None;
        st.rollback_step = None;
        st.analysis = Default::default();
        st.returning_from = returning_from;
        st.message = "waiting to start".into();
        if self.st.returning_from.is_some() {
            self.set_desired(0);
        }
    }

    // ---- 3. commands ------------------------------------------------------

    fn apply_commands(&mut self, commands: &[Command]) {
        let mut pending: Vec<&Command> = commands
            .iter()
            .filter(|c| c.id > self.st.last_command_id)
            .collect();
        pending.sort_by_key(|c| c.id);
        if pending.len() > MAX_COMMANDS_PER_DECISION {
            pending.truncate(MAX_COMMANDS_PER_DECISION);
            self.requeue = Some(MORE_COMMANDS_REQUEUE_MS);
        }
        // Commands refused for the same reason make one event, however many
        // were queued (5,000 aborts must not make 5,000 events at once).
        let mut ignored: Vec<(String, String, u32)> = Vec::new();
        for c in pending {
            self.st.last_command_id = c.id;
            let who = Some(c.actor.as_str());
            let why = c
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            if let Err(refusal) = check(&self.st, c.kind) {
                let what = format!("{} by {}", c.kind.verb(), c.actor);
                match ignored
                    .iter_mut()
                    .find(|(w, r, _)| *w == what && *r == refusal)
                {
                    Some(entry) => entry.2 += 1,
                    None => ignored.push((what, refusal, 1)),
                }
                continue;
            }
            match c.kind {
                CommandKind::Delete => self.start_deletion(&c.actor, &why),
                CommandKind::Abort => {
                    let message = format!("aborted by {}{why}", c.actor);
                    self.finish(Phase::Aborted, EventKind::Aborted, message, who);
                }
                CommandKind::Pause => {
                    self.st.pause = Some(PauseReason::Manual {
                        actor: c.actor.clone(),
                        reason: c.reason.clone(),
                        since: self.now,
                    });
                    self.st.phase = Phase::Paused;
                    self.st.message = format!("paused by {}{why}", c.actor);
                    let m = self.st.message.clone();
                    self.event(EventKind::Paused, m, who);
                }
                CommandKind::Resume => {
                    if let Some(PauseReason::Manual { since, .. }) = self.st.pause {
                        // A timed pause does not run while paused by hand.
                        if let Some(started) = self.st.step_started_at {
                            self.st.step_started_at = Some(started.plus_ms(self.now.since(since)));
                        }
                    }
                    for t in self.st.analysis.templates.values_mut() {
                        t.inconclusive_in_a_row = 0;
                    }
                    self.st.pause = None;
                    self.st.phase = if self.st.started_at.is_some() {
                        Phase::Progressing
                    } else {
                        Phase::Pending
                    };
                    self.st.last_progress_at = Some(self.now);
                    self.event(
                        EventKind::Resumed,
                        format!("resumed by {}{why}", c.actor),
                        who,
                    );
                }
                CommandKind::Promote { full } => self.promote(full, &c.actor, &why),
                CommandKind::Retry => {
                    let outcome = self.st.phase.as_str().to_string();
                    let revision = self.st.revision.clone();
                    let returning =
                        (!self.settled() && self.st.canary_weight > 0).then(|| revision.clone());
                    self.event(
                        EventKind::Retried,
                        format!(
                            "retry by {}{why}: run {} starts again from step 0",
                            c.actor,
                            self.st.run + 1
                        ),
                        who,
                    );
                    self.new_run(&revision, &outcome, returning);
                }
            }
        }
        for (what, refusal, n) in ignored {
            let times = if n > 1 {
                format!(" ({n} times)")
            } else {
                String::new()
            };
            self.event(
                EventKind::CommandIgnored,
                format!("{what} ignored{times}: {refusal}"),
                None,
            );
        }
    }

    /// `DELETE` of a rollout whose run holds traffic: the run ends (all
    /// traffic back to stable at once) and the rollout is removed once the
    /// load balancer shows stable carrying all of it.
    fn start_deletion(&mut self, actor: &str, why: &str) {
        self.st.deleting = Some(crate::status::Deletion {
            actor: actor.to_string(),
            since: self.now,
        });
        let message = format!(
            "deleted by {actor}{why}: all traffic returns to stable, then the rollout is removed"
        );
        if !self.st.phase.is_terminal() {
            self.st.phase = Phase::Aborted;
            self.st.ended_at = Some(self.now);
        }
        self.st.pause = None;
        self.st.analysis.origin = None;
        self.st.rollback_step = None;
        self.st.returning_from = None;
        self.st.message = message.clone();
        self.event(EventKind::Deleting, message, Some(actor));
        if self.st.phase != Phase::Succeeded {
            self.set_desired(0);
        }
    }

    fn promote(&mut self, full: bool, actor: &str, why: &str) {
        let who = Some(actor);
        let what = if full { "promoted to 100%" } else { "promoted" };
        self.st.phase = Phase::Progressing;
        self.st.last_progress_at = Some(self.now);
        for t in self.st.analysis.templates.values_mut() {
            t.inconclusive_in_a_row = 0;
        }
        let was_paused = self.st.pause.take();
        if self.ctx.rollout.spec.strategy.blue_green.is_some() {
            if let Some(bg) = &mut self.st.blue_green {
                match bg.stage {
                    BlueGreenStage::Preview => bg.preview_passed = true,
                    BlueGreenStage::PostPromotion | BlueGreenStage::Switching => {}
                }
            }
            self.st.step_promoted = true;
            self.event(EventKind::Promoted, format!("{what} by {actor}{why}"), who);
            return;
        }
        let steps = self.steps();
        let idx = self.st.current_step_index as usize;
        if full {
            let last = steps
                .iter()
                .rposition(|s| matches!(s, CanaryStep::SetWeight(_)))
                .unwrap_or(0);
            self.st.current_step_index = u32::try_from(last).unwrap_or(0);
            self.st.step_started_at = Some(self.now);
            self.st.step_promoted = true;
        } else if matches!(steps.get(idx), Some(CanaryStep::Pause(_)))
            && was_paused != Some(PauseReason::Inconclusive)
        {
            self.advance(idx + 1);
        } else {
            self.st.step_promoted = true;
        }
        self.event(EventKind::Promoted, format!("{what} by {actor}{why}"), who);
    }

    // ---- endings ----------------------------------------------------------

    fn set_desired(&mut self, w: u8) {
        let before = self.st.canary_weight;
        if before == w {
            return;
        }
        self.st.canary_weight = w;
        self.st.weight_verified_at = None;
        self.st.analysis.origin = None;
        for t in self.st.analysis.templates.values_mut() {
            t.windows_done = 0;
            t.passes = 0;
        }
        let message = format!("weights set to stable {} / canary {w}", 100 - w);
        self.event_weights(EventKind::WeightSet, message, None, before, w);
    }

    /// Ends the run in a terminal phase other than success: traffic back to
    /// stable (at once, or by the rollback steps after a failed analysis).
    fn finish(&mut self, phase: Phase, kind: EventKind, message: String, actor: Option<&str>) {
        self.st.phase = phase;
        self.st.ended_at = Some(self.now);
        self.st.pause = None;
        self.st.message = message.clone();
        self.st.analysis.origin = None;
        let gradual = phase == Phase::RolledBack
            && self.st.started_at.is_some()
            && self
                .ctx
                .rollout
                .spec
                .rollback
                .as_ref()
                .is_some_and(|r| !r.steps.is_empty());
        self.event(kind, message, actor);
        if gradual {
            self.st.rollback_step = Some(0);
            self.st.step_started_at = Some(self.now);
            self.run_rollback_steps();
        } else {
            self.st.rollback_step = None;
            self.set_desired(0);
        }
    }

    fn fail(&mut self, message: String) {
        if !self.st.phase.is_terminal() {
            self.finish(Phase::Failed, EventKind::Failed, message, None);
        }
    }

    // ---- 4. fatal observations -------------------------------------------

    fn check_fatal(&mut self) {
        for err in [&self.obs.traffic_error(), &self.obs.health_error()]
            .into_iter()
            .flatten()
        {
            if err.fatal {
                let message = format!("cannot proceed: {}", err.message);
                self.fail(message);
                return;
            }
        }
    }

    // ---- 5. verification --------------------------------------------------

    fn verify_weight(&mut self) {
        if self.st.weight_verified_at.is_some() || !self.owns_traffic() {
            self.ensure_analysis_origin();
            return;
        }
        let Some(fw) = self.obs.traffic.ok() else {
            return;
        };
        let w = self.st.canary_weight;
        if !fw.matches(Weights::for_canary(w)) {
            return;
        }
        self.st.weight_verified_at = Some(self.now);
        self.st.last_progress_at = Some(self.now);
        self.event(
            EventKind::WeightVerified,
            format!("the load balancer holds stable {} / canary {w}", 100 - w),
            None,
        );
        self.ensure_analysis_origin();
    }

    /// A canary run whose current weight is seen applied is judged from then
    /// on; this also starts the analysis when it is added to a running
    /// rollout's spec (or comes back after a spec change) at a weight that
    /// was already verified.
    fn ensure_analysis_origin(&mut self) {
        let canary_analysis = self.ctx.rollout.spec.strategy.canary.is_some()
            && self.ctx.rollout.spec.analysis.is_some();
        let w = self.st.canary_weight;
        if canary_analysis
            && self.st.analysis.origin.is_none()
            && self.settled()
            && matches!(self.st.phase, Phase::Progressing | Phase::Paused)
            && w > 0
            && w < 100
        {
            // Intervals lie on the wall-clock grid of the analysis interval,
            // from the boundary at or before now: every rollout with the same
            // interval has its intervals fall due at the same instants, so
            // their metrics are read together (one GetMetricData call carries
            // 500 queries), and an interval covers whole CloudWatch periods
            // when the period divides it. The first interval may begin before
            // the weight was seen: it counts against the canary, but only an
            // interval wholly at the current weight counts as a pass.
            let interval = self
                .ctx
                .rollout
                .spec
                .analysis
                .as_ref()
                .map_or(1, |a| a.interval.as_millis().max(1));
            self.st.analysis.origin = Some(grid_floor(self.now, interval));
        }
    }

    // ---- 6. analysis ------------------------------------------------------

    fn analyze(&mut self) {
        let Some((_, names, count)) = analysis_config(self.ctx, &self.st) else {
            return;
        };
        let due = due_windows(self.ctx, &self.st, self.now);
        for name in names {
            let Some(template) = self.ctx.templates.get(&name) else {
                self.fail(format!("AnalysisTemplate `{name}` does not exist"));
                return;
            };
            let mine: Vec<&WindowRequest> = due.iter().filter(|w| w.template == name).collect();
            for (i, window) in mine.iter().enumerate() {
                let result = self
                    .obs
                    .windows
                    .iter()
                    .find(|r| r.template == name && r.end == window.end);
                let weight = self.st.canary_weight;
                let wholly_at_weight = self
                    .st
                    .weight_verified_at
                    .is_none_or(|seen| window.start >= seen);
                let entry = self.st.analysis.templates.entry(name.clone()).or_default();
                match result.map(|r| &r.metrics) {
                    None => break,
                    Some(Ok(metrics)) => {
                        entry.history.push(metrics.clone());
                        if entry.history.len() > HISTORY_WINDOWS {
                            entry.history.remove(0);
                        }
                        let verdict = rollout_analysis::judge(template, &entry.history);
                        entry.windows_done += 1;
                        entry.errors_in_a_row = 0;
                        match verdict.verdict {
                            Verdict::Pass => {
                                if wholly_at_weight {
                                    entry.passes += 1;
                                }
                                entry.inconclusive_in_a_row = 0;
                            }
                            Verdict::Fail => {
                                entry.failed += 1;
                                entry.inconclusive_in_a_row = 0;
                            }
                            Verdict::Inconclusive => entry.inconclusive_in_a_row += 1,
                        }
                        let message = format!(
                            "{name} at canary {weight}%: {} ({})",
                            verdict.verdict.as_str(),
                            verdict.summary()
                        );
                        entry.last = Some(JudgedInterval {
                            end: window.end,
                            canary_weight: weight,
                            result: verdict,
                        });
                        self.event(EventKind::AnalysisJudged, message, None);
                    }
                    Some(Err(e)) if e.fatal => {
                        let message =
                            format!("analysis `{name}` cannot read its metrics: {}", e.message);
                        self.fail(message);
                        return;
                    }
                    Some(Err(e)) => {
                        // Retry the same interval until the next one is due too.
                        if i + 1 >= mine.len() {
                            break;
                        }
                        entry.windows_done += 1;
                        entry.errors_in_a_row += 1;
                        let message = format!(
                            "{name}: the interval ending {} could not be read: {}",
                            window.end, e.message
                        );
                        self.event(EventKind::AnalysisError, message, None);
                    }
                }
            }
            let state = self
                .st
                .analysis
                .templates
                .get(&name)
                .cloned()
                .unwrap_or_default();
            let spec = &template;
            if state.failed > spec.failure_limit {
                let evidence = state
                    .last
                    .as_ref()
                    .map(|l| l.result.summary())
                    .unwrap_or_default();
                let message = format!(
                    "analysis `{name}` failed {} interval(s) (failureLimit {}): {evidence}",
                    state.failed, spec.failure_limit
                );
                self.finish(Phase::RolledBack, EventKind::RolledBack, message, None);
                return;
            }
            if state.errors_in_a_row > spec.consecutive_error_limit {
                self.fail(format!(
                    "analysis `{name}`: the metric source failed {} intervals in a row (consecutiveErrorLimit {})",
                    state.errors_in_a_row, spec.consecutive_error_limit
                ));
                return;
            }
            let exhausted = count.is_some_and(|c| state.windows_done >= c && state.passes == 0);
            if (state.inconclusive_in_a_row > spec.inconclusive_limit || exhausted)
                && self.st.pause.is_none()
                && self.st.phase == Phase::Progressing
            {
                self.st.phase = Phase::Paused;
                self.st.pause = Some(PauseReason::Inconclusive);
                self.st.message = format!(
                    "analysis `{name}` was inconclusive {} interval(s) in a row ({}); promote to go on without it, or abort",
                    state.inconclusive_in_a_row,
                    state.last.as_ref().map(|l| l.result.summary()).unwrap_or_default()
                );
                let m = self.st.message.clone();
                self.event(EventKind::Paused, m, None);
            }
        }
        // Ask to be woken when the next interval falls due.
        if let (Some(origin), Some((interval, names, _))) =
            (self.st.analysis.origin, analysis_config(self.ctx, &self.st))
        {
            for name in names {
                let delay = self
                    .ctx
                    .templates
                    .get(&name)
                    .map_or(0, |t| t.alb.delay.as_millis());
                let done = self
                    .st
                    .analysis
                    .templates
                    .get(&name)
                    .map_or(0, |t| t.windows_done);
                let next = origin
                    .plus_ms(interval.saturating_mul(u64::from(done) + 1))
                    .plus_ms(delay);
                self.requeue_at(next);
            }
        }
    }

    fn analysis_passed(&self) -> Result<(), String> {
        if self.st.step_promoted {
            return Ok(());
        }
        let Some(analysis) = &self.ctx.rollout.spec.analysis else {
            return Ok(());
        };
        for name in &analysis.templates {
            let state = self.st.analysis.templates.get(name);
            if state.is_none_or(|s| s.passes == 0) {
                let last = state
                    .and_then(|s| s.last.as_ref())
                    .map(|l| {
                        format!(
                            "; last interval {}: {}",
                            l.result.verdict.as_str(),
                            l.result.summary()
                        )
                    })
                    .unwrap_or_default();
                return Err(format!(
                    "waiting for a passing analysis `{name}` at canary {}%{last}",
                    self.st.canary_weight
                ));
            }
        }
        Ok(())
    }

    // ---- 7. progress ------------------------------------------------------

    fn advance(&mut self, to: usize) {
        let from = self.st.current_step_index;
        self.st.current_step_index = u32::try_from(to).unwrap_or(u32::MAX);
        self.st.step_started_at = Some(self.now);
        self.st.step_promoted = false;
        self.st.last_progress_at = Some(self.now);
        let total = self.steps().len();
        self.event(
            EventKind::StepAdvanced,
            format!("step {} of {total} done", from + 1),
            None,
        );
    }

    fn progress(&mut self) {
        if self.st.phase == Phase::Pending {
            // A run that starts now takes its first step in the same reconcile.
            self.pending();
        }
        match self.st.phase {
            Phase::Progressing | Phase::Paused => {
                if self.ctx.rollout.spec.strategy.blue_green.is_some() {
                    self.blue_green();
                } else {
                    self.canary();
                }
            }
            Phase::RolledBack if self.st.rollback_step.is_some() => self.run_rollback_steps(),
            _ => {}
        }
    }

    fn pending(&mut self) {
        if let Some(old) = self.st.returning_from.clone() {
            self.set_desired(0);
            if self.settled() {
                self.st.returning_from = None;
            } else {
                self.st.message = format!(
                    "returning traffic to stable from the superseded run of revision {old}"
                );
                self.requeue = Some(VERIFY_REQUEUE_MS);
                return;
            }
        }
        let target = match &self.ctx.rollout.spec.traffic_routing.alb.rule_arn {
            Some(_) => "the listener rule",
            None => "the listener's default action",
        };
        match &self.obs.traffic {
            Observed::Ok(fw) if fw.stable_carries_all() => self.start_run(),
            Observed::Ok(fw) => {
                let p = fw.percentages();
                let hint = if p.canary == 100 {
                    "; after a successful run, swap stable and canary in the spec"
                } else {
                    ""
                };
                self.st.message = format!(
                    "waiting for the stable target group to carry all traffic of {target} (now stable {}%, canary {}%, other target groups {}%){hint}",
                    p.stable, p.canary, p.other
                );
            }
            Observed::Err(e) => {
                self.st.message = format!("cannot read the load balancer (retrying): {}", e.message)
            }
            Observed::Missing => self.st.message = "waiting to read the load balancer".into(),
        }
    }

    fn start_run(&mut self) {
        let st = &mut self.st;
        st.phase = Phase::Progressing;
        st.started_at = Some(self.now);
        st.last_progress_at = Some(self.now);
        st.step_started_at = Some(self.now);
        st.current_step_index = 0;
        st.canary_weight = 0;
        st.weight_verified_at = Some(self.now);
        if self.ctx.rollout.spec.strategy.blue_green.is_some() {
            st.blue_green = Some(BlueGreenStatus {
                stage: BlueGreenStage::Preview,
                stage_started_at: self.now,
                preview_passed: false,
            });
        }
        let revision = st.revision.clone();
        self.event(
            EventKind::RunStarted,
            format!("run of revision {revision} started: stable carries all traffic"),
            None,
        );
    }

    fn canary(&mut self) {
        let steps = self.steps().to_vec();
        let total = steps.len();
        if self.st.current_step_index as usize > total {
            self.st.current_step_index = u32::try_from(total).unwrap_or(u32::MAX);
        }
        for _ in 0..=total + 1 {
            if self.st.phase == Phase::Paused {
                if let Some(PauseReason::Step) = self.st.pause {
                    self.st.message = format!(
                        "paused at step {} of {total}: waiting for promote",
                        self.st.current_step_index + 1
                    );
                }
                return;
            }
            let idx = self.st.current_step_index as usize;
            let desired = self.st.canary_weight;
            let Some(step) = steps.get(idx) else {
                if desired == 100 && self.settled() {
                    let revision = self.st.revision.clone();
                    self.succeed(format!("revision {revision} serves all traffic"));
                } else {
                    self.st.message =
                        format!("waiting for the load balancer to show canary {desired}%");
                    self.requeue = Some(VERIFY_REQUEUE_MS);
                }
                return;
            };
            match step {
                CanaryStep::SetWeight(w) => {
                    let w = w.get();
                    if desired == w {
                        if self.settled() {
                            self.advance(idx + 1);
                            continue;
                        }
                        self.st.message = format!(
                            "step {} of {total}: waiting for the load balancer to show stable {} / canary {w}",
                            idx + 1,
                            100 - w
                        );
                        self.requeue = Some(VERIFY_REQUEUE_MS);
                        return;
                    }
                    if w > desired {
                        if let Err(why) = self.may_raise() {
                            self.st.message = format!("step {} of {total}: {why}", idx + 1);
                            if matches!(self.obs.canary_health, Observed::Missing) {
                                // Not read this time (the plan did not
                                // expect a raise): look again shortly.
                                self.requeue = Some(VERIFY_REQUEUE_MS);
                            }
                            return;
                        }
                    }
                    self.set_desired(w);
                    self.st.message = format!(
                        "step {} of {total}: setting stable {} / canary {w}",
                        idx + 1,
                        100 - w
                    );
                    self.requeue = Some(VERIFY_REQUEUE_MS);
                    return;
                }
                CanaryStep::Pause(p) => match p.duration {
                    Some(d) => {
                        let started = *self.st.step_started_at.get_or_insert(self.now);
                        let until = started.plus_ms(d.as_millis());
                        if self.now >= until {
                            self.advance(idx + 1);
                            continue;
                        }
                        self.st.message = format!(
                            "step {} of {total}: pausing {d} at canary {desired}% until {until}",
                            idx + 1
                        );
                        self.requeue_at(until);
                        return;
                    }
                    None => {
                        self.st.phase = Phase::Paused;
                        self.st.pause = Some(PauseReason::Step);
                        let message =
                            format!("paused at step {} of {total}: waiting for promote", idx + 1);
                        self.st.message = message.clone();
                        self.event(EventKind::Paused, message, None);
                        return;
                    }
                },
            }
        }
    }

    /// The gates before the canary weight goes up.
    fn may_raise(&self) -> Result<(), String> {
        if !self.settled() {
            return Err(format!(
                "waiting for the load balancer to show canary {}%",
                self.st.canary_weight
            ));
        }
        // The analysis first: while it has not passed, health does not
        // matter yet (and is not read).
        if self.st.canary_weight > 0 {
            self.analysis_passed()?;
        }
        self.healthy_canary()?;
        Ok(())
    }

    fn succeed(&mut self, message: String) {
        self.st.phase = Phase::Succeeded;
        self.st.ended_at = Some(self.now);
        self.st.message = message.clone();
        self.st.analysis.origin = None;
        self.event(EventKind::Succeeded, message, None);
    }

    fn blue_green(&mut self) {
        let Some(spec) = self.ctx.rollout.spec.strategy.blue_green.clone() else {
            return;
        };
        let bg = *self.st.blue_green.get_or_insert(BlueGreenStatus {
            stage: BlueGreenStage::Preview,
            stage_started_at: self.now,
            preview_passed: false,
        });
        if matches!(
            self.st.pause,
            Some(
                PauseReason::Manual { .. } | PauseReason::Inconclusive | PauseReason::Drift { .. }
            )
        ) {
            return;
        }
        match bg.stage {
            BlueGreenStage::Preview => {
                self.st.current_step_index = 0;
                if let Err(why) = self.healthy_canary() {
                    self.st.message = format!("preview: {why}");
                    return;
                }
                let mut passed = bg.preview_passed;
                if !passed {
                    passed = match &spec.pre_promotion_analysis {
                        None => true,
                        Some(pre) => {
                            if self.st.analysis.origin.is_none() {
                                self.st.analysis.origin = Some(self.now);
                            }
                            let count =
                                (pre.duration.as_millis() / pre.interval.as_millis().max(1)).max(1);
                            let done = pre.templates.iter().all(|t| {
                                self.st.analysis.templates.get(t).is_some_and(|s| {
                                    u64::from(s.windows_done) >= count && s.passes > 0
                                })
                            });
                            if !done {
                                self.st.message = format!(
                                    "preview: pre-promotion analysis running for {} (no production traffic on the new target group)",
                                    pre.duration
                                );
                            }
                            done
                        }
                    };
                }
                if !passed {
                    return;
                }
                if let Some(b) = &mut self.st.blue_green {
                    b.preview_passed = true;
                }
                if spec.auto_promotion || self.st.step_promoted {
                    self.start_switch();
                } else if self.st.pause != Some(PauseReason::AwaitingPromotion) {
                    self.st.phase = Phase::Paused;
                    self.st.pause = Some(PauseReason::AwaitingPromotion);
                    self.st.message =
                        "preview passed: waiting for promote to switch all traffic".into();
                    let m = self.st.message.clone();
                    self.event(EventKind::Paused, m, None);
                }
            }
            BlueGreenStage::Switching => {
                self.st.current_step_index = 1;
                if !self.settled() {
                    self.st.message =
                        "switching: waiting for the load balancer to show canary 100%".into();
                    self.requeue = Some(VERIFY_REQUEUE_MS);
                    return;
                }
                match &spec.post_promotion_analysis {
                    None => {
                        self.succeed(format!("revision {} serves all traffic", self.st.revision))
                    }
                    Some(post) => {
                        let switch_at = bg.stage_started_at;
                        let interval = post.interval.as_millis();
                        self.st.blue_green = Some(BlueGreenStatus {
                            stage: BlueGreenStage::PostPromotion,
                            stage_started_at: self.now,
                            preview_passed: true,
                        });
                        self.st.analysis.templates.clear();
                        self.st.analysis.origin = Some(self.now);
                        self.st.analysis.baseline = Some((
                            Time::from_millis(switch_at.millis().saturating_sub(interval as i64)),
                            switch_at,
                        ));
                        self.st.step_promoted = false;
                        self.st.message = format!(
                            "switched: post-promotion analysis for {} against stable's last interval before the switch",
                            post.duration
                        );
                        self.advance_bg(2);
                    }
                }
            }
            BlueGreenStage::PostPromotion => {
                self.st.current_step_index = 2;
                let Some(post) = &spec.post_promotion_analysis else {
                    self.succeed(format!("revision {} serves all traffic", self.st.revision));
                    return;
                };
                let count = (post.duration.as_millis() / post.interval.as_millis().max(1)).max(1);
                let done = self.st.step_promoted
                    || post.templates.iter().all(|t| {
                        self.st
                            .analysis
                            .templates
                            .get(t)
                            .is_some_and(|s| u64::from(s.windows_done) >= count && s.passes > 0)
                    });
                if done {
                    self.succeed(format!(
                        "revision {} serves all traffic; post-promotion analysis passed",
                        self.st.revision
                    ));
                }
            }
        }
    }

    fn advance_bg(&mut self, index: u32) {
        self.st.current_step_index = index;
        self.st.last_progress_at = Some(self.now);
        self.event(EventKind::StepAdvanced, self.st.message.clone(), None);
    }

    fn start_switch(&mut self) {
        if let Err(why) = self.healthy_canary() {
            self.st.message = format!("switch: {why}");
            return;
        }
        if !self.settled() {
            // After drift, the preview's weights are written back first.
            self.st.message = format!(
                "switch: waiting for the load balancer to show canary {}%",
                self.st.canary_weight
            );
            self.requeue = Some(VERIFY_REQUEUE_MS);
            return;
        }
        self.st.phase = Phase::Progressing;
        self.st.pause = None;
        self.st.blue_green = Some(BlueGreenStatus {
            stage: BlueGreenStage::Switching,
            stage_started_at: self.now,
            preview_passed: true,
        });
        self.st.analysis.origin = None;
        self.set_desired(100);
        self.st.message = "switching all traffic to the new target group".into();
        self.advance_bg(1);
        self.requeue = Some(VERIFY_REQUEUE_MS);
    }

    fn run_rollback_steps(&mut self) {
        let steps: Vec<CanaryStep> = self
            .ctx
            .rollout
            .spec
            .rollback
            .as_ref()
            .map(|r| r.steps.clone())
            .unwrap_or_default();
        let Some(mut i) = self.st.rollback_step.map(|i| i as usize) else {
            return;
        };
        for _ in 0..=steps.len() {
            let Some(step) = steps.get(i) else {
                self.set_desired(0);
                self.st.rollback_step = None;
                return;
            };
            match step {
                CanaryStep::SetWeight(w) => {
                    let target = w.get().min(self.st.canary_weight);
                    if self.st.canary_weight != target {
                        self.set_desired(target);
                        self.st.step_started_at = Some(self.now);
                        self.requeue = Some(VERIFY_REQUEUE_MS);
                        break;
                    }
                    if !self.settled() {
                        self.requeue = Some(VERIFY_REQUEUE_MS);
                        break;
                    }
                    i += 1;
                    self.st.step_started_at = Some(self.now);
                }
                CanaryStep::Pause(p) => {
                    let d = p.duration.map_or(0, |d| d.as_millis());
                    let until = self.st.step_started_at.unwrap_or(self.now).plus_ms(d);
                    if self.now < until {
                        self.requeue_at(until);
                        break;
                    }
                    i += 1;
                    self.st.step_started_at = Some(self.now);
                }
            }
        }
        self.st.rollback_step = Some(u32::try_from(i).unwrap_or(u32::MAX));
    }

    // ---- 8. deadline ------------------------------------------------------

    fn check_deadline(&mut self) {
        if self.st.phase != Phase::Progressing {
            return;
        }
        let in_timed_pause = matches!(
            self.steps().get(self.st.current_step_index as usize),
            Some(CanaryStep::Pause(p)) if p.duration.is_some()
        );
        if in_timed_pause {
            return;
        }
        let Some(last) = self.st.last_progress_at else {
            return;
        };
        let deadline = self.ctx.rollout.spec.progress_deadline.as_millis();
        let at = last.plus_ms(deadline);
        if self.now >= at {
            let message = format!(
                "no progress for {}: {}",
                self.ctx.rollout.spec.progress_deadline, self.st.message
            );
            self.fail(message);
        } else {
            self.requeue_at(at);
        }
    }

    // ---- 9. actions -------------------------------------------------------

    fn owns_traffic(&self) -> bool {
        self.st.owns_traffic()
    }

    fn traffic_actions(&self) -> Vec<Action> {
        if !self.owns_traffic() || matches!(self.st.pause, Some(PauseReason::Drift { .. })) {
            return Vec::new();
        }
        let desired = Weights::for_canary(self.st.canary_weight);
        match self.obs.traffic.ok() {
            // Never a write that would change target groups the rollout
            // does not name (it could not reach the desired split anyway).
            Some(fw) if fw.other == 0 && !fw.matches(desired) => vec![Action::SetWeights {
                weights: desired,
                seen: *fw,
            }],
            _ => Vec::new(),
        }
    }
}

impl Observations {
    fn traffic_error(&self) -> Option<crate::observe::ObservationError> {
        match &self.traffic {
            Observed::Err(e) => Some(e.clone()),
            _ => None,
        }
    }

    fn health_error(&self) -> Option<crate::observe::ObservationError> {
        match &self.canary_health {
            Observed::Err(e) => Some(e.clone()),
            _ => None,
        }
    }
}
