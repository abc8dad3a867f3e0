//! The traffic router: the weights of the forward action of a listener's
//! default action or of one listener rule, through ELBv2.
//!
//! A write replaces the whole action list (that is what `ModifyListener` and
//! `ModifyRule` take), so it is built from the list just read: every other
//! action stays as it was (authentication before the forward, its order),
//! and in the forward action only the weights of the rollout's two target
//! groups change (stickiness and target groups the rollout does not own are
//! kept). Nothing is written when the load balancer already holds the
//! weights, and every write is read back.
//!
//! Two refusals keep rolloutd from fighting anyone: a forward action in
//! which target groups the rollout does not name carry traffic is never
//! written (fatal, naming them: no write could reach the rollout's split
//! without changing them), and a write whose fresh read differs from what
//! the decision saw is not made (someone else wrote in between; the next
//! reconcile records it as drift). The read-back checks that everything but
//! the two weights is what was written, so a concurrent edit is noticed.

use aws_sdk_elasticloadbalancingv2::error::SdkError;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple, TargetHealthStateEnum,
};
use aws_sdk_elasticloadbalancingv2::Client;
use rollout_core::ports::TrafficRouter;
use rollout_core::{ForwardWeights, ObservationError, Observed, TargetHealth, Weights};
use rollout_spec::RolloutSpec;
use std::sync::{Arc, Mutex};

use crate::budget::{Budget, Class};
use crate::CallObserver;
use rollout_core::Urgency;

/// The IAM service prefix of ELBv2.
pub const SERVICE: &str = "elasticloadbalancing";

/// How long a read waits for others to be made in one call with them: a
/// routine drift check a second (they come from rollouts' own timers, so a
/// second gathers many), a read before a raise 100 ms, a read-back 20 ms.
fn read_window(urgency: Urgency) -> std::time::Duration {
    std::time::Duration::from_millis(match urgency {
        Urgency::Optional | Urgency::Routine => 1_000,
        Urgency::BeforeRaise => 100,
        Urgency::ReadBack | Urgency::Rollback => 20,
    })
}

/// A write uses the action list a decision read this recently instead of
/// reading it again (it still checks that the weights are those the
/// decision saw).
const FRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// A read-back reuses a read (the write's own read-back) this recent.
const JUST_READ: std::time::Duration = std::time::Duration::from_secs(1);

/// At most this many listeners (or rules) are described in one call.
pub const ARNS_PER_READ: usize = 20;

/// The ALB traffic router.
#[derive(Clone)]
pub struct AlbRouter {
    client: Client,
    observer: CallObserver,
    budget: Arc<Budget>,
    reads: Arc<Mutex<Waiting>>,
    /// The last action list read per listener or rule, and when.
    recent: Arc<Mutex<Recent>>,
    /// Target health reads in flight, per target group: concurrent asks
    /// for the same group share one call.
    health: Arc<tokio::sync::Mutex<std::collections::HashMap<String, HealthRead>>>,
}

/// The last action list read per listener or rule, with when.
type Recent = std::collections::HashMap<String, (tokio::time::Instant, Vec<Action>)>;

type HealthRead = tokio::sync::watch::Receiver<Option<Observed<TargetHealth>>>;

/// Reads waiting to be made together: each with its place, its urgency and
/// where its answer goes.
#[derive(Default)]
struct Waiting {
    listeners: Vec<Asked>,
    rules: Vec<Asked>,
    /// Someone is gathering them (it makes the calls when its window ends).
    gathering: bool,
    /// When the gathered reads are due: the earliest of their windows.
    due: Option<tokio::time::Instant>,
}

/// One read asked for: `None` as the answer means skipped (an optional
/// read the budget could not spare).
type Answer = Result<Option<Vec<Action>>, ObservationError>;

struct Asked {
    arn: String,
    urgency: Urgency,
    tx: tokio::sync::oneshot::Sender<Answer>,
}

/// Where a rollout's forward action lives.
enum Place<'a> {
    Listener(&'a str),
    Rule(&'a str),
}

impl Place<'_> {
    fn of(spec: &RolloutSpec) -> Place<'_> {
        let alb = &spec.traffic_routing.alb;
        match &alb.rule_arn {
            Some(rule) => Place::Rule(rule.as_str()),
            None => Place::Listener(alb.listener_arn.as_str()),
        }
    }

    fn arn(&self) -> &str {
        match self {
            Place::Listener(a) | Place::Rule(a) => a,
        }
    }
}

