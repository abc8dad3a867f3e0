//! The canary judges: given one interval's metrics of both arms, is the
//! canary worse than stable by more than the template tolerates?
//!
//! Pure functions, no clock and no I/O: the daemon, the simulation and
//! `rolloutctl replay` all call the same code. Every verdict carries its
//! evidence (both arms' values, the limit it was held to, the data counts) and
//! a one-line reason a person can read.
//!
//! Data rules, the same for every judge:
//! - an arm with no `RequestCount` datapoint has **no data**, never zero;
//! - with requests present, a missing 5xx datapoint means **0 errors**
//!   (ALB publishes `HTTPCode_Target_5XX_Count` only when it is non-zero);
//! - fewer than `minRequests` on either arm is **inconclusive**, never pass.
#![forbid(unsafe_code)]

pub mod compact;
pub mod custom;
pub mod effect;
mod eprocess;
mod improvement;
pub mod mann_whitney;
pub mod noise;
pub mod sequential;
mod share;
pub mod stats;
#[cfg(test)]
mod test_rng;
pub mod threshold;
pub mod within;

use rollout_spec::{AnalysisTemplateSpec, JudgeKind};
use serde::{Deserialize, Serialize};

/// Judges the last interval of `history` (the run's intervals so far, oldest
/// first, the current one last) with the template's judge. An empty history
/// is inconclusive. Each arm's 5xx rate is taken to wander by
/// [`sequential::ERROR_RATE_CV`] per interval; see [`judge_learnt`].
pub fn judge(spec: &AnalysisTemplateSpec, history: &[IntervalMetrics]) -> IntervalVerdict {
    judge_learnt(spec, None, history)
}

/// [`judge`], with the per-interval CV of each arm's 5xx rate learnt from
/// stable's intervals before the run ([`noise::error_cv`]), when it was.
pub fn judge_learnt(
    spec: &AnalysisTemplateSpec,
    error_cv: Option<f64>,
    history: &[IntervalMetrics],
) -> IntervalVerdict {
    if history.is_empty() {
        return IntervalVerdict::combine(Vec::new());
    }
    let alb = &spec.alb;
    let builtin = alb.error_rate.is_some() || alb.latency.is_some();
    // The false-rollback budget is shared by the statistical tests: the
    // built-in checks as one group, each custom count per request as one.
    let groups = usize::from(builtin) + spec.metrics.iter().filter(|m| custom::is_rate(m)).count();
    let alpha = spec.alpha.fraction().clamp(1e-9, 0.5) / groups.max(1) as f64;
    let mut metrics = if builtin {
        let error_cv = error_cv.unwrap_or(sequential::ERROR_RATE_CV);
        builtin_judge(spec.judge, alb, alpha, error_cv, history).metrics
    } else {
        Vec::new()
    };
    metrics.extend(custom::judge(spec, alpha, history));
    IntervalVerdict::combine(metrics)
}

/// A check whose evidence of being within tolerance, over the intervals
/// at the current weight alone, points outside it (at most 1).
#[derive(Debug, Clone, PartialEq)]
pub struct PointingOutside {
    /// The check.
    pub metric: String,
    /// Its within-tolerance evidence over those intervals.
    pub evidence: f64,
    /// As far as a suspicious interval points the other way (`α^½`).
    pub strongly: bool,
    /// The failure test's evidence over those intervals alone (1 when it
    /// has none).
    pub against: f64,
}

impl PointingOutside {
    /// Strongly, and the failure test over those intervals leans against
    /// the canary (its evidence above 1): the canary looks beyond its
    /// tolerance, not only near it.
    pub fn beyond(&self) -> bool {
        self.strongly && self.against > 1.0
    }
}

/// The checks whose evidence over `tail` (the intervals at the current
/// weight) points outside their tolerance: one judgement of the tail, with
/// the 5xx wander learnt before the run (`error_cv`) as the run's judge
/// takes it.
pub fn pointing_outside(
    spec: &AnalysisTemplateSpec,
    error_cv: Option<f64>,
    tail: &[IntervalMetrics],
) -> Vec<PointingOutside> {
    judge_learnt(spec, error_cv, tail)
        .metrics
        .into_iter()
        .filter_map(|m| {
            let w = m.within?;
            (w.evidence <= 1.0).then(|| PointingOutside {
                strongly: w.evidence <= 1.0 / w.threshold.sqrt(),
                against: m.statistic.unwrap_or(1.0),
                metric: m.metric,
                evidence: w.evidence,
            })
        })
        .collect()
}

