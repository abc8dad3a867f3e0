//! A rollout that moves several traffic targets in lockstep
//! (`spec.additionalTargets`): every target's weights are read, written and
//! seen applied; each template is judged once per target and once over
//! every target's arms pooled (a "judged unit"), and a failure of any unit
//! rolls all of them back.
//!
//! The units are the analysis's templates under names of their own:
//! `TEMPLATE` for the pooled arms and `TEMPLATE@TARGET` for one target's.
//! So the stages that judge, pace and report a template need nothing new:
//! [`expand`] hands them a context whose rollout lists the units and whose
//! templates map each unit to its template. Each unit's template gets the
//! template's `alpha` divided by the number of units (Bonferroni), so the
//! chance that a good canary is rolled back by any of them stays within the
//! template's `alpha`.

use rollout_analysis::IntervalMetrics;
use rollout_spec::{Percent, RolloutSpec};

use super::*;
use crate::observe::{ForwardWeights, ObservationError, TargetHealth};

/// The name of a template's judged unit for one target.
pub fn unit_key(template: &str, target: &str) -> String {
    format!("{template}@{target}")
}

/// The template and the target (`None`: every target pooled) a judged unit
/// names.
pub fn split_unit(key: &str) -> (&str, Option<&str>) {
    match key.split_once('@') {
        Some((template, target)) => (template, Some(target)),
        None => (key, None),
    }
}

/// The template a judged unit applies and the targets (indices) whose arms
/// it reads: one target's, or every target's added up ([`pool`]). `None`
/// for a unit naming a target the spec does not have.
pub fn unit_reads<'a>(spec: &RolloutSpec, unit: &'a str) -> Option<(&'a str, Vec<usize>)> {
    match split_unit(unit) {
        (template, None) => Some((template, (0..spec.target_count()).collect())),
        (template, Some(target)) => Some((template, vec![spec.target_index(target)?])),
    }
}

