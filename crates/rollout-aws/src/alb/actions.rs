//! A listener's or rule's actions, without I/O: the forward weights they
//! hold, the same actions with new weights, and the refusals (target
//! groups the rollout does not name).

use super::*;

/// The forward action of a list (an ALB list has at most one).
pub(super) fn forward_action(actions: &[Action]) -> Option<usize> {
    actions
        .iter()
        .position(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
}

/// The target groups and weights of a forward action.
pub(super) fn tuples(action: &Action) -> Vec<(String, u32)> {
    let weight = |w: Option<i32>| w.map_or(1, |w| u32::try_from(w).unwrap_or(0));
    match action.forward_config() {
        Some(fc) if !fc.target_groups().is_empty() => fc
            .target_groups()
            .iter()
            .filter_map(|t| Some((t.target_group_arn()?.to_string(), weight(t.weight()))))
            .collect(),
        _ => action
            .target_group_arn()
            .map(|arn| vec![(arn.to_string(), 1)])
            .unwrap_or_default(),
    }
}

/// The weights a forward action gives the two arms (and everything else).
pub fn read_forward(
    actions: &[Action],
    stable: &str,
    canary: &str,
    place: &str,
) -> Result<ForwardWeights, ObservationError> {
    let i = forward_action(actions)
        .ok_or_else(|| fatal(format!("{place} has no forward action to shift")))?;
    let mut w = ForwardWeights::default();
    for (arn, weight) in tuples(&actions[i]) {
        if arn == stable {
            w.stable += weight;
        } else if arn == canary {
            w.canary += weight;
        } else {
            w.other += weight;
        }
    }
    Ok(w)
}

/// The action list with the forward action's weights for the two arms set
/// to `weights`; everything else as it was.
pub fn with_weights(
    actions: &[Action],
    stable: &str,
    canary: &str,
    weights: Weights,
    place: &str,
) -> Result<Vec<Action>, ObservationError> {
    let i = forward_action(actions)
        .ok_or_else(|| fatal(format!("{place} has no forward action to shift")))?;
    let old = &actions[i];
    let mut groups: Vec<TargetGroupTuple> = Vec::new();
    let (mut saw_stable, mut saw_canary) = (false, false);
    let tuple = |arn: &str, w: u8| {
        TargetGroupTuple::builder()
            .target_group_arn(arn)
            .weight(i32::from(w))
            .build()
    };
    for (arn, weight) in tuples(old) {
        if arn == stable {
            saw_stable = true;
            groups.push(tuple(stable, weights.stable));
        } else if arn == canary {
            saw_canary = true;
            groups.push(tuple(canary, weights.canary));
        } else {
            groups.push(
                TargetGroupTuple::builder()
                    .target_group_arn(arn)
                    .weight(i32::try_from(weight).unwrap_or(i32::MAX))
                    .build(),
            );
        }
    }
    if !saw_stable {
        groups.push(tuple(stable, weights.stable));
    }
    if !saw_canary {
        groups.push(tuple(canary, weights.canary));
    }
    let forward = ForwardActionConfig::builder()
        .set_target_groups(Some(groups))
        .set_target_group_stickiness_config(
            old.forward_config()
                .and_then(|f| f.target_group_stickiness_config())
                .cloned(),
        )
        .build();
    let action = Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .set_order(old.order())
        .forward_config(forward)
        .build();
    let mut out = actions.to_vec();
    out[i] = action;
    Ok(out)
}

/// A fatal error naming the target groups the rollout does not name that
/// carry traffic in the forward action, if any.
pub(super) fn refuse_foreign(
    actions: &[Action],
    stable: &str,
    canary: &str,
    place: &str,
) -> Result<(), ObservationError> {
    let Some(i) = forward_action(actions) else {
        return Ok(());
    };
    let foreign: Vec<String> = tuples(&actions[i])
        .into_iter()
        .filter(|(arn, w)| *w > 0 && arn != stable && arn != canary)
        .map(|(arn, w)| format!("{arn} (weight {w})"))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(fatal(format!(
        "{place}: the forward action sends traffic to {}, which the rollout does not name; rolloutd never changes target groups it does not own, so it writes nothing",
        foreign.join(", ")
    )))
}

/// Whether two action lists agree on everything but the weights of their
/// forward actions (ELBv2 may fill in defaults, so actions are compared by
/// type, order and, for the forward, the target groups and stickiness).
pub(super) fn same_but_weights(a: &[Action], b: &[Action]) -> bool {
    let key = |act: &Action| {
        let groups: Vec<String> = tuples(act).into_iter().map(|(arn, _)| arn).collect();
        (
            act.r#type().cloned(),
            act.order(),
            if act.r#type() == Some(&ActionTypeEnum::Forward) {
                groups
            } else {
                Vec::new()
            },
            act.forward_config()
                .and_then(|f| f.target_group_stickiness_config())
                .and_then(|s| s.enabled()),
        )
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

/// Whether the load balancer holds exactly these raw weights (nothing to write).
pub(super) fn holds(w: &ForwardWeights, weights: Weights) -> bool {
    w.stable == u32::from(weights.stable) && w.canary == u32::from(weights.canary) && w.other == 0
}
