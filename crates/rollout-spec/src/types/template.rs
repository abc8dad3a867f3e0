//! The `AnalysisTemplate` document: how two arms are compared.

use super::strategy::default_interval;
use super::*;

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
    /// The canary must lower the rate by at least this much (5% = at most
    /// 0.95 × stable) for the run to reach 100%: an improvement gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_improvement: Option<Percent>,
}

impl Decode for ErrorRateCheck {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["maxIncrease", "maxRate", "minImprovement"])?;
        let max_increase = f.opt(cx, "maxIncrease");
        let max_rate = f.opt(cx, "maxRate");
        let min_improvement = f.opt(cx, "minImprovement");
        Some(ErrorRateCheck {
            max_increase: max_increase.ok()?,
            max_rate: max_rate.ok()?,
            min_improvement: min_improvement.ok()?,
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
    /// The canary must be faster by at least this much (5% = at most
    /// 0.95 × stable) for the run to reach 100%: an improvement gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_improvement: Option<Percent>,
}

impl Decode for LatencyCheck {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["statistic", "maxIncrease", "max", "minImprovement"])?;
        let statistic = f.or(cx, "statistic", LatencyStatistic::Average);
        let max_increase = f.opt(cx, "maxIncrease");
        let max = f.opt(cx, "max");
        let min_improvement = f.opt(cx, "minImprovement");
        Some(LatencyCheck {
            statistic: statistic?,
            max_increase: max_increase.ok()?,
            max: max.ok()?,
            min_improvement: min_improvement.ok()?,
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
    /// For a count per request: the canary must lower it by at least this
    /// much for the run to reach 100% (an improvement gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_improvement: Option<Percent>,
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
                "minImprovement",
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
        let min_improvement = f.opt(cx, "minImprovement");
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
            min_improvement: min_improvement.ok()?,
        })
    }
}
