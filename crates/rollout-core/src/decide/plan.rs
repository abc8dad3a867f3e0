//! Stage 0, before anything is read: which observations a reconcile needs
//! (the load balancer's weights, the canary's health, the analysis
//! intervals that are due) and how urgently (the API budget's queues).

use super::*;

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
    let expanded = expand(ctx);
    let ctx = expanded.as_ref().map_or(ctx, Expanded::ctx);
    let intervals = status
        .map(|st| due_intervals(ctx, st, now))
        .unwrap_or_default();
    // Stable's intervals before the run (read once, to learn its noise)
    // judge nothing: only the run's own make a raise possible.
    let judging = |st: &RolloutStatus| intervals.iter().any(|w| !st.analysis.before_run(w.end));
    let health = status.is_none_or(|st| health_may_matter(ctx, st, now, judging(st)));
    let (traffic, urgency) = match status {
        // A rollout never run yet: its first raise waits behind the steps
        // of runs under way (see `Action::SetWeights`), so does its read.
        None => (true, Urgency::Routine),
        Some(_) if reads.commands_queued => (true, Urgency::Rollback),
        Some(st) => match traffic_urgency(ctx, st, now, health, reads) {
            Some(u) => (true, u),
            None => (false, Urgency::Optional),
        },
    };
    let (alarms, webhook) = match status {
        Some(st) => (
            super::gates::alarms_to_read(ctx, st, now, reads),
            super::gates::webhook_to_call(ctx, st, now),
        ),
        None => (Vec::new(), None),
    };
    ObservationPlan {
        traffic,
        urgency,
        canary_health: health,
        intervals,
        alarms,
        webhook,
        experiment: status.and_then(super::chaos::call),
    }
}

/// How much reading the forward weights matters now; `None`: not at all.
pub(super) fn traffic_urgency(
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
pub(super) fn health_may_matter(
    ctx: Context<'_>,
    st: &RolloutStatus,
    now: Time,
    intervals_due: bool,
) -> bool {
    if st.revision != ctx.rollout.spec.revision {
        return true;
    }
    if st.phase.is_terminal() {
        return false;
    }
    let Some(steps) = ctx.rollout.spec.strategy.canary_steps() else {
        return true;
    };
    match st.phase {
        Phase::Pending => true,
        Phase::Progressing | Phase::Paused => {
            let raise_may_follow = |i: usize| match steps.get(i) {
                Some(CanaryStep::SetWeight(w)) => {
                    w.get() > st.canary_weight
                        && (intervals_due
                            || st.weight_verified_at.is_none()
                            || analysis_gate_open(ctx, st))
                }
                _ => true,
            };
            let i = st.current_step_index as usize;
            match steps.get(i) {
                Some(CanaryStep::SetWeight(_)) => raise_may_follow(i),
                Some(CanaryStep::Pause(p)) => match p.duration {
                    Some(d) => {
                        st.step_started_at
                            .is_none_or(|started| now >= started.plus_ms(d.as_millis()))
                            && raise_may_follow(i + 1)
                    }
                    None => false,
                },
                // Waiting for the hook's answer; a pass may be followed by
                // a raise at once.
                Some(CanaryStep::Webhook(_) | CanaryStep::Chaos(_)) => raise_may_follow(i + 1),
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
pub(super) fn analysis_gate_open(ctx: Context<'_>, st: &RolloutStatus) -> bool {
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
/// The analysis in force at a run's current stage.
pub(super) struct AnalysisConfig {
    /// The analysis interval, in milliseconds.
    pub interval_ms: u64,
    /// The templates judged.
    pub templates: Vec<String>,
    /// How many intervals the stage lasts (a blue-green phase), or none
    /// (a canary's analysis runs at every step).
    pub count: Option<u32>,
}

pub(super) fn analysis_config(ctx: Context<'_>, st: &RolloutStatus) -> Option<AnalysisConfig> {
    if !matches!(st.phase, Phase::Progressing | Phase::Paused) {
        return None;
    }
    let strategy = &ctx.rollout.spec.strategy;
    if strategy.blue_green.is_none() {
        let a = ctx.rollout.spec.analysis.as_ref()?;
        return Some(AnalysisConfig {
            interval_ms: a.interval.as_millis().max(1),
            templates: a.templates.clone(),
            count: None,
        });
    }
    let bg = strategy.blue_green.as_ref()?;
    let phase = match st.blue_green?.stage {
        BlueGreenStage::Preview => bg.pre_promotion_analysis.as_ref()?,
        BlueGreenStage::PostPromotion => bg.post_promotion_analysis.as_ref()?,
        BlueGreenStage::Switching => return None,
    };
    let interval = phase.interval.as_millis().max(1);
    let count = u32::try_from(super::blue_green::phase_intervals(phase)).unwrap_or(u32::MAX);
    Some(AnalysisConfig {
        interval_ms: interval,
        templates: phase.templates.clone(),
        count: Some(count),
    })
}

/// Stable's [`NOISE_INTERVALS`] intervals before the analysis `origin`,
/// read once at a run's start to learn how much its 5xx rate wanders (both
/// arms' windows are the same; the canary served nothing then). They end
/// at or before `origin`, every run interval after it.
fn noise_windows(name: &str, origin: Time, interval: u64) -> Vec<IntervalRequest> {
    (1..=u64::from(NOISE_INTERVALS))
        .rev()
        .map(|back| {
            let start = Time::from_millis(
                origin.millis() - i64::try_from(interval.saturating_mul(back)).unwrap_or(0),
            );
            let end = start.plus_ms(interval);
            IntervalRequest {
                template: name.to_string(),
                start,
                end,
                stable_start: start,
                stable_end: end,
            }
        })
        .collect()
}

/// `t` rounded down to a multiple of `step` milliseconds since the epoch.
pub(super) fn grid_floor(t: Time, step: u64) -> Time {
    let step = i64::try_from(step.max(1)).unwrap_or(i64::MAX);
    let ms = t.millis();
    Time::from_millis(ms - ms.rem_euclid(step))
}

pub(super) fn due_intervals(
    ctx: Context<'_>,
    st: &RolloutStatus,
    now: Time,
) -> Vec<IntervalRequest> {
    let Some(origin) = st.analysis.origin else {
        return Vec::new();
    };
    let Some(AnalysisConfig {
        interval_ms: interval,
        templates: names,
        count,
    }) = analysis_config(ctx, st)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names {
        let Some(t) = ctx.templates.get(&name) else {
            continue;
        };
        let delay = t.alb.delay.as_millis();
        let state = st.analysis.templates.get(&name);
        let done = state.map_or(0, |a| a.intervals_done);
        if state.is_none_or(|a| a.noise.is_none())
            && st.analysis.baseline.is_none()
            && origin.plus_ms(delay) <= now
        {
            out.extend(noise_windows(&name, origin, interval));
        }
        for k in done..done.saturating_add(MAX_INTERVALS_PER_TICK) {
            if count.is_some_and(|c| k >= c) {
                break;
            }
            let start = origin.plus_ms(interval.saturating_mul(u64::from(k)));
            let end = start.plus_ms(interval);
            if end.plus_ms(delay) > now {
                break;
            }
            let (stable_start, stable_end) = st.analysis.baseline.unwrap_or((start, end));
            out.push(IntervalRequest {
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
