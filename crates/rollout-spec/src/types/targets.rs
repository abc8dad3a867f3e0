//! Several traffic targets moving in lockstep: `spec.additionalTargets`,
//! each a listener (or rule) of its own with its own pair of target
//! groups, in any region or account. The spec's own `trafficRouting`,
//! `stable` and `canary` are the first target, named [`MAIN_TARGET`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{RolloutSpec, TargetGroupRef, TrafficRouting};
use crate::decode::{Ctx, Decode};
use crate::tree::Node;
use crate::values::Name;

/// The name of the target the spec's own `trafficRouting`, `stable` and
/// `canary` describe, when it has `additionalTargets`.
pub const MAIN_TARGET: &str = "main";

/// The most targets one rollout moves together (its own and the
/// additional ones).
pub const MAX_TARGETS: usize = 10;

/// One more listener (or rule) that moves in lockstep with the rollout's
/// own: each step's weights are written to every target and seen applied on
/// all before the step counts; each target's arms are judged, and so are
/// the arms of all targets pooled; a failure on any returns all of them to
/// stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdditionalTarget {
    /// A lowercase DNS label, unique in the rollout and not `main` (the
    /// name of the spec's own target); it names the target in the status,
    /// events and verdicts.
    pub name: Name,
    /// Where this target's traffic is shifted.
    pub traffic_routing: TrafficRouting,
    /// The target group that serves production behind it now.
    pub stable: TargetGroupRef,
    /// The target group with the new revision behind it.
    pub canary: TargetGroupRef,
}

impl Decode for AdditionalTarget {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["name", "trafficRouting", "stable", "canary"])?;
        let name = f.req(cx, "name");
        let traffic_routing = f.req(cx, "trafficRouting");
        let stable = f.req(cx, "stable");
        let canary = f.req(cx, "canary");
        Some(AdditionalTarget {
            name: name?,
            traffic_routing: traffic_routing?,
            stable: stable?,
            canary: canary?,
        })
    }
}

impl RolloutSpec {
    /// How many traffic targets the rollout moves (1 without
    /// `additionalTargets`).
    pub fn target_count(&self) -> usize {
        1 + self.additional_targets.len()
    }

    /// Whether the rollout moves several targets in lockstep.
    pub fn has_several_targets(&self) -> bool {
        !self.additional_targets.is_empty()
    }

    /// The name of target `i` (0 is the spec's own, [`MAIN_TARGET`]).
    pub fn target_name(&self, i: usize) -> &str {
        match i.checked_sub(1) {
            None => MAIN_TARGET,
            Some(k) => self
                .additional_targets
                .get(k)
                .map_or(MAIN_TARGET, |t| t.name.as_str()),
        }
    }

    /// The index of the target named `name`.
    pub fn target_index(&self, name: &str) -> Option<usize> {
        (0..self.target_count()).find(|&i| self.target_name(i) == name)
    }

    /// Where each target's traffic is shifted, in order (the spec's own
    /// first).
    pub fn routings(&self) -> impl Iterator<Item = &TrafficRouting> {
        std::iter::once(&self.traffic_routing)
            .chain(self.additional_targets.iter().map(|t| &t.traffic_routing))
    }

    /// Target `i`'s stable and canary target groups.
    pub fn target_arms(&self, i: usize) -> Option<(&TargetGroupRef, &TargetGroupRef)> {
        match i.checked_sub(1) {
            None => Some((&self.stable, &self.canary)),
            Some(k) => self
                .additional_targets
                .get(k)
                .map(|t| (&t.stable, &t.canary)),
        }
    }

    /// Target `i` as a spec of its own: the same rollout with that target's
    /// listener (or rule) and target groups, and no additional targets;
    /// what the load balancer and metric adapters are given. `None` when
    /// there is no such target.
    pub fn target_spec(&self, i: usize) -> Option<RolloutSpec> {
        let routing = self.routings().nth(i)?.clone();
        let (stable, canary) = self.target_arms(i)?;
        let (stable, canary) = (stable.clone(), canary.clone());
        let mut spec = self.clone();
        spec.additional_targets = Vec::new();
        spec.traffic_routing = routing;
        spec.stable = stable;
        spec.canary = canary;
        Some(spec)
    }

    /// Every target as a spec of its own, in order.
    pub fn target_specs(&self) -> Vec<RolloutSpec> {
        (0..self.target_count())
            .filter_map(|i| self.target_spec(i))
            .collect()
    }

    /// The listener (or rule) ARN each target shifts, in order.
    pub fn target_places(&self) -> Vec<&str> {
        self.routings().map(|r| r.alb.place()).collect()
    }
}