/// Several targets' metrics over the same interval as one: requests and
/// errors add up, latency is their request-weighted mean (for a percentile
/// statistic an approximation; each target's own unit judges its exact
/// percentile), custom metrics combine by their statistic. Any target's
/// error is the answer (a fatal one before a transient one).
pub fn pool(
    template: &AnalysisTemplateSpec,
    results: Vec<Result<IntervalMetrics, ObservationError>>,
) -> Result<IntervalMetrics, ObservationError> {
    let mut pooled: Option<IntervalMetrics> = None;
    let mut error: Option<ObservationError> = None;
    for r in results {
        match r {
            Ok(m) => {
                pooled = Some(match pooled {
                    None => m,
                    Some(p) => rollout_analysis::compact::merge(template, p, m),
                })
            }
            Err(e) if error.as_ref().is_none_or(|old| e.fatal && !old.fatal) => error = Some(e),
            Err(_) => {}
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    let mut pooled = pooled.ok_or_else(|| ObservationError {
        fatal: false,
        message: "no target's metrics were read".into(),
    })?;
    // The same interval, not a longer one.
    pooled.merged = 0;
    Ok(pooled)
}

/// The spec side of a decision for a rollout with several targets, its
/// analysis expanded into judged units.
pub struct Expanded {
    rollout: Rollout,
    templates: BTreeMap<String, AnalysisTemplateSpec>,
}

impl Expanded {
    /// The context that judges the units.
    pub fn ctx(&self) -> Context<'_> {
        Context {
            rollout: &self.rollout,
            templates: &self.templates,
        }
    }
}

/// `ctx` with its analysis expanded into judged units, when the rollout
/// moves several targets and has an analysis; `None` otherwise (use `ctx`
/// as it is).
pub fn expand(ctx: Context<'_>) -> Option<Expanded> {
    let spec = &ctx.rollout.spec;
    if !spec.has_several_targets() {
        return None;
    }
    let analysis = spec.analysis.as_ref()?;
    let units = spec.target_count() + 1;
    let mut templates = ctx.templates.clone();
    let mut names = Vec::new();
    for name in &analysis.templates {
        names.push(name.clone());
        let Some(template) = ctx.templates.get(name) else {
            // Judging reports the missing template by its own name.
            continue;
        };
        let mut unit = template.clone();
        unit.alpha = Percent::new(template.alpha.value() / units as f64).unwrap_or(template.alpha);
        for i in 0..spec.target_count() {
            let key = unit_key(name, spec.target_name(i));
            templates.insert(key.clone(), unit.clone());
            names.push(key);
        }
        templates.insert(name.clone(), unit);
    }
    let mut rollout = ctx.rollout.clone();
    if let Some(a) = rollout.spec.analysis.as_mut() {
        a.templates = names;
    }
    Some(Expanded { rollout, templates })
}

impl Observations {
    /// Target `i`'s weights (0: the spec's own target).
    pub fn traffic_of(&self, i: usize) -> &Observed<ForwardWeights> {
        match i.checked_sub(1) {
            None => &self.traffic,
            Some(k) => self
                .more_targets
                .get(k)
                .map_or(&MISSING_WEIGHTS, |t| &t.traffic),
        }
    }

    /// Target `i`'s canary health (0: the spec's own target).
    pub fn health_of(&self, i: usize) -> &Observed<TargetHealth> {
        match i.checked_sub(1) {
            None => &self.canary_health,
            Some(k) => self
                .more_targets
                .get(k)
                .map_or(&MISSING_HEALTH, |t| &t.canary_health),
        }
    }
}

static MISSING_WEIGHTS: Observed<ForwardWeights> = Observed::Missing;
static MISSING_HEALTH: Observed<TargetHealth> = Observed::Missing;

impl Reconcile<'_> {
    /// How many targets the rollout moves.
    pub(super) fn target_count(&self) -> usize {
        self.ctx.rollout.spec.target_count()
    }

    /// `message` about target `i`, naming it when there are several.
    pub(super) fn on_target(&self, i: usize, message: &str) -> String {
        if self.target_count() > 1 {
            format!(
                "target `{}`: {message}",
                self.ctx.rollout.spec.target_name(i)
            )
        } else {
            message.to_string()
        }
    }

    /// Every target's weights when all were read, in order.
    pub(super) fn all_weights(&self) -> Option<Vec<ForwardWeights>> {
        (0..self.target_count())
            .map(|i| self.obs.traffic_of(i).ok().copied())
            .collect()
    }

    /// Whether some target's weights were not read for this decision.
    pub(super) fn some_traffic_missing(&self) -> bool {
        (0..self.target_count()).any(|i| matches!(self.obs.traffic_of(i), Observed::Missing))
    }

    /// Whether some target's canary health was not read.
    pub(super) fn some_health_missing(&self) -> bool {
        (0..self.target_count()).any(|i| matches!(self.obs.health_of(i), Observed::Missing))
    }

    /// The first fatal error reading any target's weights or health.
    pub(super) fn fatal_target_error(&self) -> Option<ObservationError> {
        (0..self.target_count()).find_map(|i| {
            let e = [self.obs.traffic_of(i).err(), self.obs.health_of(i).err()]
                .into_iter()
                .flatten()
                .find(|e| e.fatal)?;
            Some(ObservationError {
                fatal: true,
                message: self.on_target(i, &e.message),
            })
        })
    }

    /// Records each target's weights in the status (several targets only).
    pub(super) fn observe_targets(&mut self) {
        let spec = &self.ctx.rollout.spec;
        if !spec.has_several_targets() {
            self.st.targets.clear();
            return;
        }
        let expected = Weights::for_canary(self.st.canary_weight);
        let mut out = Vec::with_capacity(spec.target_count());
        for (i, routing) in spec.routings().enumerate() {
            let Some((stable, canary)) = spec.target_arms(i) else {
                continue;
            };
            let before = self
                .st
                .targets
                .iter()
                .find(|s| s.name == spec.target_name(i));
            let seen = self.obs.traffic_of(i).ok();
            out.push(crate::status::TargetStatus {
                name: spec.target_name(i).to_string(),
                place: routing.alb.place().to_string(),
                stable_target_group_arn: stable.target_group_arn.to_string(),
                canary_target_group_arn: canary.target_group_arn.to_string(),
                observed_weights: seen
                    .map(ForwardWeights::percentages)
                    .or_else(|| before.and_then(|b| b.observed_weights)),
                holds_run_weights: seen.map_or_else(
                    || before.is_some_and(|b| b.holds_run_weights),
                    |fw| fw.matches(expected),
                ),
            });
        }
        self.st.targets = out;
    }
}
