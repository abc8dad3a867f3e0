//! The `Rollout` and `AnalysisTemplate` documents as typed values.
//!
//! The serde and schemars derives here are the single description of the
//! wire shape: the JSON Schema under `docs/schema/` is generated from them,
//! and the API serialises with them. The [`Decode`] impls beside each type
//! read the same shape from a located tree, field for field; a round-trip test
//! (`tests/spec.rs`) holds the two to the same names.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::decode::{Ctx, Decode};
use crate::tree::Node;
use crate::values::{
    Duration, LatencyStatistic, ListenerArn, MetricStatistic, Name, Percent, RuleArn,
    TargetGroupArn, Weight,
};

/// The only `apiVersion` this release reads.
pub const API_VERSION: &str = "rolloutd.dev/v1alpha1";

/// Name, labels and annotations, as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// A lowercase DNS label, unique among documents of the same kind.
    pub name: Name,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Decode for ObjectMeta {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["name", "labels", "annotations"])?;
        let name = f.req(cx, "name");
        let labels = f.or(cx, "labels", BTreeMap::new());
        let annotations = f.or(cx, "annotations", BTreeMap::new());
        Some(ObjectMeta {
            name: name?,
            labels: labels?,
            annotations: annotations?,
        })
    }
}

/// A progressive delivery of one service behind an Application Load Balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollout {
    /// Always `rolloutd.dev/v1alpha1`.
    #[schemars(extend("const" = "rolloutd.dev/v1alpha1"))]
    pub api_version: String,
    /// Always `Rollout`.
    #[schemars(extend("const" = "Rollout"))]
    pub kind: String,
    /// Name and labels.
    pub metadata: ObjectMeta,
    /// What to roll out and how.
    pub spec: RolloutSpec,
}

/// What to roll out and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    /// Opaque; applying a new value starts a new run.
    pub revision: String,
    /// Where the traffic is shifted.
    pub traffic_routing: TrafficRouting,
    /// The target group that serves production now.
    pub stable: TargetGroupRef,
    /// The target group with the new revision.
    pub canary: TargetGroupRef,
    /// How traffic moves from stable to canary.
    pub strategy: Strategy,
    /// Background analysis while a canary run progresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<RolloutAnalysis>,
    /// How traffic returns to stable after a failed analysis (default: all at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackPolicy>,
    /// A run that makes no progress for this long fails (default 30m).
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: Duration,
    /// What a run does when the load balancer holds weights rolloutd did not
    /// write (a person, Terraform, another tool): `pause` (default: hands
    /// off until resumed) or `revert`.
    #[serde(default, skip_serializing_if = "OnDrift::is_default")]
    pub on_drift: OnDrift,
}

/// What a run does about weights it did not write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnDrift {
    /// The run pauses and leaves the weights as they are until resumed.
    #[default]
    Pause,
    /// The run writes its own weights back (never changing target groups it
    /// does not name).
    Revert,
}

impl OnDrift {
    fn is_default(&self) -> bool {
        *self == OnDrift::Pause
    }

    /// `pause` or `revert`, as in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDrift::Pause => "pause",
            OnDrift::Revert => "revert",
        }
    }
}

impl Decode for OnDrift {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let (text, _) = crate::decode::scalar(node, cx, "a drift policy")?;
        match text {
            "pause" => Some(OnDrift::Pause),
            "revert" => Some(OnDrift::Revert),
            other => {
                cx.error(
                    node.pos,
                    format!("unknown drift policy `{other}`: expected pause or revert"),
                );
                None
            }
        }
    }
}

impl RolloutSpec {
    /// `canary` or `blueGreen`, as the API and metrics name the strategy.
    pub fn strategy_name(&self) -> &'static str {
        if self.strategy.blue_green.is_some() {
            "blueGreen"
        } else {
            "canary"
        }
    }

    /// Every AnalysisTemplate the rollout names, in any of its analyses.
    pub fn template_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .analysis
            .iter()
            .flat_map(|a| a.templates.iter().map(String::as_str))
            .collect();
        if let Some(bg) = &self.strategy.blue_green {
            for phase in [&bg.pre_promotion_analysis, &bg.post_promotion_analysis]
                .into_iter()
                .flatten()
            {
                names.extend(phase.templates.iter().map(String::as_str));
            }
        }
        names
    }
}

