//! `rolloutd_run_effect{rollout,template,check}` with `_low` and `_high`:
//! each rollout's current run's measured effects (`canary/stable − 1` and
//! its 95% confidence sequence, `rollout_core::report`), so a Grafana panel
//! can show what each release did over time. A report is computed again
//! only when the rollout's status changed since the last scrape.

use std::collections::{BTreeMap, HashMap};

use prometheus::Registry;
use rollout_analysis::effect::Effect;
use rollout_spec::AnalysisTemplateSpec;
use rollout_store::StoredRollout;

/// The effects last computed per rollout, with the status version (and
/// identity) they were computed from.
#[derive(Debug, Default)]
pub struct EffectCache {
    by_rollout: HashMap<String, Cached>,
}

#[derive(Debug)]
struct Cached {
    uid: String,
    version: i64,
    effects: Vec<(String, String, Effect)>,
}

impl EffectCache {
    /// Renders the effect gauges into `state`, recomputing the reports of
    /// the rollouts whose status moved (and forgetting rollouts gone).
    pub fn render(
        &mut self,
        state: &Registry,
        rollouts: &[StoredRollout],
        templates: &BTreeMap<String, AnalysisTemplateSpec>,
    ) {
        let labels = ["rollout", "template", "check"];
        let effect = super::gauge(
            state,
            "rolloutd_run_effect",
            "The current run's measured effect of a check: canary/stable - 1.",
            &labels,
        );
        let low = super::gauge(
            state,
            "rolloutd_run_effect_low",
            "The low end of the effect's 95% confidence sequence.",
            &labels,
        );
        let high = super::gauge(
            state,
            "rolloutd_run_effect_high",
            "The high end of the effect's 95% confidence sequence.",
            &labels,
        );
        let present: std::collections::HashSet<&str> = rollouts
            .iter()
            .map(|r| r.rollout.metadata.name.as_str())
            .collect();
        self.by_rollout
            .retain(|name, _| present.contains(name.as_str()));
        for r in rollouts {
            let Some(st) = &r.status else { continue };
            let name = r.rollout.metadata.name.as_str();
            let fresh = self
                .by_rollout
                .get(name)
                .is_some_and(|c| c.uid == r.uid && c.version == r.version);
            if !fresh {
                let effects = rollout_core::report::checks_of(st, templates)
                    .into_iter()
                    .flat_map(|(template, checks)| {
                        checks
                            .into_iter()
                            .map(move |(check, e)| (template.clone(), check, e))
                    })
                    .collect();
                let cached = Cached {
                    uid: r.uid.clone(),
                    version: r.version,
                    effects,
                };
                self.by_rollout.insert(name.to_string(), cached);
            }
            let Some(c) = self.by_rollout.get(name) else {
                continue;
            };
            for (template, check, e) in &c.effects {
                let l = [name, template.as_str(), check.as_str()];
                for (gauge, value) in [(&effect, e.effect), (&low, e.low), (&high, e.high)] {
                    if let Some(v) = value.filter(|v| v.is_finite()) {
                        gauge.with_label_values(&l).set(v);
                    }
                }
            }
        }
    }
}
