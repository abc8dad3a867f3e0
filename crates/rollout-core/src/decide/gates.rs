//! Gates beside the analysis (stage 6): CloudWatch alarms, webhook steps,
//! and the bake after promotion. Each fails the run like a failed
//! analysis (`roll_back`: traffic back to stable, or held when
//! `onFailure: freeze`).

use rollout_spec::{PostPromotion, Webhook};
use serde::Serialize;

use super::*;
use crate::observe::{AlarmState, WebhookCall, WebhookOutcome};
use crate::status::WebhookStatus;

/// The longest wait between two calls of a webhook that got no answer.
const MAX_WEBHOOK_BACKOFF_MS: u64 = 60_000;

/// What a webhook step POSTs.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookBody<'a> {
    rollout: &'a str,
    revision: &'a str,
    run: u32,
    /// The step's number, from 1.
    step: u32,
    webhook: &'a str,
    phase: &'a str,
    stable_target_group_arn: &'a str,
    canary_target_group_arn: &'a str,
    weights: Weights,
    /// Each template's last verdict: `{template, verdict, summary}`.
    last_verdicts: Vec<Verdicts<'a>>,
}

#[derive(Serialize)]
struct Verdicts<'a> {
    template: &'a str,
    verdict: &'a str,
    summary: String,
}

/// Whether a run of `st` is under way (its alarms matter).
fn under_way(st: &RolloutStatus) -> bool {
    matches!(st.phase, Phase::Progressing | Phase::Paused)
        && st.started_at.is_some()
        && st.deleting.is_none()
}

/// The alarms to read now: a run under way reads them every
/// `alarm_check_ms`.
pub(super) fn alarms_to_read(
    ctx: Context<'_>,
    st: &RolloutStatus,
    now: Time,
    reads: Reads,
) -> Vec<String> {
    let names = ctx
        .rollout
        .spec
        .analysis
        .as_ref()
        .map_or(&[][..], |a| a.alarms.as_slice());
    let due = reads
        .last_alarms
        .is_none_or(|last| now.since(last) >= reads.alarm_check_ms);
    if names.is_empty() || !under_way(st) || st.revision != ctx.rollout.spec.revision || !due {
        return Vec::new();
    }
    names.to_vec()
}

/// The webhook the run is at, by its step: a canary's webhook step, or a
/// blue-green run's pre-promotion (step 0, the preview) or post-promotion
/// (step 2, after the switch) gate.
pub fn current_webhook<'a>(
    spec: &'a rollout_spec::RolloutSpec,
    st: &RolloutStatus,
) -> Option<(u32, &'a Webhook)> {
    let i = st.current_step_index;
    if let Some(c) = &spec.strategy.canary {
        return match c.steps.get(i as usize) {
            Some(CanaryStep::Webhook(h)) => Some((i, h)),
            _ => None,
        };
    }
    let bg = spec.strategy.blue_green.as_ref()?;
    match st.blue_green?.stage {
        crate::status::BlueGreenStage::Preview => bg.pre_promotion_webhook.as_ref().map(|h| (0, h)),
        crate::status::BlueGreenStage::PostPromotion => {
            bg.post_promotion_webhook.as_ref().map(|h| (2, h))
        }
        crate::status::BlueGreenStage::Switching => None,
    }
}

/// The webhook to call now, if the run waits at one and its next call is
/// due.
pub(super) fn webhook_to_call(
    ctx: Context<'_>,
    st: &RolloutStatus,
    now: Time,
) -> Option<WebhookCall> {
    if st.phase != Phase::Progressing || st.revision != ctx.rollout.spec.revision {
        return None;
    }
    let (i, hook) = current_webhook(&ctx.rollout.spec, st)?;
    let w = st.webhook.as_ref().filter(|w| w.step == i && !w.passed)?;
    if now < w.next_at {
        return None;
    }
    let last_verdicts = st
        .analysis
        .templates
        .iter()
        .filter_map(|(name, t)| {
            t.last.as_ref().map(|l| Verdicts {
                template: name,
                verdict: l.result.verdict.as_str(),
                summary: l.result.summary(),
            })
        })
        .collect();
    let body = WebhookBody {
        rollout: ctx.rollout.metadata.name.as_str(),
        revision: &st.revision,
        run: st.run,
        step: i + 1,
        webhook: hook.name.as_str(),
        phase: st.phase.as_str(),
        stable_target_group_arn: &st.stable_target_group_arn,
        canary_target_group_arn: &st.canary_target_group_arn,
        weights: Weights::for_canary(st.canary_weight),
        last_verdicts,
    };
    Some(WebhookCall {
        step: i,
        attempt: w.attempts + 1,
        body: serde_json::to_string(&body).unwrap_or_default(),
        hook: hook.clone(),
    })
}