fn default_progress_deadline() -> Duration {
    Duration::from_secs(30 * 60)
}

impl Decode for Rollout {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["apiVersion", "kind", "metadata", "spec"])?;
        let api_version = f.req(cx, "apiVersion");
        let kind = f.req(cx, "kind");
        let metadata = f.req(cx, "metadata");
        let spec = f.req(cx, "spec");
        Some(Rollout {
            api_version: api_version?,
            kind: kind?,
            metadata: metadata?,
            spec: spec?,
        })
    }
}

impl Decode for RolloutSpec {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(
            node,
            &[
                "revision",
                "trafficRouting",
                "stable",
                "canary",
                "strategy",
                "analysis",
                "rollback",
                "progressDeadline",
                "onDrift",
            ],
        )?;
        let revision = f.req(cx, "revision");
        let traffic_routing = f.req(cx, "trafficRouting");
        let stable = f.req(cx, "stable");
        let canary = f.req(cx, "canary");
        let strategy = f.req(cx, "strategy");
        let analysis = f.opt(cx, "analysis");
        let rollback = f.opt(cx, "rollback");
        let progress_deadline = f.or(cx, "progressDeadline", default_progress_deadline());
        let on_drift = f.or(cx, "onDrift", OnDrift::Pause);
        Some(RolloutSpec {
            revision: revision?,
            traffic_routing: traffic_routing?,
            stable: stable?,
            canary: canary?,
            strategy: strategy?,
            analysis: analysis.ok()?,
            rollback: rollback.ok()?,
            progress_deadline: progress_deadline?,
            on_drift: on_drift?,
        })
    }
}

/// Where traffic is shifted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficRouting {
    /// An Application Load Balancer listener (or one of its rules).
    pub alb: AlbTrafficRouting,
}

impl Decode for TrafficRouting {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["alb"])?;
        Some(TrafficRouting {
            alb: f.req(cx, "alb")?,
        })
    }
}

/// The listener whose forward action is weighted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlbTrafficRouting {
    /// The listener; its default action is shifted unless `ruleArn` is given.
    pub listener_arn: ListenerArn,
    /// A rule of that listener to shift instead of the default action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_arn: Option<RuleArn>,
}

impl Decode for AlbTrafficRouting {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["listenerArn", "ruleArn"])?;
        let listener_arn = f.req(cx, "listenerArn");
        let rule_arn = f.opt(cx, "ruleArn");
        Some(AlbTrafficRouting {
            listener_arn: listener_arn?,
            rule_arn: rule_arn.ok()?,
        })
    }
}

/// A target group of the load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetGroupRef {
    /// Its ARN.
    pub target_group_arn: TargetGroupArn,
}

impl Decode for TargetGroupRef {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["targetGroupArn"])?;
        Some(TargetGroupRef {
            target_group_arn: f.req(cx, "targetGroupArn")?,
        })
    }
}

/// Exactly one of `canary` or `blueGreen`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    /// Shift traffic step by step, comparing the arms at every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,
    /// Switch all at once after a preview check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStrategy>,
}

impl Decode for Strategy {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["canary", "blueGreen"])?;
        let canary = f.opt(cx, "canary");
        let blue_green = f.opt(cx, "blueGreen");
        let (canary, blue_green) = (canary.ok()?, blue_green.ok()?);
        match (&canary, &blue_green) {
            (None, None) => {
                cx.error(f.pos(), "choose a strategy: `canary` or `blueGreen`");
                return None;
            }
            (Some(_), Some(_)) => {
                let pos = f.node("blueGreen").map_or(f.pos(), |n| n.pos);
                cx.error(pos, "give either `canary` or `blueGreen`, not both");
                return None;
            }
            _ => {}
        }
        Some(Strategy { canary, blue_green })
    }
}

/// The canary strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStrategy {
    /// The steps, in order; the last `setWeight` must be 100.
    pub steps: Vec<CanaryStep>,
}

