//! Custom CloudWatch metrics. Higher values are worse.
//!
//! - A **count per request** (`Sum` or `SampleCount` with `perRequest` and
//!   `maxIncrease`) is a rate like the 5xx rate, and is judged the same way:
//!   by the template's judge (anytime-valid sequential test, Mann-Whitney or
//!   threshold), with its share of `alpha`. Small counts at a small canary
//!   weight are noise, and a plain threshold would roll back good canaries.
//! - Any other custom metric carries no distribution (only the statistic
//!   CloudWatch returns), so it is compared by thresholds, interval by
//!   interval: the canary fails when its value is above stable's ×
//!   (1 + maxIncrease), or above `max`; `failureLimit` absorbs a noisy
//!   interval.
//! - An absolute `max` is always a threshold on the interval's value.
//!
//! Data rules: a missing datapoint is no data (inconclusive), unless the
//! metric says `missingAsZero`. With `perRequest`, each arm's value is
//! divided by its `RequestCount` over the same interval, and fewer than
//! `minRequests` on an arm that is compared is inconclusive, as for the
//! built-in checks.

use rollout_spec::{AlbAnalysis, AnalysisTemplateSpec, CustomMetric, ErrorRateCheck};

use crate::{ArmSample, IntervalMetrics, MetricVerdict, Verdict};

/// A value for a reason line: at most four significant digits.
fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// One arm's comparable value, or why there is none.
fn value(
    m: &CustomMetric,
    raw: Option<f64>,
    requests: Option<f64>,
    min_requests: u64,
    arm: &str,
) -> Result<f64, String> {
    let raw = match raw {
        Some(v) if v.is_finite() => v,
        Some(_) => return Err(format!("the {arm} value is not a number")),
        None if m.missing_as_zero => 0.0,
        None => return Err(format!("no datapoint for the {arm} arm")),
    };
    if !m.per_request {
        return Ok(raw);
    }
    match requests.filter(|r| r.is_finite() && *r >= 0.0) {
        None => Err(format!(
            "no request datapoint for the {arm} arm to divide by"
        )),
        Some(r) if r < min_requests as f64 || r == 0.0 => Err(format!(
            "too few requests on the {arm} arm to judge ({r:.0}; minRequests {min_requests})"
        )),
        Some(r) => Ok(raw / r),
    }
}

/// Whether the metric is a count per request compared with stable, judged
/// as a rate by the template's judge.
pub fn is_rate(m: &CustomMetric) -> bool {
    m.per_request
        && m.statistic.grows_with_traffic()
        && (m.max_increase.is_some() || m.min_improvement.is_some())
}

/// Judges the template's custom metrics on the last interval of `history`,
/// in template order; `alpha` is each rate metric's false-rollback budget.
pub fn judge(
    spec: &AnalysisTemplateSpec,
    alpha: f64,
    history: &[IntervalMetrics],
) -> Vec<MetricVerdict> {
    let Some(current) = history.last() else {
        return Vec::new();
    };
    spec.metrics
        .iter()
        .map(|m| {
            let by_threshold = judge_one(&spec.alb, m, current);
            if !is_rate(m) || by_threshold.verdict == Verdict::Inconclusive {
                return by_threshold;
            }
            // The ceiling, alone, is a threshold on this interval.
            if m.max.is_some() {
                let ceiling = CustomMetric {
                    max_increase: None,
                    ..m.clone()
                };
                let absolute = judge_one(&spec.alb, &ceiling, current);
                if absolute.verdict == Verdict::Fail {
                    return absolute;
                }
            }
            as_rate(spec, m, alpha, history)
        })
        .collect()
}

/// A count per request judged like the 5xx rate: the counts become the
/// "errors" of each arm's requests, and the template's judge compares them.
fn as_rate(
    spec: &AnalysisTemplateSpec,
    m: &CustomMetric,
    alpha: f64,
    history: &[IntervalMetrics],
) -> MetricVerdict {
    let name = m.name.as_str();
    let rates = rate_history(m, history);
    let alb = AlbAnalysis {
        error_rate: Some(ErrorRateCheck {
            max_increase: m.max_increase,
            max_rate: None,
            min_improvement: m.min_improvement,
        }),
        latency: None,
        ..spec.alb.clone()
    };
    let verdict = crate::builtin_judge(
        spec.judge,
        &alb,
        alpha,
        crate::sequential::ERROR_RATE_CV,
        &rates,
    );
    let mut v = verdict
        .metrics
        .into_iter()
        .next()
        .unwrap_or_else(|| MetricVerdict::new(name));
    v.metric = name.to_string();
    v.reason = match v.reason.strip_prefix("error rate") {
        Some(rest) => format!("{name} per request{rest}"),
        None => format!("{name} per request: {}", v.reason),
    };
    v
}