impl Reconcile<'_> {
    /// Any of the rollout's alarms in `ALARM` fails the run; an alarm that
    /// does not exist fails it too (the gate could never be checked).
    pub(super) fn check_alarms(&mut self) {
        let Observed::Ok(seen) = &self.obs.alarms else {
            return;
        };
        if !under_way(&self.st) || self.st.pause == Some(PauseReason::Frozen) {
            return;
        }
        let names = self
            .ctx
            .rollout
            .spec
            .analysis
            .as_ref()
            .map_or(&[][..], |a| a.alarms.as_slice());
        for name in names {
            match seen.iter().find(|a: &&AlarmState| &a.name == name) {
                None => {
                    self.fail(format!(
                        "cannot proceed: CloudWatch alarm `{name}` does not exist in the rollout's region; create it or remove it from spec.analysis.alarms"
                    ));
                    return;
                }
                Some(a) if a.state == "ALARM" => {
                    self.roll_back(format!("alarm `{name}` is in ALARM: {}", a.reason));
                    return;
                }
                Some(_) => {}
            }
        }
    }

    /// The current step is a webhook: wait for its answer (the call is
    /// made by the daemon when the plan asks, see [`webhook_to_call`]).
    pub(super) fn webhook_step(&mut self, idx: usize, total: usize, hook: &Webhook) {
        let i = u32::try_from(idx).unwrap_or(u32::MAX);
        let waiting = self.wait_for_webhook(i, hook);
        self.st.message = format!("step {} of {total}: {waiting}", idx + 1);
    }

    /// Whether a blue-green gate's webhook (at `step`) has passed; while it
    /// has not, the message says the run waits for it.
    pub(super) fn gate_passed(&mut self, step: u32, hook: Option<&Webhook>, stage: &str) -> bool {
        let Some(hook) = hook else {
            return true;
        };
        if self
            .st
            .webhook
            .as_ref()
            .is_some_and(|w| w.step == step && w.passed)
        {
            return true;
        }
        let waiting = self.wait_for_webhook(step, hook);
        self.st.message = format!("{stage}: {waiting}");
        false
    }

    /// Records that the run waits for `hook` at `step` (calls start now);
    /// says how.
    fn wait_for_webhook(&mut self, step: u32, hook: &Webhook) -> String {
        let w = match self.st.webhook.clone().filter(|w| w.step == step) {
            Some(w) => w,
            None => {
                let w = WebhookStatus {
                    step,
                    attempts: 0,
                    next_at: self.now,
                    last: None,
                    passed: false,
                };
                self.st.webhook = Some(w.clone());
                w
            }
        };
        self.requeue_at(w.next_at);
        let last = w
            .last
            .as_deref()
            .map(|l| format!(" (last: {l})"))
            .unwrap_or_default();
        format!(
            "waiting for webhook `{}` to answer 2xx, attempt {}{last}",
            hook.name,
            w.attempts + 1
        )
    }

    /// The daemon called the webhook the plan asked for: a 2xx passes the
    /// step, another answer fails the run, no answer is tried again (with
    /// a doubling wait) until `retries` are used up.
    pub(super) fn webhook_answered(&mut self) {
        let Some((step, attempt, outcome)) = self.obs.webhook.clone() else {
            return;
        };
        if self.st.phase != Phase::Progressing {
            return;
        }
        let spec = &self.ctx.rollout.spec;
        let Some((i, hook)) = current_webhook(spec, &self.st) else {
            return;
        };
        let hook = hook.clone();
        if step != i {
            return;
        }
        let Some(mut w) = self.st.webhook.clone().filter(|w| w.step == i && !w.passed) else {
            return;
        };
        if attempt != w.attempts + 1 {
            return;
        }
        match outcome {
            WebhookOutcome::Passed { status, reason } => {
                let why = if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                };
                self.event(
                    EventKind::WebhookPassed,
                    format!("webhook `{}` answered {status}{why}", hook.name),
                    None,
                );
                if self.ctx.rollout.spec.strategy.canary.is_some() {
                    self.st.webhook = None;
                    self.advance(i as usize + 1);
                } else {
                    w.passed = true;
                    self.st.webhook = Some(w);
                }
            }
            WebhookOutcome::Refused { status, reason } => {
                self.st.webhook = None;
                self.roll_back(format!(
                    "webhook `{}` refused with HTTP {status}: {reason}",
                    hook.name
                ));
            }
            WebhookOutcome::NoAnswer { message } => {
                w.attempts += 1;
                if w.attempts > hook.retries {
                    self.st.webhook = None;
                    self.roll_back(format!(
                        "webhook `{}` did not answer in {} attempts: {message}",
                        hook.name, w.attempts
                    ));
                    return;
                }
                let backoff = (1_000u64 << w.attempts.min(16)).min(MAX_WEBHOOK_BACKOFF_MS);
                w.next_at = self.now.plus_ms(backoff);
                w.last = Some(message);
                self.st.webhook = Some(w);
            }
        }
    }

    /// At 100% with every step done: the bake after promotion, if the
    /// strategy asks for one. True while it lasts (the run succeeds after).
    /// The new revision is judged against stable's last whole interval
    /// before the final weight was seen (stable has no traffic now), and
    /// against its alarms and absolute limits.
    pub(super) fn baking(&mut self, pp: &PostPromotion) -> bool {
        let started = match self.st.bake_started_at {
            Some(t) => t,
            None => {
                self.start_bake(pp);
                self.now
            }
        };
        let until = started.plus_ms(pp.duration.as_millis());
        if self.now >= until {
            return false;
        }
        self.st.message = format!(
            "baking revision {} at 100% until {until}: judged against stable's last interval before the final step; keep {} ready, it takes all traffic back on a failure",
            self.st.revision, self.st.stable_target_group_arn
        );
        self.requeue_at(until);
        true
    }

    fn start_bake(&mut self, pp: &PostPromotion) {
        self.st.bake_started_at = Some(self.now);
        if let Some(a) = &self.ctx.rollout.spec.analysis {
            let interval = a.interval.as_millis().max(1);
            let seen = self.st.weight_verified_at.unwrap_or(self.now);
            let end = grid_floor(seen, interval);
            let start = Time::from_millis(end.millis().saturating_sub(interval as i64));
            self.st.analysis.templates.clear();
            self.st.analysis.origin = Some(grid_floor(self.now, interval));
            self.st.analysis.baseline = Some((start, end));
        }
        self.st.last_progress_at = Some(self.now);
        self.event(
            EventKind::BakeStarted,
            format!(
                "revision {} serves all traffic: baking for {} before the run succeeds",
                self.st.revision, pp.duration
            ),
            None,
        );
    }
}

