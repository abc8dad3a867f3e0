//! The `threshold` judge: the seed's rule corrected to 5xx *rates*, plus
//! absolute limits. Per interval: the canary fails a metric when its value is
//! above stable's × (1 + maxIncrease), or above the absolute ceiling.
//!
//! Stateless and simple to explain, but noisy: one canary error in an
//! interval where stable had none fails the error rate. It is the baseline the
//! better judges are measured against.

use rollout_spec::{AlbAnalysis, ErrorRateCheck, LatencyCheck};

use crate::{IntervalMetrics, IntervalVerdict, MetricVerdict, Verdict};

fn pct(rate: f64) -> String {
    format!("{:.3}%", rate * 100.0)
}

fn ms(seconds: f64) -> String {
    format!("{:.1}ms", seconds * 1000.0)
}

/// Judges one interval.
pub fn judge(alb: &AlbAnalysis, w: &IntervalMetrics) -> IntervalVerdict {
    let mut metrics = Vec::new();
    let (ns, nc) = (w.stable.requests(), w.canary.requests());
    let min = alb.min_requests as f64;
    let too_little = match (ns, nc) {
        (None, _) | (_, None) => Some(format!(
            "no request datapoint for the {} arm",
            if ns.is_none() { "stable" } else { "canary" }
        )),
        (Some(s), Some(c)) if s < min || c < min => Some(format!(
            "too few requests to judge (stable {s:.0}, canary {c:.0}; minRequests {})",
            alb.min_requests
        )),
        _ => None,
    };
    let base = |metric: &str| MetricVerdict {
        stable_requests: ns,
        canary_requests: nc,
        ..MetricVerdict::new(metric)
    };
    if let Some(check) = &alb.error_rate {
        metrics.push(error_rate(
            check,
            w,
            base("errorRate"),
            too_little.as_deref(),
        ));
    }
    if let Some(check) = &alb.latency {
        metrics.push(latency(check, w, base("latency"), too_little.as_deref()));
    }
    IntervalVerdict::combine(metrics)
}

/// The 5xx rate against stable's × (1 + maxIncrease) and the ceiling.
fn error_rate(
    check: &ErrorRateCheck,
    w: &IntervalMetrics,
    mut m: MetricVerdict,
    too_little: Option<&str>,
) -> MetricVerdict {
    let (ns, nc) = (w.stable.requests(), w.canary.requests());
    let rates = match (ns, nc, w.stable.errors(), w.canary.errors()) {
        (Some(s), Some(c), Some(es), Some(ec)) if s > 0.0 && c > 0.0 => Some((es / s, ec / c, ec)),
        _ => None,
    };
    match (too_little, rates) {
        (Some(why), rates) => {
            if let Some((rs, rc, _)) = rates {
                m.stable = Some(rs);
                m.canary = Some(rc);
            }
            m.reason = format!("error rate: {why}");
        }
        (None, None) => m.reason = "error rate: the error counts are unusable".into(),
        (None, Some((rs, rc, ec))) => {
            m.stable = Some(rs);
            m.canary = Some(rc);
            let relative = check.max_increase.map(|inc| rs * (1.0 + inc.fraction()));
            let absolute = check.max_rate.map(|r| r.fraction());
            let limit = match (relative, absolute) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            m.limit = limit;
            let over_relative = relative.is_some_and(|l| rc > l && ec > 0.0);
            let over_absolute = absolute.is_some_and(|l| rc > l);
            if over_relative || over_absolute {
                m.verdict = Verdict::Fail;
                m.reason = if over_absolute {
                    format!(
                        "error rate: canary {} is above the ceiling {} (stable {})",
                        pct(rc),
                        pct(absolute.unwrap_or_default()),
                        pct(rs)
                    )
                } else {
                    format!(
                        "error rate: canary {} is above stable {} + {}",
                        pct(rc),
                        pct(rs),
                        check
                            .max_increase
                            .map(|p| p.to_string())
                            .unwrap_or_default()
                    )
                };
            } else {
                m.verdict = Verdict::Pass;
                m.reason = format!(
                    "error rate: canary {} within limit {} (stable {})",
                    pct(rc),
                    limit.map(pct).unwrap_or_else(|| "-".into()),
                    pct(rs)
                );
            }
        }
    }
    m
}

