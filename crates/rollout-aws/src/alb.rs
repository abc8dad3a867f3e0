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
use rollout_core::sync::lock;
use rollout_core::{ForwardWeights, ObservationError, Observed, TargetHealth, Weights};
use rollout_spec::RolloutSpec;
use std::sync::{Arc, Mutex};

mod actions;

use actions::{holds, refuse_foreign, same_but_weights};
pub use actions::{read_forward, with_weights};

use crate::budget::{Budget, Class};
use crate::CallObserver;
use rollout_core::Urgency;

/// The IAM service prefix of ELBv2.
pub const SERVICE: &str = "elasticloadbalancing";

/// How long a read waits for others to be made in one call with them: a
/// routine drift check a second (they come from rollouts' own timers, so a
/// second gathers many), a read before a raise 100 ms, a raise's read
/// before its write and its read-back 500 ms (writes are spaced by the
/// write budget, 2 a second by default: the read-back of one write and the
/// read before the next go in one call), a rollback's reads 20 ms.
fn read_window(urgency: Urgency) -> std::time::Duration {
    std::time::Duration::from_millis(match urgency {
        Urgency::Optional | Urgency::Routine => 1_000,
        Urgency::BeforeRaise => 100,
        Urgency::ReadBack => 500,
        Urgency::Rollback => 20,
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
    /// A client per region: each call goes to the region its ARN names.
    client: Arc<crate::regional::Regional<Client>>,
    pub(crate) observer: CallObserver,
    pub(crate) budget: Arc<Budget>,
    reads: Arc<Mutex<Waiting>>,
    /// The last action list read per listener or rule, and when.
    recent: Arc<Mutex<Recent>>,
    /// Target health reads in flight, per target group: concurrent asks
    /// for the same group share one call.
    health: Arc<tokio::sync::Mutex<std::collections::HashMap<String, HealthRead>>>,
    /// Read the canary's health from CloudWatch's `HealthyHostCount` first
    /// (`--canary-health-source cloudwatch`); `DescribeTargetHealth` when it
    /// has no recent datapoint.
    health_from_cloudwatch: Option<crate::cloudwatch::CloudWatchSource>,
    /// Fault Injection Service clients (chaos steps), in the load
    /// balancers' regions and accounts.
    pub(crate) fis: Option<Arc<crate::regional::Regional<aws_sdk_fis::Client>>>,
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
    /// When the gathered reads are due: the earliest of their intervals.
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
    pub fn new(
        client: Client,
        accounts: crate::regional::Accounts,
        observer: CallObserver,
        budget: Arc<Budget>,
    ) -> AlbRouter {
        AlbRouter {
            client: crate::regional::elb(client, accounts),
            observer,
            budget,
            reads: Arc::default(),
            recent: Arc::default(),
            health: Arc::default(),
            health_from_cloudwatch: None,
            fis: None,
        }
    }

    /// The same router, running chaos steps' experiments with `client`
    /// (its configuration copied to each region and account, as ELBv2's).
    pub fn with_fis(
        mut self,
        client: aws_sdk_fis::Client,
        accounts: crate::regional::Accounts,
    ) -> Self {
        self.fis = Some(crate::regional::fis(client, accounts));
        self
    }

    /// The same router, reading the canary's health from CloudWatch first.
    pub fn with_cloudwatch_health(mut self, source: crate::cloudwatch::CloudWatchSource) -> Self {
        self.health_from_cloudwatch = Some(source);
        self
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
        // The scope of the (first) ARN the call names.
        let scope = crate::budget::scope_of(resource.split(", ").next().unwrap_or(""));
        crate::record(
            &self.observer,
            Some((&self.budget, class, &scope)),
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
            let mut w = lock(&self.reads);
            match place {
                Place::Listener(_) => w.listeners.push(asked),
                Place::Rule(_) => w.rules.push(asked),
            }
            let mine = tokio::time::Instant::now() + read_window(urgency);
            w.due = Some(w.due.map_or(mine, |d| d.min(mine)));
            !std::mem::replace(&mut w.gathering, true)
        };
        if gather {
            // The gathering runs as a task of its own: the reconcile that
            // started it may be cancelled meanwhile (a command interrupts a
            // reconcile waiting for AWS), and the reads of everyone else in
            // the batch must still be made.
            let router = self.clone();
            tokio::spawn(async move { router.gather().await });
        }
        rx.await.unwrap_or_else(|_| {
            Err(ObservationError {
                fatal: false,
                message: format!("the read of {} was cancelled", place.arn()),
            })
        })
    }

    /// Waits until the earliest window of the reads asked ends (a more
    /// urgent read arriving meanwhile brings it forward), then makes them.
    async fn gather(&self) {
        loop {
            let due = lock(&self.reads)
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
            let mut w = lock(&self.reads);
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

    /// One `DescribeListeners` (or `DescribeRules`) call for up to
    /// [`ARNS_PER_READ`] places, paid at the most urgent of their urgencies;
    /// answers each. When the call says one of them does not exist, each is
    /// read alone to find which.
    async fn describe(&self, listeners: bool, asked: Vec<Asked>) {
        let urgency = asked.iter().map(|a| a.urgency).max().unwrap_or_default();
        let scope = crate::budget::scope_of(asked.first().map_or("", |a| a.arn.as_str()));
        if !self
            .budget
            .acquire_in(&scope, Class::ElbRead, urgency)
            .await
        {
            for a in asked {
                let _ = a.tx.send(Ok(None));
            }
            return;
        }
        let mut arns: Vec<String> = asked.iter().map(|a| a.arn.clone()).collect();
        arns.dedup();
        let resource = arns.join(", ");
        // One account and region per call (see `chunks`).
        let client = match self.client.for_arn(arns.first().map_or("", String::as_str)) {
            Ok(c) => c,
            Err(e) => {
                for a in asked {
                    let _ = a.tx.send(Err(e.clone()));
                }
                return;
            }
        };
        let found: Result<Vec<(String, Vec<Action>)>, ObservationError> = if listeners {
            let out = client
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
            let out = client
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
            Ok(found) => self.answer(listeners, asked, &found),
        }
    }

    /// Keeps what a read found (a write reuses it for a moment) and answers
    /// each place asked: its action list, or that it does not exist.
    fn answer(&self, listeners: bool, asked: Vec<Asked>, found: &[(String, Vec<Action>)]) {
        {
            let mut recent = lock(&self.recent);
            let now = tokio::time::Instant::now();
            recent.retain(|_, (at, _)| now.saturating_duration_since(*at) < FRESH);
            for (arn, actions) in found {
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

    /// Writes the action list (its budget token already taken).
    async fn write(&self, place: &Place<'_>, actions: Vec<Action>) -> Result<(), ObservationError> {
        match place {
            Place::Listener(arn) => {
                let out = self
                    .client
                    .for_arn(arn)?
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
                    .for_arn(arn)?
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

/// Reads in calls of at most [`ARNS_PER_READ`] places of one account and
/// region (a call goes to one), the most urgent first.
fn chunks(mut asked: Vec<Asked>) -> Vec<Vec<Asked>> {
    asked.sort_by_key(|a| std::cmp::Reverse(a.urgency));
    let scope = crate::budget::scope_of;
    let mut out: Vec<Vec<Asked>> = Vec::new();
    for a in asked {
        let here = scope(&a.arn);
        match out
            .iter_mut()
            .find(|c| c.len() < ARNS_PER_READ && scope(&c[0].arn) == here)
        {
            Some(chunk) => chunk.push(a),
            None => out.push(vec![a]),
        }
    }
    out
}

fn fatal(message: String) -> ObservationError {
    ObservationError {
        fatal: true,
        message,
    }
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
                    lock(&self.recent)
                        .get(place.arn())
                        .filter(|(at, _)| at.elapsed() < JUST_READ)
                        .map(|(_, a)| a.clone())
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
        urgency: Urgency,
    ) -> Result<(), ObservationError> {
        let place = Place::of(spec);
        let (stable, canary) = (
            spec.stable.target_group_arn.as_str(),
            spec.canary.target_group_arn.as_str(),
        );
        // The write's token first: the read it is checked against is then
        // fresh however long the budget made it wait.
        self.budget
            .acquire_in(
                &crate::budget::scope_of(place.arn()),
                Class::ElbWrite,
                urgency,
            )
            .await;
        // The list the decision just read, when it is fresh; else read it.
        let cached = lock(&self.recent)
            .get(place.arn())
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, a)| a.clone());
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
        self.write(&place, new.clone()).await?;
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
        if let Some(tx) = leader {
            // A task of its own, so that a cancelled asker (a command
            // interrupts a reconcile waiting for AWS) leaves no read
            // half-made that the others wait on forever.
            let router = self.clone();
            let spec = spec.clone();
            let arn = arn.to_string();
            tokio::spawn(async move {
                let from_cloudwatch = match &router.health_from_cloudwatch {
                    Some(cw) => {
                        let now_s = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
                        cw.canary_health(&spec, now_s).await
                    }
                    None => None,
                };
                let answer = match from_cloudwatch {
                    Some(h) => Observed::Ok(h),
                    None => router.read_health(&arn).await,
                };
                router.health.lock().await.remove(&arn);
                let _ = tx.send(Some(answer));
            });
        }
        let answer = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Observed::Missing),
            Err(_) => Observed::Missing,
        };
        answer
    }
}

impl AlbRouter {
    async fn read_health(&self, arn: &str) -> Observed<TargetHealth> {
        self.budget
            .acquire_in(
                &crate::budget::scope_of(arn),
                Class::ElbRead,
                Urgency::BeforeRaise,
            )
            .await;
        let client = match self.client.for_arn(arn) {
            Ok(c) => c,
            Err(e) => return Observed::Err(e),
        };
        let out = client
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

    #[test]
    fn reads_are_gathered_per_account_and_region() {
        let asked = |arn: String| {
            let (tx, _rx) = tokio::sync::oneshot::channel();
            Asked {
                arn,
                urgency: Urgency::Routine,
                tx,
            }
        };
        let arn = |region: &str, account: &str, i: usize| {
            format!("arn:aws:elasticloadbalancing:{region}:{account}:listener/app/s{i}/1/2")
        };
        let mut all = Vec::new();
        for i in 0..25 {
            all.push(asked(arn("us-east-1", "123456789012", i)));
            all.push(asked(arn("eu-west-1", "123456789012", i)));
        }
        all.push(asked(arn("us-east-1", "210987654321", 0)));
        let got = chunks(all);
        // 25 + 25 in two regions (20 a call) and 1 in another account.
        assert_eq!(got.len(), 5);
        for c in &got {
            let first = (
                crate::regional::account_of(&c[0].arn),
                crate::regional::region_of(&c[0].arn),
            );
            assert!(c.len() <= ARNS_PER_READ);
            assert!(c.iter().all(|a| (
                crate::regional::account_of(&a.arn),
                crate::regional::region_of(&a.arn)
            ) == first));
        }
    }
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