impl Decode for CanaryStrategy {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["steps"])?;
        Some(CanaryStrategy {
            steps: f.req(cx, "steps")?,
        })
    }
}

/// One step of a canary run: `{setWeight: N}` or `{pause: {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum CanaryStep {
    /// Send this percentage of traffic (0–100) to the canary.
    SetWeight(Weight),
    /// Wait: for a duration, or (without one) until promoted.
    Pause(Pause),
}

impl Decode for CanaryStep {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["setWeight", "pause"])?;
        match (f.node("setWeight"), f.node("pause")) {
            (Some(_), Some(p)) => {
                cx.error(
                    p.pos,
                    "a step is either `setWeight` or `pause`; write them as two steps",
                );
                None
            }
            (Some(_), None) => f.req(cx, "setWeight").map(CanaryStep::SetWeight),
            (None, Some(_)) => Some(CanaryStep::Pause(f.or(cx, "pause", Pause::default())?)),
            (None, None) => {
                if !f.had_unknown() {
                    cx.error(f.pos(), "a step needs `setWeight` or `pause`");
                }
                None
            }
        }
    }
}

/// A pause; without a duration it waits for `promote`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pause {
    /// How long to wait; absent: until a person promotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

impl Decode for Pause {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["duration"])?;
        Some(Pause {
            duration: f.opt(cx, "duration").ok()?,
        })
    }
}

/// The blue-green strategy: the new target group gets no production traffic
/// until the pre-promotion analysis passes (or a person promotes), then all of
/// it at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueGreenStrategy {
    /// A test listener that forwards to the new target group during the
    /// preview, so the pre-promotion analysis has traffic to judge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_listener_arn: Option<ListenerArn>,
    /// Promote as soon as the pre-promotion analysis passes (default true);
    /// false waits for `promote`.
    #[serde(default = "default_true")]
    pub auto_promotion: bool,
    /// Judged before any production traffic moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<PhaseAnalysis>,
    /// Judged after the switch; a failure switches traffic back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<PhaseAnalysis>,
}

fn default_true() -> bool {
    true
}

impl Decode for BlueGreenStrategy {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(
            node,
            &[
                "previewListenerArn",
                "autoPromotion",
                "prePromotionAnalysis",
                "postPromotionAnalysis",
            ],
        )?;
        let preview = f.opt(cx, "previewListenerArn");
        let auto = f.or(cx, "autoPromotion", true);
        let pre = f.opt(cx, "prePromotionAnalysis");
        let post = f.opt(cx, "postPromotionAnalysis");
        Some(BlueGreenStrategy {
            preview_listener_arn: preview.ok()?,
            auto_promotion: auto?,
            pre_promotion_analysis: pre.ok()?,
            post_promotion_analysis: post.ok()?,
        })
    }
}

/// An analysis that runs for a fixed time in one phase of a blue-green run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhaseAnalysis {
    /// The AnalysisTemplates to run.
    pub templates: Vec<String>,
    /// How long the phase is judged (default 5m).
    #[serde(default = "default_phase_duration")]
    pub duration: Duration,
    /// How often the arms are compared (default 1m).
    #[serde(default = "default_interval")]
    pub interval: Duration,
}

fn default_phase_duration() -> Duration {
    Duration::from_secs(300)
}

impl Decode for PhaseAnalysis {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["templates", "duration", "interval"])?;
        let templates = f.req(cx, "templates");
        let duration = f.or(cx, "duration", default_phase_duration());
        let interval = f.or(cx, "interval", default_interval());
        Some(PhaseAnalysis {
            templates: templates?,
            duration: duration?,
            interval: interval?,
        })
    }
}

/// Background analysis of a canary run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutAnalysis {
    /// How often the arms are compared while the run progresses (default 1m).
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// The AnalysisTemplates to run.
    pub templates: Vec<String>,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

impl Decode for RolloutAnalysis {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["interval", "templates"])?;
        let interval = f.or(cx, "interval", default_interval());
        let templates = f.req(cx, "templates");
        Some(RolloutAnalysis {
            interval: interval?,
            templates: templates?,
        })
    }
}

