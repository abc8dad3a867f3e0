//! Properties every judge keeps, over random histories:
//! - swapping the arms of a regression (so the canary is the better arm)
//!   never fails the canary;
//! - on identical arms, scaling every count by a constant does not change
//!   the verdict;
//! - no input (zeros, NaN, infinities, missing datapoints) panics.

use proptest::prelude::*;
use rollout_analysis::{judge, ArmSample, CustomValue, IntervalMetrics, Verdict};
use rollout_spec::{
    AlbAnalysis, AnalysisTemplateSpec, CustomMetric, Duration, ErrorRateCheck, JudgeKind,
    LatencyCheck, LatencyStatistic, MetricStatistic, Percent,
};

fn spec(kind: JudgeKind, stat: LatencyStatistic) -> AnalysisTemplateSpec {
    AnalysisTemplateSpec {
        alb: AlbAnalysis {
            period: Duration::from_secs(60),
            delay: Duration::from_secs(60),
            error_rate: Some(ErrorRateCheck {
                max_increase: Percent::new(50.0),
                max_rate: None,
                min_improvement: None,
            }),
            latency: Some(LatencyCheck {
                statistic: stat,
                max_increase: Percent::new(10.0),
                max: None,
                min_improvement: None,
            }),
            min_requests: 50,
        },
        metrics: Vec::new(),
        failure_limit: 0,
        inconclusive_limit: 5,
        consecutive_error_limit: 4,
        judge: kind,
        alpha: Percent::new(1.0).expect("1%"),
    }
}

fn judges() -> impl Strategy<Value = JudgeKind> {
    prop_oneof![
        Just(JudgeKind::Sequential),
        Just(JudgeKind::Threshold),
        Just(JudgeKind::MannWhitney)
    ]
}

fn stat() -> impl Strategy<Value = LatencyStatistic> {
    prop_oneof![
        Just(LatencyStatistic::Average),
        Just(LatencyStatistic::Percentile(99.0))
    ]
}

/// One interval of a regression: stable's numbers, and the canary's worse
/// ones (error rate × r ≥ 1, latency × q ≥ 1).
#[derive(Debug, Clone)]
struct Interval {
    ns: f64,
    nc: f64,
    rate: f64,
    latency: f64,
    r: f64,
    q: f64,
}

fn interval() -> impl Strategy<Value = Interval> {
    (
        50.0f64..100_000.0,
        50.0f64..20_000.0,
        0.0f64..0.05,
        0.001f64..2.0,
        1.0f64..30.0,
        1.0f64..3.0,
    )
        .prop_map(|(ns, nc, rate, latency, r, q)| Interval {
            ns,
            nc,
            rate,
            latency,
            r,
            q,
        })
}

fn arm(n: f64, rate: f64, latency: f64) -> ArmSample {
    ArmSample {
        requests: Some(n),
        errors: Some((n * rate).min(n)),
        latency: Some(latency),
        latency_cv: Some(1.0),
    }
}

fn regression(i: &Interval) -> IntervalMetrics {
    IntervalMetrics {
        stable: arm(i.ns, i.rate, i.latency),
        canary: arm(i.nc, (i.rate * i.r).min(1.0), i.latency * i.q),
        custom: Vec::new(),
        merged: 0,
    }
}

fn swapped(w: &IntervalMetrics) -> IntervalMetrics {
    IntervalMetrics {
        stable: w.canary,
        canary: w.stable,
        custom: Vec::new(),
        merged: 0,
    }
}

fn any_f64() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        Just(None),
        Just(Some(0.0)),
        Just(Some(f64::NAN)),
        Just(Some(f64::INFINITY)),
        Just(Some(-1.0)),
        (0.0f64..1e7).prop_map(Some),
    ]
}

fn any_arm() -> impl Strategy<Value = ArmSample> {
    (any_f64(), any_f64(), any_f64(), any_f64()).prop_map(
        |(requests, errors, latency, latency_cv)| ArmSample {
            requests,
            errors,
            latency,
            latency_cv,
        },
    )
}

