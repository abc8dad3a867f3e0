//! The checks of a rollout's steps: canary steps (weights, evidence-driven
//! pauses, chaos steps), rollback steps, and an experiment.

use super::Report;
use crate::types::{CanaryStep, Pause};

/// An experiment measures: it needs analysis, a weight that leaves stable
/// a baseline, and at least one analysis interval.
pub(super) fn check_experiment(
    e: &crate::Experiment,
    analysis: Option<&crate::RolloutAnalysis>,
    rep: &mut Report<'_>,
) {
    let w = e.weight.get();
    if w == 0 || w == 100 {
        rep.at(
            "spec.strategy.experiment.weight",
            format!("an experiment compares the canary with stable while both serve: give a weight from 1 to 99, not {w}"),
        );
    }
    match analysis {
        Some(a) if !a.templates.is_empty() => {
            if e.duration.as_millis() < a.interval.as_millis() {
                rep.at(
                    "spec.strategy.experiment.duration",
                    format!(
                        "an experiment of {} ends before its first analysis interval ({}) does",
                        e.duration, a.interval
                    ),
                );
            }
        }
        _ => rep.at(
            "spec.strategy.experiment",
            "an experiment measures the canary against stable: name the templates to judge it by in spec.analysis.templates",
        ),
    }
}

/// The most steps a canary strategy (or a rollback) may have: a decision's
/// events and status stay bounded.
pub const MAX_STEPS: usize = 100;

pub(super) fn check_canary_steps(steps: &[CanaryStep], rep: &mut Report<'_>) {
    let path = "spec.strategy.canary.steps";
    if steps.len() > MAX_STEPS {
        rep.at(
            path,
            format!(
                "{} steps: at most {MAX_STEPS} are allowed (every step is a decision the daemon keeps and explains)",
                steps.len()
            ),
        );
        return;
    }
    if steps.is_empty() {
        rep.at(path, "no steps: give at least `- setWeight: 100`");
        return;
    }
    let last_weight = steps.iter().enumerate().rev().find_map(|(i, s)| match s {
        CanaryStep::SetWeight(w) => Some((i, *w)),
        CanaryStep::Pause(_) | CanaryStep::Webhook(_) | CanaryStep::Chaos(_) => None,
    });
    match last_weight {
        None => rep.at(
            path,
            "the steps never set a weight, so the canary would never get traffic; end with `- setWeight: 100`",
        ),
        Some((i, w)) if w.get() != 100 => rep.at(
            &format!("{path}[{i}].setWeight"),
            format!(
                "the last setWeight is {w}, so the run could never finish with the canary at 100%; add `- setWeight: 100`"
            ),
        ),
        Some(_) => {}
    }
}

/// A pause that may end early needs a duration it ends before, and the
/// analysis whose evidence ends it.
pub(super) fn check_evidence_pauses(steps: &[CanaryStep], analysis: bool, rep: &mut Report<'_>) {
    for (i, step) in steps.iter().enumerate() {
        let CanaryStep::Pause(Pause {
            duration,
            minimum: Some(min),
        }) = step
        else {
            continue;
        };
        let path = format!("spec.strategy.canary.steps[{i}].pause.minimum");
        match duration {
            None => rep.at(
                &path,
                "a pause without a duration waits for promote; `minimum` needs a `duration` to end early before",
            ),
            Some(d) if min > d => rep.at(
                &path,
                format!("the minimum {min} is longer than the duration {d}; the pause could never end early"),
            ),
            Some(_) if !analysis => rep.at(
                &path,
                "a pause ends early on the analysis's evidence, and this rollout has no `spec.analysis`",
            ),
            Some(_) => {}
        }
    }
}

/// A chaos step judges both arms under the fault: it needs analysis
/// templates, a weight that leaves both arms traffic, and at least one
/// analysis interval.
pub(super) fn check_chaos_steps(
    steps: &[CanaryStep],
    analysis: Option<&crate::RolloutAnalysis>,
    rep: &mut Report<'_>,
) {
    let mut weight = 0;
    for (i, step) in steps.iter().enumerate() {
        let c = match step {
            CanaryStep::SetWeight(w) => {
                weight = w.get();
                continue;
            }
            CanaryStep::Chaos(c) => c,
            _ => continue,
        };
        let path = format!("spec.strategy.canary.steps[{i}].chaos");
        let Some(a) = analysis.filter(|a| !a.templates.is_empty()) else {
            rep.at(
                &path,
                "a chaos step judges the canary against stable while the experiment runs: name the templates in spec.analysis.templates",
            );
            continue;
        };
        if weight == 0 || weight == 100 {
            rep.at(
                &path,
                format!("a chaos step compares both arms under the fault, but the canary weight here is {weight}%: put it after a setWeight from 1 to 99"),
            );
        }
        if c.duration.as_millis() < a.interval.as_millis() {
            rep.at(
                &format!("{path}.duration"),
                format!(
                    "an experiment of at most {} ends before one analysis interval ({}) is judged",
                    c.duration, a.interval
                ),
            );
        }
    }
}

pub(super) fn check_rollback_steps(steps: &[CanaryStep], rep: &mut Report<'_>) {
    if steps.len() > MAX_STEPS {
        rep.at(
            "spec.rollback.steps",
            format!("{} steps: at most {MAX_STEPS} are allowed", steps.len()),
        );
        return;
    }
    let mut previous: Option<u8> = None;
    for (i, step) in steps.iter().enumerate() {
        match step {
            CanaryStep::SetWeight(w) => {
                if let Some(p) = previous {
                    if w.get() > p {
                        rep.at(
                            &format!("spec.rollback.steps[{i}].setWeight"),
                            format!(
                                "a rollback only lowers the canary weight, but {w} follows {p}"
                            ),
                        );
                    }
                }
                previous = Some(w.get());
            }
            CanaryStep::Pause(p) if p.duration.is_none() => rep.at(
                &format!("spec.rollback.steps[{i}].pause"),
                "a rollback pause needs a duration; a rollback never waits for a person",
            ),
            CanaryStep::Pause(p) if p.minimum.is_some() => rep.at(
                &format!("spec.rollback.steps[{i}].pause.minimum"),
                "a rollback pause lasts its duration: evidence that the canary is good does not speed up returning traffic",
            ),
            CanaryStep::Pause(_) => {}
            CanaryStep::Webhook(_) => rep.at(
                &format!("spec.rollback.steps[{i}].webhook"),
                "a rollback never waits for a webhook: it returns traffic whatever a hook would say",
            ),
            CanaryStep::Chaos(_) => rep.at(
                &format!("spec.rollback.steps[{i}].chaos"),
                "a rollback returns traffic; it runs no experiment",
            ),
        }
    }
}