impl AlbRouter {
    /// A router on this client; every call is reported to `observer` and
    /// paid for from `budget`.
    pub fn new(client: Client, observer: CallObserver, budget: Arc<Budget>) -> AlbRouter {
        AlbRouter {
            client,
            observer,
            budget,
            reads: Arc::default(),
            recent: Arc::default(),
            health: Arc::default(),
        }
    }

    fn record<T, E>(
        &self,
        class: Class,
        operation: &str,
        resource: &str,
        result: Result<T, SdkError<E, aws_sdk_elasticloadbalancingv2::config::http::HttpResponse>>,
    ) -> Result<T, ObservationError>
    where
        E: aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata
            + std::error::Error
            + 'static,
    {
        crate::record(
            &self.observer,
            Some((&self.budget, class)),
            SERVICE,
            operation,
            resource,
            result,
        )
    }

    /// The action list that holds the forward action, read at `urgency`
    /// together with the other reads asked within [`READ_WINDOW`]; `None`
    /// when an optional read was skipped.
    async fn actions(
        &self,
        place: &Place<'_>,
        urgency: Urgency,
    ) -> Result<Option<Vec<Action>>, ObservationError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let asked = Asked {
            arn: place.arn().to_string(),
            urgency,
            tx,
        };
        let gather = {
            let mut w = self.reads.lock().map_err(|_| poisoned())?;
            match place {
                Place::Listener(_) => w.listeners.push(asked),
                Place::Rule(_) => w.rules.push(asked),
            }
            let mine = tokio::time::Instant::now() + read_window(urgency);
            w.due = Some(w.due.map_or(mine, |d| d.min(mine)));
            !std::mem::replace(&mut w.gathering, true)
        };
        if gather {
            // Until the earliest window ends (a more urgent read arriving
            // meanwhile brings it forward).
            loop {
                let due = self
                    .reads
                    .lock()
                    .map_err(|_| poisoned())?
                    .due
                    .unwrap_or_else(tokio::time::Instant::now);
                if tokio::time::Instant::now() >= due {
                    break;
                }
                tokio::time::sleep(
                    due.saturating_duration_since(tokio::time::Instant::now())
                        .min(std::time::Duration::from_millis(20)),
                )
                .await;
            }
            let (listeners, rules) = {
                let mut w = self.reads.lock().map_err(|_| poisoned())?;
                w.gathering = false;
                w.due = None;
                (
                    std::mem::take(&mut w.listeners),
                    std::mem::take(&mut w.rules),
                )
            };
            for chunk in chunks(listeners) {
                self.describe(true, chunk).await;
            }
            for chunk in chunks(rules) {
                self.describe(false, chunk).await;
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(ObservationError {
                fatal: false,
                message: format!("the read of {} was cancelled", place.arn()),
            })
        })
    }

    /// One `DescribeListeners` (or `DescribeRules`) call for up to
    /// [`ARNS_PER_READ`] places, paid at the most urgent of their urgencies;
    /// answers each. When the call says one of them does not exist, each is
    /// read alone to find which.
    async fn describe(&self, listeners: bool, asked: Vec<Asked>) {
        let urgency = asked.iter().map(|a| a.urgency).max().unwrap_or_default();
        if !self.budget.acquire(Class::ElbRead, urgency).await {
            for a in asked {
                let _ = a.tx.send(Ok(None));
            }
            return;
        }
        let mut arns: Vec<String> = asked.iter().map(|a| a.arn.clone()).collect();
        arns.dedup();
        let resource = arns.join(", ");
        let found: Result<Vec<(String, Vec<Action>)>, ObservationError> = if listeners {
            let out = self
                .client
                .describe_listeners()
                .set_listener_arns(Some(arns.clone()))
                .send()
                .await;
            self.record(Class::ElbRead, "DescribeListeners", &resource, out)
                .map(|o| {
                    o.listeners()
                        .iter()
                        .map(|l| {
                            (
                                l.listener_arn().unwrap_or_default().to_string(),
                                l.default_actions().to_vec(),
                            )
                        })
                        .collect()
                })
        } else {
            let out = self
                .client
                .describe_rules()
                .set_rule_arns(Some(arns.clone()))
                .send()
                .await;
            self.record(Class::ElbRead, "DescribeRules", &resource, out)
                .map(|o| {
                    o.rules()
                        .iter()
                        .map(|r| {
                            (
                                r.rule_arn().unwrap_or_default().to_string(),
                                r.actions().to_vec(),
                            )
                        })
                        .collect()
                })
        };
        match found {
            Err(e) if e.fatal && arns.len() > 1 => {
                // One of them is missing (or denied): each on its own.
                for a in asked {
                    Box::pin(self.describe(listeners, vec![a])).await;
                }
            }
            Err(e) => {
                for a in asked {
                    let _ = a.tx.send(Err(e.clone()));
                }
            }
            Ok(found) => {
                if let Ok(mut recent) = self.recent.lock() {
                    let now = tokio::time::Instant::now();
                    recent.retain(|_, (at, _)| now.saturating_duration_since(*at) < FRESH);
                    for (arn, actions) in &found {
                        recent.insert(arn.clone(), (now, actions.clone()));
                    }
                }
                let (what, op) = if listeners {
                    ("listener", "DescribeListeners")
                } else {
                    ("listener rule", "DescribeRules")
                };
                for a in asked {
                    let answer = found
                        .iter()
                        .find(|(arn, _)| *arn == a.arn)
                        .map(|(_, actions)| Some(actions.clone()))
                        .ok_or_else(|| ObservationError {
                            fatal: true,
                            message: format!("{SERVICE}:{op}: {what} {} does not exist", a.arn),
                        });
                    let _ = a.tx.send(answer);
                }
            }
        }
    }

    /// The action list, read for a decision that needs it.
    async fn actions_needed(
        &self,
        place: &Place<'_>,
        urgency: Urgency,
    ) -> Result<Vec<Action>, ObservationError> {
        let urgency = urgency.max(Urgency::Routine);
        self.actions(place, urgency)
            .await?
            .ok_or_else(|| ObservationError {
                fatal: false,
                message: format!("the read of {} was skipped", place.arn()),
            })
    }

    async fn write(
        &self,
        place: &Place<'_>,
        actions: Vec<Action>,
        urgency: Urgency,
    ) -> Result<(), ObservationError> {
        self.budget.acquire(Class::ElbWrite, urgency).await;
        match place {
            Place::Listener(arn) => {
                let out = self
                    .client
                    .modify_listener()
                    .listener_arn(*arn)
                    .set_default_actions(Some(actions))
                    .send()
                    .await;
                self.record(Class::ElbWrite, "ModifyListener", arn, out)
                    .map(|_| ())
            }
            Place::Rule(arn) => {
                let out = self
                    .client
                    .modify_rule()
                    .rule_arn(*arn)
                    .set_actions(Some(actions))
                    .send()
                    .await;
                self.record(Class::ElbWrite, "ModifyRule", arn, out)
                    .map(|_| ())
            }
        }
    }
}

