//! The checks of a rollout's traffic targets when it moves several in
//! lockstep (`spec.additionalTargets`): each target is a listener (or rule)
//! with its own two target groups, in any region or account, and no two
//! targets share a listener rule, a default action or a target group.

use std::collections::BTreeMap;

use super::{check_rule, same_place, Report};
use crate::types::{RolloutSpec, MAIN_TARGET, MAX_TARGETS};

/// Every target's place key (its rule, or its listener's default action)
/// with the path that names it, the main target first.
pub(super) fn places(spec: &RolloutSpec) -> Vec<(String, String)> {
    let base = |i: usize| {
        if i == 0 {
            "spec.trafficRouting.alb".to_string()
        } else {
            format!("spec.additionalTargets[{}].trafficRouting.alb", i - 1)
        }
    };
    spec.routings()
        .enumerate()
        .map(|(i, r)| match &r.alb.rule_arn {
            Some(rule) => (format!("rule {rule}"), format!("{}.ruleArn", base(i))),
            None => (
                format!("the default action of listener {}", r.alb.listener_arn),
                format!("{}.listenerArn", base(i)),
            ),
        })
        .collect()
}

pub(super) fn check_targets(spec: &RolloutSpec, rep: &mut Report<'_>) {
    if spec.additional_targets.is_empty() {
        return;
    }
    if spec.target_count() > MAX_TARGETS {
        rep.at(
            "spec.additionalTargets",
            format!(
                "{} targets in one rollout: at most {MAX_TARGETS} move together",
                spec.target_count()
            ),
        );
    }
    if spec.target_groups.is_some() {
        rep.at(
            "spec.additionalTargets",
            "targetGroups (ping-pong) moves one target; with additionalTargets give `stable` and `canary` for each target",
        );
    }
    if spec.strategy.blue_green.is_some() {
        rep.at(
            "spec.additionalTargets",
            "a blueGreen rollout switches one listener; additionalTargets move with the canary strategy (or an experiment)",
        );
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, t) in spec.additional_targets.iter().enumerate() {
        let base = format!("spec.additionalTargets[{k}]");
        let name = t.name.as_str();
        if name == MAIN_TARGET {
            rep.at(
                &format!("{base}.name"),
                format!("`{MAIN_TARGET}` names the spec's own trafficRouting; give this target another name"),
            );
        } else if let Some(first) = names.insert(name, k) {
            rep.at(
                &format!("{base}.name"),
                format!(
                    "target `{name}` is named twice (first at spec.additionalTargets[{first}])"
                ),
            );
        }
        let alb = &t.traffic_routing.alb;
        check_rule(alb, &format!("{base}.trafficRouting.alb.ruleArn"), rep);
        for (arm, tg) in [("stable", &t.stable), ("canary", &t.canary)] {
            if let Some(why) = same_place(&tg.target_group_arn.parts, &alb.listener_arn.parts) {
                rep.at(
                    &format!("{base}.{arm}.targetGroupArn"),
                    format!("the target group cannot receive this listener's traffic: {why}"),
                );
            }
        }
    }
    check_distinct(spec, rep);
}

/// No two targets share a listener rule, a default action or a target group.
fn check_distinct(spec: &RolloutSpec, rep: &mut Report<'_>) {
    let mut seen_places: BTreeMap<String, String> = BTreeMap::new();
    for (key, path) in places(spec) {
        if let Some(first) = seen_places.get(&key) {
            rep.at(
                &path,
                format!("{key} is already a target of this rollout (at {first}); each target moves once"),
            );
        } else {
            seen_places.insert(key, path);
        }
    }
    let mut groups: BTreeMap<&str, String> = BTreeMap::new();
    let arms = std::iter::once((
        "spec".to_string(),
        &spec.stable.target_group_arn,
        &spec.canary.target_group_arn,
    ))
    .chain(spec.additional_targets.iter().enumerate().map(|(k, t)| {
        (
            format!("spec.additionalTargets[{k}]"),
            &t.stable.target_group_arn,
            &t.canary.target_group_arn,
        )
    }));
    for (base, stable, canary) in arms {
        for (arm, tg) in [("stable", stable), ("canary", canary)] {
            let path = format!("{base}.{arm}.targetGroupArn");
            if let Some(first) = groups.get(tg.as_str()) {
                rep.at(
                    &path,
                    format!("this target group is already named at {first}; every target needs target groups of its own, or its traffic would be counted twice"),
                );
            } else {
                groups.insert(tg.as_str(), path);
            }
        }
    }
}