/// The judge of `kind` on the built-in checks of `alb`, with a
/// false-rollback budget of `alpha`.
fn builtin_judge(
    kind: JudgeKind,
    alb: &rollout_spec::AlbAnalysis,
    alpha: f64,
    error_cv: f64,
    history: &[IntervalMetrics],
) -> IntervalVerdict {
    match (kind, history.last()) {
        (_, None) => IntervalVerdict::combine(Vec::new()),
        (JudgeKind::Threshold, Some(current)) => threshold::judge(alb, current),
        (JudgeKind::Sequential, _) => sequential::judge(alb, alpha, error_cv, history),
        (JudgeKind::MannWhitney, _) => mann_whitney::judge(alb, alpha, history),
    }
}

/// One arm's metrics over one analysis interval; `None` is "no datapoint".
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArmSample {
    /// `RequestCount`, Sum.
    pub requests: Option<f64>,
    /// `HTTPCode_Target_5XX_Count`, Sum.
    pub errors: Option<f64>,
    /// `TargetResponseTime` in seconds, with the template's statistic.
    pub latency: Option<f64>,
    /// The spread of single-request latency: its coefficient of variation,
    /// estimated from the Average and p99 (see [`stats::lognormal_cv`]).
    /// Absent: a conservative default is assumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_cv: Option<f64>,
}

impl ArmSample {
    /// Requests, when the arm has a usable count.
    fn requests(&self) -> Option<f64> {
        self.requests.filter(|r| r.is_finite() && *r >= 0.0)
    }

    /// Errors, counting a missing datapoint as zero when requests are known.
    fn errors(&self) -> Option<f64> {
        self.requests()?;
        match self.errors {
            None => Some(0.0),
            Some(e) if e.is_finite() && e >= 0.0 => Some(e),
            Some(_) => None,
        }
    }

    fn latency(&self) -> Option<f64> {
        self.latency.filter(|l| l.is_finite() && *l >= 0.0)
    }

    /// The latency CV, when usable.
    fn cv(&self) -> Option<f64> {
        self.latency_cv.filter(|c| c.is_finite() && *c > 0.0)
    }
}

/// Both arms over the same interval.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IntervalMetrics {
    /// The baseline.
    pub stable: ArmSample,
    /// The new revision.
    pub canary: ArmSample,
    /// The template's custom metrics, by name, as CloudWatch returned them
    /// (before `perRequest` and `missingAsZero` are applied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<CustomValue>,
    /// How many further intervals were merged into this one (0 for one
    /// interval as read): a long run's oldest intervals are merged in
    /// pairs so its history stays bounded ([`compact`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub merged: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl IntervalMetrics {
    /// Both arms' values of the custom metric `name` (no data when absent).
    pub fn custom(&self, name: &str) -> (Option<f64>, Option<f64>) {
        self.custom
            .iter()
            .find(|c| c.name == name)
            .map_or((None, None), |c| (c.stable, c.canary))
    }
}

/// One custom metric's statistic for both arms over one interval; `None` is
/// "no datapoint".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CustomValue {
    /// The metric's `name` in the template.
    pub name: String,
    /// Stable's value.
    pub stable: Option<f64>,
    /// Canary's value.
    pub canary: Option<f64>,
}

/// A judge's answer.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The canary is as good as stable, within tolerance.
    Pass,
    /// The canary is worse than tolerated.
    Fail,
    /// The data cannot tell (too little, missing, or broken).
    Inconclusive,
}

impl Verdict {
    /// `pass`, `fail` or `inconclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The verdict on one metric, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricVerdict {
    /// `errorRate`, `latency`, or a custom metric's name.
    pub metric: String,
    /// Stable's value (a rate for `errorRate`, seconds for `latency`, the
    /// statistic, or the statistic per request, for a custom metric).
    pub stable: Option<f64>,
    /// Canary's value.
    pub canary: Option<f64>,
    /// The largest canary value that passes, when one applies.
    pub limit: Option<f64>,
    /// Stable's request count.
    pub stable_requests: Option<f64>,
    /// Canary's request count.
    pub canary_requests: Option<f64>,
    /// The estimated effect over the run: canary ÷ stable (a rate ratio for
    /// `errorRate`, a latency ratio for `latency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<f64>,
    /// A 95% confidence interval of the effect (fixed-sample, for reading;
    /// the decision uses the anytime-valid statistic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_interval: Option<(f64, f64)>,
    /// The test statistic: the e-value (sequential) or the p-value (Mann-Whitney).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// Where the statistic decides: fail when an e-value reaches it, or a
    /// p-value falls below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The answer.
    pub verdict: Verdict,
    /// One line a person can read.
    pub reason: String,
    /// The evidence that the canary is within the check's tolerance (the
    /// sequential judge's built-in checks), for pauses that may end early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<within::Within>,
    /// With `minImprovement`: the evidence that the canary is better than
    /// stable by at least that much (the run reaches 100% only once shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub improvement: Option<within::Within>,
}