impl Reconcile<'_> {
    /// Before the canary takes all traffic: every check with
    /// `minImprovement` has shown the improvement (the run's evidence, at
    /// the judge's confidence). What is not shown, with the measured effect
    /// and its 95% interval, if anything.
    pub(super) fn improvement_missing(&self) -> Option<String> {
        let analysis = self.ctx.rollout.spec.analysis.as_ref()?;
        let mut missing = Vec::new();
        for name in &analysis.templates {
            let Some(template) = self.ctx.templates.get(name) else {
                continue;
            };
            let state = self.st.analysis.templates.get(name);
            let history = state.map_or(&[][..], |s| s.history.as_slice());
            let shown = |metric: &str| {
                state
                    .and_then(|s| s.last.as_ref())
                    .and_then(|l| l.result.metrics.iter().find(|m| m.metric == metric))
                    .and_then(|m| m.improvement)
                    .is_some_and(|w| w.shown())
            };
            // (check, how it reads, the improvement required) of every gate
            // not yet shown; the run's report is computed once for them.
            let alb = &template.alb;
            let gates = alb
                .latency
                .iter()
                .map(|c| {
                    (
                        "latency".to_string(),
                        format!("latency {}", c.statistic),
                        c.min_improvement,
                    )
                })
                .chain(alb.error_rate.iter().map(|c| {
                    (
                        "errorRate".to_string(),
                        "error rate".to_string(),
                        c.min_improvement,
                    )
                }))
                .chain(template.metrics.iter().map(|m| {
                    (
                        m.name.to_string(),
                        format!("{} per request", m.name),
                        m.min_improvement,
                    )
                }))
                .filter(|(check, _, min)| min.is_some() && !shown(check))
                .collect::<Vec<_>>();
            if gates.is_empty() {
                continue;
            }
            let error_cv = state.and_then(|s| s.error_cv());
            let mut report = rollout_analysis::effect::report_learnt(template, error_cv, history);
            for (check, what, min) in gates {
                let e = report
                    .remove(&check)
                    .unwrap_or_else(rollout_analysis::effect::Effect::unknown);
                missing.push(not_improved(&what, min, &e));
            }
        }
        (!missing.is_empty()).then(|| missing.join("; "))
    }
}

/// "latency p99 not improved by 5%: effect −1.2% [−3.0%, +0.6%]".
fn not_improved(
    what: &str,
    min: Option<rollout_spec::Percent>,
    e: &rollout_analysis::effect::Effect,
) -> String {
    let pct = |x: f64| format!("{:+.1}%", x * 100.0);
    let effect = match (e.effect, e.low, e.high) {
        (Some(x), Some(lo), Some(hi)) => format!("effect {} [{}, {}]", pct(x), pct(lo), pct(hi)),
        (Some(x), _, _) => format!("effect {} (too few intervals for an interval)", pct(x)),
        _ => "no effect measured".into(),
    };
    let min = min.map(|m| m.to_string()).unwrap_or_default();
    format!("{what} not improved by {min}: {effect}")
}