/// A gradual return to stable after a failed analysis, for a stable fleet
/// that cannot take all the traffic at once. `abort` always returns at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackPolicy {
    /// Decreasing `setWeight`s with timed pauses between them; the canary
    /// weight ends at 0 after the last step in any case.
    pub steps: Vec<CanaryStep>,
}

impl Decode for RollbackPolicy {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["steps"])?;
        Some(RollbackPolicy {
            steps: f.req(cx, "steps")?,
        })
    }
}

/// How two arms are compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisTemplate {
    /// Always `rolloutd.dev/v1alpha1`.
    #[schemars(extend("const" = "rolloutd.dev/v1alpha1"))]
    pub api_version: String,
    /// Always `AnalysisTemplate`.
    #[schemars(extend("const" = "AnalysisTemplate"))]
    pub kind: String,
    /// Name and labels.
    pub metadata: ObjectMeta,
    /// The analysis.
    pub spec: AnalysisTemplateSpec,
}

impl Decode for AnalysisTemplate {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["apiVersion", "kind", "metadata", "spec"])?;
        let api_version = f.req(cx, "apiVersion");
        let kind = f.req(cx, "kind");
        let metadata = f.req(cx, "metadata");
        let spec = f.req(cx, "spec");
        Some(AnalysisTemplate {
            api_version: api_version?,
            kind: kind?,
            metadata: metadata?,
            spec: spec?,
        })
    }
}

/// What is measured and how much failure is tolerated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisTemplateSpec {
    /// The built-in analysis of the AWS/ApplicationELB metrics of both target
    /// groups; its `period` and `delay` also place the window of `metrics`.
    pub alb: AlbAnalysis,
    /// CloudWatch metrics of your own (any namespace), each read for both
    /// arms and compared canary vs stable, against an absolute limit, or both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<CustomMetric>,
    /// Failed intervals tolerated before rolling back (default 0).
    #[serde(default)]
    pub failure_limit: u32,
    /// Inconclusive intervals in a row tolerated before the run holds for a
    /// person (default 5).
    #[serde(default = "default_inconclusive_limit")]
    pub inconclusive_limit: u32,
    /// Metric-source errors in a row tolerated before the run fails (default 4).
    #[serde(default = "default_consecutive_error_limit")]
    pub consecutive_error_limit: u32,
    /// How the arms are compared (default `sequential`).
    #[serde(default)]
    pub judge: JudgeKind,
    /// The false-rollback rate the judge allows, across all metrics and all
    /// the times it looks (default 1%; `sequential` and `mannWhitney`).
    #[serde(default = "default_alpha")]
    pub alpha: Percent,
}

/// The canary judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JudgeKind {
    /// Anytime-valid sequential tests: may look every interval without
    /// inflating false rollbacks; within-interval comparisons cancel drift.
    #[default]
    Sequential,
    /// The canary fails an interval above stable × (1 + maxIncrease) or an
    /// absolute ceiling; simple, and noisy.
    Threshold,
    /// Kayenta-style Mann-Whitney U test over the run's intervals.
    MannWhitney,
}

impl Decode for JudgeKind {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let (text, _) = crate::decode::scalar(node, cx, "a judge")?;
        match text {
            "sequential" => Some(JudgeKind::Sequential),
            "threshold" => Some(JudgeKind::Threshold),
            "mannWhitney" => Some(JudgeKind::MannWhitney),
            other => {
                let known = ["sequential", "threshold", "mannWhitney"];
                let hint = crate::decode::closest(other, &known)
                    .map(|c| format!(", did you mean `{c}`?"))
                    .unwrap_or_else(|| ": expected sequential, threshold or mannWhitney".into());
                cx.error(node.pos, format!("unknown judge `{other}`{hint}"));
                None
            }
        }
    }
}

fn default_alpha() -> Percent {
    Percent::new(1.0).unwrap_or_default()
}

fn default_inconclusive_limit() -> u32 {
    5
}
fn default_consecutive_error_limit() -> u32 {
    4
}