/// A count per request's intervals as the "errors" of each arm's
/// requests (what the 5xx judge and report read).
pub fn rate_history(m: &CustomMetric, history: &[IntervalMetrics]) -> Vec<IntervalMetrics> {
    let name = m.name.as_str();
    let arm = |sample: &ArmSample, count: Option<f64>| ArmSample {
        // An interval without the count is no data, unless it reads as zero
        // (a missing count next to known requests is zero to the judges).
        requests: if count.is_some() || m.missing_as_zero {
            sample.requests
        } else {
            None
        },
        errors: count,
        latency: None,
        latency_cv: None,
    };
    history
        .iter()
        .map(|w| {
            let (s, c) = w.custom(name);
            IntervalMetrics {
                stable: arm(&w.stable, s),
                canary: arm(&w.canary, c),
                custom: Vec::new(),
                merged: w.merged,
            }
        })
        .collect()
}

fn judge_one(alb: &AlbAnalysis, m: &CustomMetric, w: &IntervalMetrics) -> MetricVerdict {
    let name = m.name.as_str();
    let (raw_s, raw_c) = w.custom(name);
    let mut v = MetricVerdict::new(name);
    if m.per_request {
        v.stable_requests = w.stable.requests;
        v.canary_requests = w.canary.requests;
    }
    let unit = if m.per_request { " per request" } else { "" };
    let canary = value(m, raw_c, w.canary.requests, alb.min_requests, "canary");
    let stable = value(m, raw_s, w.stable.requests, alb.min_requests, "stable");
    v.canary = canary.as_ref().ok().copied();
    v.stable = stable.as_ref().ok().copied();
    let c = match canary {
        Ok(c) => c,
        Err(why) => {
            v.reason = format!("{name}: {why}");
            return v;
        }
    };
    let relative = match (m.max_increase, &stable) {
        (None, _) => None,
        (Some(inc), Ok(s)) => Some((inc, s * (1.0 + inc.fraction()))),
        (Some(_), Err(why)) => {
            v.reason = format!("{name}: {why}");
            return v;
        }
    };
    let absolute = m.max;
    v.limit = match (relative.map(|r| r.1), absolute) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let stable_text = v
        .stable
        .map(|s| format!(" (stable {}{unit})", num(s)))
        .unwrap_or_default();
    if let Some(max) = absolute.filter(|max| c > *max) {
        v.verdict = Verdict::Fail;
        v.reason = format!(
            "{name}: canary {}{unit} is above the ceiling {}{stable_text}",
            num(c),
            num(max)
        );
    } else if let Some((inc, limit)) = relative.filter(|(_, limit)| c > *limit) {
        v.verdict = Verdict::Fail;
        v.reason = format!(
            "{name}: canary {}{unit} is above stable {} + {inc} = {}",
            num(c),
            num(v.stable.unwrap_or_default()),
            num(limit)
        );
    } else {
        v.verdict = Verdict::Pass;
        v.reason = format!(
            "{name}: canary {}{unit} is within {}{stable_text}",
            num(c),
            num(v.limit.unwrap_or(f64::INFINITY))
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CustomValue;
    use rollout_spec::{MetricStatistic, Percent};

    fn metric(max_increase: Option<f64>, max: Option<f64>) -> CustomMetric {
        CustomMetric {
            name: "declines".parse().expect("a name"),
            namespace: "Shop/Payments".into(),
            metric_name: "Declines".into(),
            dimensions: [("TargetGroup".to_string(), "${targetGroup}".to_string())].into(),
            statistic: MetricStatistic::Average,
            period: None,
            per_request: false,
            missing_as_zero: false,
            max_increase: max_increase.and_then(Percent::new),
            max,
            min_improvement: None,
        }
    }

    fn alb() -> AlbAnalysis {
        AlbAnalysis {
            period: rollout_spec::Duration::from_secs(60),
            delay: rollout_spec::Duration::from_secs(60),
            error_rate: None,
            latency: None,
            min_requests: 50,
        }
    }

    fn window(stable: Option<f64>, canary: Option<f64>, requests: (f64, f64)) -> IntervalMetrics {
        IntervalMetrics {
            stable: ArmSample {
                requests: Some(requests.0),
                ..ArmSample::default()
            },
            canary: ArmSample {
                requests: Some(requests.1),
                ..ArmSample::default()
            },
            custom: vec![CustomValue {
                name: "declines".into(),
                stable,
                canary,
            }],
            merged: 0,
        }
    }

    #[test]
    fn relative_limit_passes_within_and_fails_above() {
        let m = metric(Some(20.0), None);
        let pass = judge_one(&alb(), &m, &window(Some(10.0), Some(11.9), (1000.0, 100.0)));
        assert_eq!(pass.verdict, Verdict::Pass, "{}", pass.reason);
        assert_eq!(pass.limit, Some(12.0));
        let fail = judge_one(&alb(), &m, &window(Some(10.0), Some(12.1), (1000.0, 100.0)));
        assert_eq!(fail.verdict, Verdict::Fail);
        assert_eq!(
            fail.reason,
            "declines: canary 12.1 is above stable 10 + 20% = 12"
        );
        assert_eq!((fail.stable, fail.canary), (Some(10.0), Some(12.1)));
    }

    #[test]
    fn absolute_ceiling_needs_no_stable_value() {
        let m = metric(None, Some(5.0));
        let pass = judge_one(&alb(), &m, &window(None, Some(4.0), (1000.0, 100.0)));
        assert_eq!(pass.verdict, Verdict::Pass, "{}", pass.reason);
        let fail = judge_one(&alb(), &m, &window(None, Some(6.0), (1000.0, 100.0)));
        assert_eq!(fail.verdict, Verdict::Fail);
        assert!(
            fail.reason.contains("above the ceiling 5"),
            "{}",
            fail.reason
        );
    }

    #[test]
    fn missing_data_is_inconclusive_unless_it_reads_as_zero() {
        let mut m = metric(Some(20.0), None);
        let v = judge_one(&alb(), &m, &window(Some(1.0), None, (1000.0, 100.0)));
        assert_eq!(v.verdict, Verdict::Inconclusive);
        assert_eq!(v.reason, "declines: no datapoint for the canary arm");
        let v = judge_one(&alb(), &m, &window(None, Some(1.0), (1000.0, 100.0)));
        assert_eq!(v.verdict, Verdict::Inconclusive);
        m.missing_as_zero = true;
        let v = judge_one(&alb(), &m, &window(Some(1.0), None, (1000.0, 100.0)));
        assert_eq!(v.verdict, Verdict::Pass, "{}", v.reason);
        assert_eq!(v.canary, Some(0.0));
        // Zero on stable: any canary value above it fails the relative limit.
        let v = judge_one(&alb(), &m, &window(None, Some(1.0), (1000.0, 100.0)));
        assert_eq!(v.verdict, Verdict::Fail);
    }

    #[test]
    fn per_request_compares_arms_of_different_weights() {
        let mut m = metric(Some(50.0), None);
        m.statistic = MetricStatistic::Sum;
        m.per_request = true;
        // Stable: 40 declines in 9,500 requests; canary: 3 in 500. Raw sums
        // would fail nothing (3 < 40); per request 0.6% vs 0.42% is within 1.5×.
        let v = judge_one(&alb(), &m, &window(Some(40.0), Some(3.0), (9500.0, 500.0)));
        assert_eq!(v.verdict, Verdict::Pass, "{}", v.reason);
        // Canary: 10 in 500 = 2% against 0.42%: fails, though 10 < 40.
        let v = judge_one(&alb(), &m, &window(Some(40.0), Some(10.0), (9500.0, 500.0)));
        assert_eq!(v.verdict, Verdict::Fail, "{}", v.reason);
        assert!(v.reason.contains("per request"), "{}", v.reason);
        assert_eq!(v.canary_requests, Some(500.0));
        // Too little traffic to divide by is inconclusive.
        let v = judge_one(&alb(), &m, &window(Some(40.0), Some(3.0), (9500.0, 20.0)));
        assert_eq!(v.verdict, Verdict::Inconclusive);
        assert!(v.reason.contains("minRequests 50"), "{}", v.reason);
    }

    fn template(judge: rollout_spec::JudgeKind, m: CustomMetric) -> AnalysisTemplateSpec {
        AnalysisTemplateSpec {
            alb: alb(),
            metrics: vec![m],
            failure_limit: 0,
            inconclusive_limit: 5,
            consecutive_error_limit: 4,
            judge,
            alpha: Percent::new(1.0).expect("1%"),
        }
    }

    fn declines_per_request() -> CustomMetric {
        CustomMetric {
            statistic: MetricStatistic::Sum,
            per_request: true,
            missing_as_zero: true,
            ..metric(Some(100.0), None)
        }
    }

    /// `minImprovement` on a count per request: half the declines is shown
    /// to be an improvement (each arm's count wanders by half from minute
    /// to minute in the model, so it takes a while); three times as many is
    /// "not improved".
    #[test]
    fn a_count_per_request_can_be_required_to_improve() {
        use rollout_spec::JudgeKind;
        let gated = CustomMetric {
            max_increase: None,
            min_improvement: Percent::new(5.0),
            ..declines_per_request()
        };
        let spec = template(JudgeKind::Sequential, gated);
        let halved = window(Some(400.0), Some(100.0), (20_000.0, 10_000.0));
        let mut history = Vec::new();
        let shown_at = (1..=60).find(|_| {
            history.push(halved.clone());
            let v = judge(&spec, 0.01, &history);
            v[0].improvement.is_some_and(|w| w.shown())
        });
        assert!(shown_at.is_some_and(|n| n <= 40), "{shown_at:?}");
        let same = window(Some(400.0), Some(600.0), (20_000.0, 10_000.0));
        let mut history = Vec::new();
        let failed = (1..=30).find_map(|_| {
            history.push(same.clone());
            let v = judge(&spec, 0.01, &history);
            (v[0].verdict == Verdict::Fail).then(|| v[0].reason.clone())
        });
        let reason = failed.expect("an unchanged count fails the gate");
        assert!(
            reason.starts_with("declines per request not improved by 5%"),
            "{reason}"
        );
    }

    #[test]
    fn a_count_per_request_is_judged_as_a_rate_not_by_one_noisy_interval() {
        use rollout_spec::JudgeKind;
        // Stable 2% of 3,800 requests; the canary at 5%: 9 of 200 (4.5%),
        // above 2 × stable, which Poisson noise gives a 2% canary now and then.
        let w = window(Some(76.0), Some(9.0), (3800.0, 200.0));
        let threshold = judge(
            &template(JudgeKind::Threshold, declines_per_request()),
            0.01,
            std::slice::from_ref(&w),
        );
        assert_eq!(
            threshold[0].verdict,
            Verdict::Fail,
            "{}",
            threshold[0].reason
        );
        let sequential = judge(
            &template(JudgeKind::Sequential, declines_per_request()),
            0.01,
            std::slice::from_ref(&w),
        );
        assert_ne!(
            sequential[0].verdict,
            Verdict::Fail,
            "{}",
            sequential[0].reason
        );
        assert!(
            sequential[0]
                .reason
                .starts_with("declines per request: canary"),
            "{}",
            sequential[0].reason
        );
        assert_eq!(sequential[0].metric, "declines");
        // A canary at ten times stable's rate fails within a few intervals.
        let bad = window(Some(76.0), Some(40.0), (3800.0, 200.0));
        let spec = template(JudgeKind::Sequential, declines_per_request());
        let mut history = Vec::new();
        let failed_at = (1..=5).find(|_| {
            history.push(bad.clone());
            judge(&spec, 0.01, &history)[0].verdict == Verdict::Fail
        });
        assert!(failed_at.is_some_and(|n| n <= 3), "{failed_at:?}");
        // Missing counts read as zero here: a canary with none passes in time.
        let quiet = window(Some(76.0), None, (3800.0, 200.0));
        let v = judge(&spec, 0.01, &[quiet.clone(), quiet.clone(), quiet]);
        assert_ne!(v[0].verdict, Verdict::Fail, "{}", v[0].reason);
    }

    #[test]
    fn a_ceiling_on_a_rate_is_still_a_threshold() {
        use rollout_spec::JudgeKind;
        let m = CustomMetric {
            max: Some(0.1),
            ..declines_per_request()
        };
        let v = judge(
            &template(JudgeKind::Sequential, m),
            0.01,
            &[window(Some(760.0), Some(30.0), (3800.0, 200.0))],
        );
        assert_eq!(v[0].verdict, Verdict::Fail, "{}", v[0].reason);
        assert!(
            v[0].reason.contains("above the ceiling 0.1"),
            "{}",
            v[0].reason
        );
    }

    #[test]
    fn a_non_finite_value_is_never_a_pass() {
        let m = metric(Some(20.0), Some(5.0));
        for bad in [f64::NAN, f64::INFINITY] {
            let v = judge_one(&alb(), &m, &window(Some(1.0), Some(bad), (1000.0, 100.0)));
            assert_eq!(v.verdict, Verdict::Inconclusive, "{bad}");
        }
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(0.004211), "0.004211");
        assert_eq!(num(12345.678), "12346");
        assert_eq!(num(0.0), "0");
    }
}