/// Reads in calls of at most [`ARNS_PER_READ`] places, the most urgent
/// first.
fn chunks(mut asked: Vec<Asked>) -> Vec<Vec<Asked>> {
    asked.sort_by_key(|a| std::cmp::Reverse(a.urgency));
    let mut out: Vec<Vec<Asked>> = Vec::new();
    for a in asked {
        match out.last_mut() {
            Some(last) if last.len() < ARNS_PER_READ => last.push(a),
            _ => out.push(vec![a]),
        }
    }
    out
}

fn poisoned() -> ObservationError {
    ObservationError {
        fatal: false,
        message: "the ELBv2 read queue's lock is poisoned".into(),
    }
}

fn fatal(message: String) -> ObservationError {
    ObservationError {
        fatal: true,
        message,
    }
}

/// The forward action of a list (an ALB list has at most one).
fn forward_action(actions: &[Action]) -> Option<usize> {
    actions
        .iter()
        .position(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
}

/// The target groups and weights of a forward action.
fn tuples(action: &Action) -> Vec<(String, u32)> {
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
fn refuse_foreign(
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
fn same_but_weights(a: &[Action], b: &[Action]) -> bool {
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
fn holds(w: &ForwardWeights, weights: Weights) -> bool {
    w.stable == u32::from(weights.stable) && w.canary == u32::from(weights.canary) && w.other == 0
}

impl TrafficRouter for AlbRouter {
    async fn forward_weights(
        &self,
        spec: &RolloutSpec,
        urgency: Urgency,
    ) -> Observed<ForwardWeights> {
        let place = Place::of(spec);
        let read = async {
            // Seeing a write applied: the read-back the write itself made
            // moments ago is that read (no second call for it).
            let just_read = (urgency >= Urgency::ReadBack)
                .then(|| {
                    self.recent.lock().ok().and_then(|r| {
                        r.get(place.arn())
                            .filter(|(at, _)| at.elapsed() < JUST_READ)
                            .map(|(_, a)| a.clone())
                    })
                })
                .flatten();
            let actions = match just_read {
                Some(a) => a,
                None => match self.actions(&place, urgency).await? {
                    Some(a) => a,
                    None => return Ok(None),
                },
            };
            read_forward(
                &actions,
                spec.stable.target_group_arn.as_str(),
                spec.canary.target_group_arn.as_str(),
                place.arn(),
            )
            .map(Some)
        };
        match read.await {
            Ok(Some(w)) => Observed::Ok(w),
            Ok(None) => Observed::Missing,
            Err(e) => Observed::Err(e),
        }
    }

    async fn set_weights(
        &self,
        spec: &RolloutSpec,
        weights: Weights,
        seen: ForwardWeights,
    ) -> Result<(), ObservationError> {
        let place = Place::of(spec);
        let (stable, canary) = (
            spec.stable.target_group_arn.as_str(),
            spec.canary.target_group_arn.as_str(),
        );
        // Returning traffic to stable goes before everything else in the
        // API budget; a raise's write and read-back before routine reads.
        let lowering = u64::from(weights.canary) * u64::from(seen.stable.max(1))
            < u64::from(seen.canary) * u64::from(weights.stable.max(1))
            || weights.canary == 0;
        let urgency = if lowering {
            Urgency::Rollback
        } else {
            Urgency::ReadBack
        };
        // The list the decision just read, when it is fresh; else read it.
        let cached = self.recent.lock().ok().and_then(|r| {
            r.get(place.arn())
                .filter(|(at, _)| at.elapsed() < FRESH)
                .map(|(_, a)| a.clone())
        });
        let actions = match cached {
            Some(a) => a,
            None => self.actions_needed(&place, urgency).await?,
        };
        let now = read_forward(&actions, stable, canary, place.arn())?;
        if holds(&now, weights) {
            return Ok(());
        }
        refuse_foreign(&actions, stable, canary, place.arn())?;
        now.may_write(&seen, place.arn())?;
        let new = with_weights(&actions, stable, canary, weights, place.arn())?;
        self.write(&place, new.clone(), urgency).await?;
        let read = self.actions_needed(&place, urgency).await?;
        let back = read_forward(&read, stable, canary, place.arn())?;
        if !same_but_weights(&read, &new) {
            return Err(ObservationError {
                fatal: false,
                message: format!(
                    "{} was changed by someone else while rolloutd wrote it (its actions differ from those written beyond the two weights)",
                    place.arn()
                ),
            });
        }
        if back.matches(weights) {
            Ok(())
        } else {
            Err(ObservationError {
                fatal: false,
                message: format!(
                    "{} reads back stable {} / canary {} / other {} after setting {}/{}",
                    place.arn(),
                    back.stable,
                    back.canary,
                    back.other,
                    weights.stable,
                    weights.canary
                ),
            })
        }
    }

    async fn canary_health(&self, spec: &RolloutSpec) -> Observed<TargetHealth> {
        let arn = spec.canary.target_group_arn.as_str();
        // Rollouts that share a canary target group and ask at the same
        // time share one call.
        let (mut rx, leader) = {
            let mut inflight = self.health.lock().await;
            match inflight.get(arn) {
                Some(rx) => (rx.clone(), None),
                None => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    inflight.insert(arn.to_string(), rx.clone());
                    (rx, Some(tx))
                }
            }
        };
        let Some(tx) = leader else {
            return match rx.wait_for(Option::is_some).await {
                Ok(v) => v.clone().unwrap_or(Observed::Missing),
                Err(_) => Observed::Missing,
            };
        };
        let answer = self.read_health(arn).await;
        self.health.lock().await.remove(arn);
        let _ = tx.send(Some(answer.clone()));
        answer
    }
}

impl AlbRouter {
    async fn read_health(&self, arn: &str) -> Observed<TargetHealth> {
        self.budget
            .acquire(Class::ElbRead, Urgency::BeforeRaise)
            .await;
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await;
        match self.record(Class::ElbRead, "DescribeTargetHealth", arn, out) {
            Ok(out) => {
                let all = out.target_health_descriptions();
                let healthy = all
                    .iter()
                    .filter(|d| {
                        d.target_health().and_then(|h| h.state())
                            == Some(&TargetHealthStateEnum::Healthy)
                    })
                    .count();
                Observed::Ok(TargetHealth {
                    healthy: u32::try_from(healthy).unwrap_or(u32::MAX),
                    total: u32::try_from(all.len()).unwrap_or(u32::MAX),
                })
            }
            Err(e) => Observed::Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_elasticloadbalancingv2::types::{
        AuthenticateOidcActionConfig, TargetGroupStickinessConfig,
    };

    const BLUE: &str =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue/0e598e910d464b87";
    const GREEN: &str =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green/ebdac99d0d139075";
    const OTHER: &str =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/mirror/aaaaaaaaaaaaaaaa";

    fn tg(arn: &str, w: i32) -> TargetGroupTuple {
        TargetGroupTuple::builder()
            .target_group_arn(arn)
            .weight(w)
            .build()
    }

    fn forward(groups: Vec<TargetGroupTuple>, order: i32) -> Action {
        Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .order(order)
            .forward_config(
                ForwardActionConfig::builder()
                    .set_target_groups(Some(groups))
                    .target_group_stickiness_config(
                        TargetGroupStickinessConfig::builder()
                            .enabled(true)
                            .duration_seconds(300)
                            .build(),
                    )
                    .build(),
            )
            .build()
    }

    fn auth() -> Action {
        Action::builder()
            .r#type(ActionTypeEnum::AuthenticateOidc)
            .order(1)
            .authenticate_oidc_config(
                AuthenticateOidcActionConfig::builder()
                    .issuer("https://idp.example.com")
                    .authorization_endpoint("https://idp.example.com/auth")
                    .token_endpoint("https://idp.example.com/token")
                    .user_info_endpoint("https://idp.example.com/user")
                    .client_id("rolloutd")
                    .build(),
            )
            .build()
    }

    #[test]
    fn reads_the_forward_weights() {
        let actions = vec![
            auth(),
            forward(vec![tg(BLUE, 95), tg(GREEN, 5), tg(OTHER, 0)], 2),
        ];
        let w = read_forward(&actions, BLUE, GREEN, "l").expect("weights");
        assert_eq!(
            w,
            ForwardWeights {
                stable: 95,
                canary: 5,
                other: 0
            }
        );
        // A plain forward to one target group.
        let single = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(BLUE)
            .build();
        let w = read_forward(&[single], BLUE, GREEN, "l").expect("weights");
        assert!(w.stable_carries_all());
        let err = read_forward(&[auth()], BLUE, GREEN, "listener X").expect_err("no forward");
        assert!(err.fatal && err.message.contains("listener X has no forward action"));
    }

    #[test]
    fn a_write_keeps_everything_else() {
        let actions = vec![auth(), forward(vec![tg(OTHER, 0), tg(BLUE, 100)], 2)];
        let new = with_weights(&actions, BLUE, GREEN, Weights::for_canary(25), "l").expect("new");
        assert_eq!(new.len(), 2);
        assert_eq!(
            new[0], actions[0],
            "the action before the forward is untouched"
        );
        assert_eq!(new[1].order(), Some(2));
        let fc = new[1].forward_config().expect("forward config");
        let groups: Vec<(&str, Option<i32>)> = fc
            .target_groups()
            .iter()
            .map(|t| (t.target_group_arn().unwrap_or(""), t.weight()))
            .collect();
        assert_eq!(
            groups,
            vec![(OTHER, Some(0)), (BLUE, Some(75)), (GREEN, Some(25))],
            "foreign target groups keep their place and weight; the canary is added"
        );
        let sticky = fc
            .target_group_stickiness_config()
            .expect("stickiness kept");
        assert_eq!(sticky.enabled(), Some(true));
        assert_eq!(sticky.duration_seconds(), Some(300));
        let w = read_forward(&new, BLUE, GREEN, "l").expect("weights");
        assert!(w.matches(Weights::for_canary(25)));
        assert!(holds(&w, Weights::for_canary(25)));
        assert!(!holds(&w, Weights::for_canary(50)));
    }
}