/// A custom metric: (perRequest, missingAsZero, relative limit, absolute limit).
fn custom_metric(
    (per_request, missing_as_zero, relative, absolute): (bool, bool, bool, bool),
) -> CustomMetric {
    CustomMetric {
        name: "declines".parse().expect("a name"),
        namespace: "Shop/Payments".into(),
        metric_name: "Declines".into(),
        dimensions: [("TargetGroup".to_string(), "${targetGroup}".to_string())].into(),
        statistic: MetricStatistic::Average,
        period: None,
        per_request,
        missing_as_zero,
        max_increase: (relative || !absolute).then(|| Percent::new(20.0).expect("20%")),
        max: absolute.then_some(100.0),
        min_improvement: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// A custom metric whose canary value is at most stable's (and under
    /// the ceiling) never fails, whatever the traffic split.
    #[test]
    fn a_custom_metric_no_worse_than_stable_never_fails(
        kind in judges(),
        shape in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        stable in 0.0f64..100.0,
        ratio in 0.0f64..=1.0,
        requests in 50.0f64..1e6,
    ) {
        let mut spec = spec(kind, LatencyStatistic::Average);
        spec.alb.error_rate = None;
        spec.alb.latency = None;
        spec.metrics.push(custom_metric(shape));
        let w = IntervalMetrics {
            stable: ArmSample { requests: Some(requests), ..ArmSample::default() },
            canary: ArmSample { requests: Some(requests), ..ArmSample::default() },
            custom: vec![CustomValue { name: "declines".into(), stable: Some(stable), canary: Some(stable * ratio) }],
            merged: 0,
        };
        let v = judge(&spec, &[w]);
        prop_assert_eq!(v.verdict, Verdict::Pass, "{}", v.summary());
    }

    #[test]
    fn a_better_canary_never_fails(kind in judges(), st in stat(), intervals in proptest::collection::vec(interval(), 1..40)) {
        let spec = spec(kind, st);
        let history: Vec<IntervalMetrics> = intervals.iter().map(regression).collect();
        let better: Vec<IntervalMetrics> = history.iter().map(swapped).collect();
        for end in 1..=better.len() {
            let v = judge(&spec, &better[..end]);
            prop_assert_ne!(v.verdict, Verdict::Fail, "{}", v.summary());
        }
    }

    #[test]
    fn scaling_counts_keeps_the_verdict_on_identical_arms(
        kind in judges(),
        st in stat(),
        intervals in proptest::collection::vec(interval(), 1..30),
        k in 1.0f64..100.0,
    ) {
        let spec = spec(kind, st);
        let same = |i: &Interval, k: f64| IntervalMetrics {
            stable: arm(i.ns * k, i.rate, i.latency),
            canary: arm(i.nc * k, i.rate, i.latency),
            custom: Vec::new(),
            merged: 0,
        };
        let base: Vec<IntervalMetrics> = intervals.iter().map(|i| same(i, 1.0)).collect();
        let scaled: Vec<IntervalMetrics> = intervals.iter().map(|i| same(i, k)).collect();
        let (a, b) = (judge(&spec, &base), judge(&spec, &scaled));
        prop_assert_eq!(a.verdict, b.verdict, "{} / {}", a.summary(), b.summary());
        prop_assert_eq!(a.verdict, Verdict::Pass);
    }

    #[test]
    fn no_input_panics(
        kind in judges(),
        st in stat(),
        arms in proptest::collection::vec((any_arm(), any_arm(), any_f64(), any_f64()), 0..20),
        shape in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
    ) {
        let mut spec = spec(kind, st);
        spec.metrics.push(custom_metric(shape));
        let history: Vec<IntervalMetrics> = arms
            .into_iter()
            .map(|(stable, canary, cs, cc)| IntervalMetrics {
                stable,
                canary,
                custom: vec![CustomValue { name: "declines".into(), stable: cs, canary: cc }],
                merged: 0,
            })
            .collect();
        let v = judge(&spec, &history);
        for m in &v.metrics {
            prop_assert!(!m.reason.is_empty());
        }
    }
}