impl MetricVerdict {
    /// An inconclusive verdict on `metric` with no evidence yet.
    pub fn new(metric: &str) -> Self {
        MetricVerdict {
            metric: metric.to_string(),
            stable: None,
            canary: None,
            limit: None,
            stable_requests: None,
            canary_requests: None,
            effect: None,
            effect_interval: None,
            statistic: None,
            threshold: None,
            verdict: Verdict::Inconclusive,
            reason: String::new(),
            within: None,
            improvement: None,
        }
    }
}

/// The verdict on one interval: every metric's, and the combination (any
/// fail fails; all pass passes; otherwise inconclusive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntervalVerdict {
    /// The combined answer.
    pub verdict: Verdict,
    /// Each metric's answer.
    pub metrics: Vec<MetricVerdict>,
}

impl IntervalVerdict {
    /// Combines metric verdicts.
    pub fn combine(metrics: Vec<MetricVerdict>) -> Self {
        let verdict = if metrics.iter().any(|m| m.verdict == Verdict::Fail) {
            Verdict::Fail
        } else if !metrics.is_empty() && metrics.iter().all(|m| m.verdict == Verdict::Pass) {
            Verdict::Pass
        } else {
            Verdict::Inconclusive
        };
        IntervalVerdict { verdict, metrics }
    }

    /// Whether every check has shown the canary within its tolerance, in
    /// words, and (when not) how many more intervals the slowest check
    /// would need at the pace so far.
    pub fn within_tolerance(&self) -> WithinSummary {
        let mut shown = !self.metrics.is_empty();
        let mut needed = Some(0.0_f64);
        let mut clauses = Vec::new();
        for m in &self.metrics {
            let name = &m.metric;
            let fmt = sequential::fmt_e;
            match &m.within {
                Some(w) if w.shown() => clauses.push(format!(
                    "{name} within tolerance (evidence {} ≥ {})",
                    fmt(w.evidence),
                    fmt(w.threshold)
                )),
                Some(w) => {
                    shown = false;
                    needed = needed.zip(w.intervals_needed).map(|(a, b)| a.max(b));
                    let pace = match w.intervals_needed {
                        Some(n) => format!("about {n:.0} more interval(s) at this pace"),
                        None => "the data so far does not point inside the tolerance".into(),
                    };
                    clauses.push(format!(
                        "{name} not yet shown within tolerance (evidence {} of {}; {pace})",
                        fmt(w.evidence),
                        fmt(w.threshold)
                    ));
                }
                None => {
                    shown = false;
                    needed = None;
                    clauses.push(format!(
                        "{name} has no test of being within tolerance (only the sequential judge's errorRate and latency checks have one)"
                    ));
                }
            }
        }
        WithinSummary {
            shown,
            text: clauses.join("; "),
            intervals_needed: if shown { None } else { needed },
        }
    }

    /// The failing metrics' reasons, joined; or the first inconclusive reason.
    pub fn summary(&self) -> String {
        let pick = |v: Verdict| {
            self.metrics
                .iter()
                .filter(|m| m.verdict == v)
                .map(|m| m.reason.as_str())
                .collect::<Vec<_>>()
        };
        match self.verdict {
            Verdict::Fail => pick(Verdict::Fail).join("; "),
            Verdict::Inconclusive => pick(Verdict::Inconclusive).join("; "),
            Verdict::Pass => pick(Verdict::Pass).join("; "),
        }
    }
}

/// Whether an interval's checks have all shown the canary within its
/// tolerance ([`IntervalVerdict::within_tolerance`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WithinSummary {
    /// Every check has.
    pub shown: bool,
    /// One clause per check.
    pub text: String,
    /// When not shown: the intervals the slowest check would need at the
    /// pace so far (absent when some check gives no projection).
    pub intervals_needed: Option<f64>,
}