/// The latency statistic against stable's × (1 + maxIncrease) and the
/// ceiling.
fn latency(
    check: &LatencyCheck,
    w: &IntervalMetrics,
    mut m: MetricVerdict,
    too_little: Option<&str>,
) -> MetricVerdict {
    let (ls, lc) = (w.stable.latency(), w.canary.latency());
    m.stable = ls;
    m.canary = lc;
    let stat = check.statistic.to_string();
    match (too_little, ls, lc) {
        (Some(why), _, _) => m.reason = format!("latency {stat}: {why}"),
        (None, Some(ls), Some(lc)) => {
            let relative = check.max_increase.map(|inc| ls * (1.0 + inc.fraction()));
            let absolute = check.max.map(|d| d.as_millis() as f64 / 1000.0);
            let limit = match (relative, absolute) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            m.limit = limit;
            if limit.is_some_and(|l| lc > l) {
                m.verdict = Verdict::Fail;
                m.reason = format!(
                    "latency {stat}: canary {} is above the limit {} (stable {})",
                    ms(lc),
                    ms(limit.unwrap_or_default()),
                    ms(ls)
                );
            } else {
                m.verdict = Verdict::Pass;
                m.reason = format!(
                    "latency {stat}: canary {} within limit {} (stable {})",
                    ms(lc),
                    limit.map(ms).unwrap_or_else(|| "-".into()),
                    ms(ls)
                );
            }
        }
        (None, _, _) => {
            m.reason = format!(
                "latency {stat}: no datapoint for the {} arm",
                if ls.is_none() { "stable" } else { "canary" }
            )
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ArmSample;
    use rollout_spec::{
        AlbAnalysis, Duration, ErrorRateCheck, LatencyCheck, LatencyStatistic, Percent,
    };

    fn template() -> AlbAnalysis {
        AlbAnalysis {
            period: Duration::from_secs(60),
            delay: Duration::from_secs(60),
            error_rate: Some(ErrorRateCheck {
                max_increase: Percent::new(50.0),
                max_rate: None,
                min_improvement: None,
            }),
            latency: Some(LatencyCheck {
                statistic: LatencyStatistic::Average,
                max_increase: Percent::new(10.0),
                max: None,
                min_improvement: None,
            }),
            min_requests: 50,
        }
    }

    fn arm(requests: f64, errors: f64, latency: f64) -> ArmSample {
        ArmSample {
            requests: Some(requests),
            errors: Some(errors),
            latency: Some(latency),
            latency_cv: None,
        }
    }

    fn check(stable: ArmSample, canary: ArmSample) -> (Verdict, Verdict, Verdict) {
        let v = judge(
            &template(),
            &IntervalMetrics {
                stable,
                canary,
                custom: Vec::new(),
                merged: 0,
            },
        );
        (v.verdict, v.metrics[0].verdict, v.metrics[1].verdict)
    }

    #[test]
    fn rates_not_counts() {
        // 20 errors in 2000 (1%) vs 2 errors in 200 (1%): the seed's count rule
        // would call the canary better; on rates they are equal.
        let (all, er, _) = check(arm(2000.0, 20.0, 0.05), arm(200.0, 2.0, 0.05));
        assert_eq!((all, er), (Verdict::Pass, Verdict::Pass));
        // 1% vs 1.6%: above 1.5 x.
        let (all, er, _) = check(arm(2000.0, 20.0, 0.05), arm(500.0, 8.0, 0.05));
        assert_eq!((all, er), (Verdict::Fail, Verdict::Fail));
    }

    #[test]
    fn boundaries_are_inclusive_passes() {
        // Exactly 1.5 x stable's rate passes; exactly 1.1 x latency passes.
        let (_, er, lat) = check(arm(1000.0, 10.0, 0.100), arm(1000.0, 15.0, 0.110));
        assert_eq!((er, lat), (Verdict::Pass, Verdict::Pass));
        let (_, _, lat) = check(arm(1000.0, 0.0, 0.100), arm(1000.0, 0.0, 0.1101));
        assert_eq!(lat, Verdict::Fail);
    }

    #[test]
    fn too_little_traffic_is_inconclusive() {
        let (all, er, lat) = check(arm(49.0, 0.0, 0.05), arm(1000.0, 900.0, 9.0));
        assert_eq!(
            (all, er, lat),
            (
                Verdict::Inconclusive,
                Verdict::Inconclusive,
                Verdict::Inconclusive
            )
        );
    }

    #[test]
    fn missing_request_datapoint_is_no_data_not_zero() {
        let none = ArmSample::default();
        let v = judge(
            &template(),
            &IntervalMetrics {
                stable: arm(1000.0, 0.0, 0.05),
                canary: none,
                custom: Vec::new(),
                merged: 0,
            },
        );
        assert_eq!(v.verdict, Verdict::Inconclusive);
        assert!(v
            .summary()
            .contains("no request datapoint for the canary arm"));
    }

    #[test]
    fn missing_error_datapoint_with_requests_is_zero_errors() {
        let canary = ArmSample {
            requests: Some(500.0),
            errors: None,
            latency: Some(0.05),
            latency_cv: None,
        };
        let (all, er, _) = check(arm(1000.0, 1.0, 0.05), canary);
        assert_eq!((all, er), (Verdict::Pass, Verdict::Pass));
    }

    #[test]
    fn absolute_ceilings() {
        let mut t = template();
        t.error_rate = Some(ErrorRateCheck {
            max_increase: None,
            max_rate: Percent::new(1.0),
            min_improvement: None,
        });
        t.latency = Some(LatencyCheck {
            statistic: LatencyStatistic::Percentile(99.0),
            max_increase: None,
            max: Some(Duration::from_millis(500)),
            min_improvement: None,
        });
        let v = judge(
            &t,
            &IntervalMetrics {
                stable: arm(1000.0, 50.0, 0.9),
                canary: arm(1000.0, 11.0, 0.4),
                custom: Vec::new(),
                merged: 0,
            },
        );
        assert_eq!(v.metrics[0].verdict, Verdict::Fail, "1.1% > 1%");
        assert_eq!(v.metrics[1].verdict, Verdict::Pass, "400ms < 500ms");
        assert!(v.metrics[0].reason.contains("above the ceiling 1.000%"));
    }

    #[test]
    fn nan_and_negative_inputs_are_inconclusive() {
        let bad = ArmSample {
            requests: Some(f64::NAN),
            errors: Some(-1.0),
            latency: Some(f64::INFINITY),
            latency_cv: Some(f64::NAN),
        };
        let v = judge(
            &template(),
            &IntervalMetrics {
                stable: bad,
                canary: bad,
                custom: Vec::new(),
                merged: 0,
            },
        );
        assert_eq!(v.verdict, Verdict::Inconclusive);
    }
}