impl Decode for AnalysisTemplateSpec {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(
            node,
            &[
                "alb",
                "metrics",
                "failureLimit",
                "inconclusiveLimit",
                "consecutiveErrorLimit",
                "judge",
                "alpha",
            ],
        )?;
        let alb = f.req(cx, "alb");
        let metrics = f.or(cx, "metrics", Vec::new());
        let failure_limit = f.or(cx, "failureLimit", 0);
        let inconclusive_limit = f.or(cx, "inconclusiveLimit", default_inconclusive_limit());
        let consecutive_error_limit = f.or(
            cx,
            "consecutiveErrorLimit",
            default_consecutive_error_limit(),
        );
        let judge = f.or(cx, "judge", JudgeKind::default());
        let alpha = f.or(cx, "alpha", default_alpha());
        Some(AnalysisTemplateSpec {
            alb: alb?,
            metrics: metrics?,
            failure_limit: failure_limit?,
            inconclusive_limit: inconclusive_limit?,
            consecutive_error_limit: consecutive_error_limit?,
            judge: judge?,
            alpha: alpha?,
        })
    }
}

/// The built-in ALB analysis: 5xx rate and latency, canary vs stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlbAnalysis {
    /// CloudWatch period: 1s, 5s, 10s, 30s or a multiple of 60s (default 60s).
    #[serde(default = "default_interval")]
    pub period: Duration,
    /// The analysis window ends this far behind now (default 60s).
    #[serde(default = "default_interval")]
    pub delay: Duration,
    /// `HTTPCode_Target_5XX_Count / RequestCount`, canary vs stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRateCheck>,
    /// `TargetResponseTime`, canary vs stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyCheck>,
    /// Below this many requests per arm an interval is inconclusive (default 50).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

fn default_min_requests() -> u64 {
    50
}

impl Decode for AlbAnalysis {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(
            node,
            &["period", "delay", "errorRate", "latency", "minRequests"],
        )?;
        let period = f.or(cx, "period", default_interval());
        let delay = f.or(cx, "delay", default_interval());
        let error_rate = f.opt(cx, "errorRate");
        let latency = f.opt(cx, "latency");
        let min_requests = f.or(cx, "minRequests", default_min_requests());
        Some(AlbAnalysis {
            period: period?,
            delay: delay?,
            error_rate: error_rate.ok()?,
            latency: latency.ok()?,
            min_requests: min_requests?,
        })
    }
}

/// Limits on the canary's 5xx rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorRateCheck {
    /// The increase over stable's rate that is tolerated (50% = 1.5 × stable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<Percent>,
    /// An absolute ceiling on the canary's rate (e.g. 1%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<Percent>,
}

impl Decode for ErrorRateCheck {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["maxIncrease", "maxRate"])?;
        let max_increase = f.opt(cx, "maxIncrease");
        let max_rate = f.opt(cx, "maxRate");
        Some(ErrorRateCheck {
            max_increase: max_increase.ok()?,
            max_rate: max_rate.ok()?,
        })
    }
}

/// Limits on the canary's response time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LatencyCheck {
    /// `Average` (default) or a percentile such as `p99`.
    #[serde(default)]
    pub statistic: LatencyStatistic,
    /// The increase over stable's value that is tolerated (10% = 1.1 × stable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<Percent>,
    /// An absolute ceiling on the canary's value (e.g. 500ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

impl Decode for LatencyCheck {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["statistic", "maxIncrease", "max"])?;
        let statistic = f.or(cx, "statistic", LatencyStatistic::Average);
        let max_increase = f.opt(cx, "maxIncrease");
        let max = f.opt(cx, "max");
        Some(LatencyCheck {
            statistic: statistic?,
            max_increase: max_increase.ok()?,
            max: max.ok()?,
        })
    }
}

/// A CloudWatch metric of your own, read for each arm with the dimensions
/// given (placeholders filled in per arm) and compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomMetric {
    /// What the verdicts, events and Prometheus call it (a lowercase DNS label).
    pub name: Name,
    /// The CloudWatch namespace, e.g. `Shop/Payments`.
    pub namespace: String,
    /// The CloudWatch metric name, e.g. `DeclinedPayments`.
    pub metric_name: String,
    /// The dimensions. A value may contain placeholders, filled in for each
    /// arm: `${targetGroup}` (the arm's `TargetGroup` dimension,
    /// `targetgroup/NAME/ID`), `${targetGroupName}` (`NAME`), `${arm}`
    /// (`stable` or `canary`) and `${loadBalancer}` (`app/NAME/ID`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, String>,
    /// The statistic (default `Average`).
    #[serde(default)]
    pub statistic: MetricStatistic,
    /// The CloudWatch period (default: the template's `alb.period`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Duration>,
    /// Divide each arm's value by its `RequestCount` over the same interval,
    /// so that a `Sum` of two arms of different weights can be compared
    /// (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_request: bool,
    /// Read a missing datapoint as 0 rather than as no data (default false;
    /// for counters published only when non-zero).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing_as_zero: bool,
    /// The increase over stable's value that is tolerated (20% = 1.2 × stable).
    /// Higher values are worse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<Percent>,
    /// An absolute ceiling on the canary's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// The placeholders a custom metric's dimension value may contain.
pub const DIMENSION_PLACEHOLDERS: [&str; 4] =
    ["targetGroup", "targetGroupName", "arm", "loadBalancer"];

/// The placeholders that differ between the arms.
const PER_ARM_PLACEHOLDERS: [&str; 3] = ["targetGroup", "targetGroupName", "arm"];

impl CustomMetric {
    /// The period in use.
    pub fn period_or(&self, alb: &AlbAnalysis) -> Duration {
        self.period.unwrap_or(alb.period)
    }

    /// Whether any dimension tells the arms apart.
    pub fn dimensions_differ_by_arm(&self) -> bool {
        self.dimensions.values().any(|v| {
            placeholders(v).any(|p| matches!(p, Ok(p) if PER_ARM_PLACEHOLDERS.contains(&p)))
        })
    }

    /// The dimensions for one arm: `arm` is `stable` or `canary`, `target_group`
    /// that arm's target group, `load_balancer` the `LoadBalancer` dimension.
    pub fn dimensions_for(
        &self,
        arm: &str,
        target_group: &TargetGroupArn,
        load_balancer: &str,
    ) -> Vec<(String, String)> {
        let tg_name = target_group
            .dimension
            .split('/')
            .nth(1)
            .unwrap_or_default()
            .to_string();
        self.dimensions
            .iter()
            .map(|(k, v)| {
                let filled = v
                    .replace("${targetGroup}", &target_group.dimension)
                    .replace("${targetGroupName}", &tg_name)
                    .replace("${arm}", arm)
                    .replace("${loadBalancer}", load_balancer);
                (k.clone(), filled)
            })
            .collect()
    }
}

/// The placeholders of a dimension value, in order: `Ok(name)` for each
/// `${name}`, `Err(text)` for an unclosed `${`.
pub fn placeholders(value: &str) -> impl Iterator<Item = Result<&str, &str>> {
    let mut rest = value;
    std::iter::from_fn(move || {
        let i = rest.find("${")?;
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                rest = &after[j + 1..];
                Some(Ok(&after[..j]))
            }
            None => {
                let text = &rest[i..];
                rest = "";
                Some(Err(text))
            }
        }
    })
}

impl Decode for CustomMetric {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(
            node,
            &[
                "name",
                "namespace",
                "metricName",
                "dimensions",
                "statistic",
                "period",
                "perRequest",
                "missingAsZero",
                "maxIncrease",
                "max",
            ],
        )?;
        let name = f.req(cx, "name");
        let namespace = f.req(cx, "namespace");
        let metric_name = f.req(cx, "metricName");
        let dimensions = f.or(cx, "dimensions", BTreeMap::new());
        let statistic = f.or(cx, "statistic", MetricStatistic::Average);
        let period = f.opt(cx, "period");
        let per_request = f.or(cx, "perRequest", false);
        let missing_as_zero = f.or(cx, "missingAsZero", false);
        let max_increase = f.opt(cx, "maxIncrease");
        let max = f.opt(cx, "max");
        Some(CustomMetric {
            name: name?,
            namespace: namespace?,
            metric_name: metric_name?,
            dimensions: dimensions?,
            statistic: statistic?,
            period: period.ok()?,
            per_request: per_request?,
            missing_as_zero: missing_as_zero?,
            max_increase: max_increase.ok()?,
            max: max.ok()?,
        })
    }
}
