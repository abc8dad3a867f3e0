//! A run's history of intervals, bounded. A run may hold one weight for
//! days; its status must not grow with that. Past `cap` entries, the
//! oldest two neighbours of the same size are merged into one (an
//! exponential histogram: sizes 1, 2, 4, … from the newest back), so `cap`
//! entries cover any length of run, the most recent intervals stay whole
//! (the judge, the pacing and the failure rules read them as they came),
//! and every request and error is still counted in the run's report.
//!
//! Merging sums the counts (requests, 5xx, custom sums and counts) and
//! averages the rest weighted by requests (latency: exact for `Average`,
//! an approximation for a percentile); `Maximum` and `Minimum` keep the
//! extreme. The judge sees a merged entry as one longer interval: its noise
//! model allows each interval's rate to wander by the same amount whatever
//! its length, so old merged data weighs less, never more.

use rollout_spec::{AnalysisTemplateSpec, MetricStatistic};

use crate::{ArmSample, CustomValue, IntervalMetrics};

/// Appends `next` to `history`, merging the oldest entries while it holds
/// more than `cap` (at least 2).
pub fn push(
    spec: &AnalysisTemplateSpec,
    history: &mut Vec<IntervalMetrics>,
    next: IntervalMetrics,
    cap: usize,
) {
    history.push(next);
    let cap = cap.max(2);
    while history.len() > cap {
        // The oldest pair of equal sizes; else the oldest pair.
        let i = (0..history.len() - 1)
            .find(|&i| history[i].merged == history[i + 1].merged)
            .unwrap_or(0);
        let newer = history.remove(i + 1);
        let older = std::mem::take(&mut history[i]);
        history[i] = merge(spec, older, newer);
    }
}

/// Two neighbouring intervals as one.
pub fn merge(
    spec: &AnalysisTemplateSpec,
    a: IntervalMetrics,
    b: IntervalMetrics,
) -> IntervalMetrics {
    let custom = a
        .custom
        .iter()
        .map(|x| {
            let y = b.custom.iter().find(|y| y.name == x.name);
            let stat = spec
                .metrics
                .iter()
                .find(|m| m.name.as_str() == x.name)
                .map(|m| m.statistic);
            CustomValue {
                name: x.name.clone(),
                stable: value(
                    stat,
                    (x.stable, a.stable.requests),
                    y.and_then(|y| y.stable),
                    b.stable.requests,
                ),
                canary: value(
                    stat,
                    (x.canary, a.canary.requests),
                    y.and_then(|y| y.canary),
                    b.canary.requests,
                ),
            }
        })
        .collect();
    IntervalMetrics {
        stable: arm(&a.stable, &b.stable),
        canary: arm(&a.canary, &b.canary),
        custom,
        merged: a.merged + b.merged + 1,
    }
}

fn sum(x: Option<f64>, y: Option<f64>) -> Option<f64> {
    match (x, y) {
        (Some(x), Some(y)) => Some(x + y),
        (x, None) => x,
        (None, y) => y,
    }
}

/// A mean of `x` and `y` weighted by their requests (equal weights when
/// either is unknown).
fn mean(x: Option<f64>, wx: Option<f64>, y: Option<f64>, wy: Option<f64>) -> Option<f64> {
    match (x, y) {
        (Some(x), Some(y)) => {
            let (wx, wy) = match (wx, wy) {
                (Some(a), Some(b)) if a + b > 0.0 => (a, b),
                _ => (1.0, 1.0),
            };
            Some((x * wx + y * wy) / (wx + wy))
        }
        (x, None) => x,
        (None, y) => y,
    }
}

fn arm(a: &ArmSample, b: &ArmSample) -> ArmSample {
    ArmSample {
        requests: sum(a.requests, b.requests),
        errors: sum(a.errors, b.errors),
        latency: mean(a.latency, a.requests, b.latency, b.requests),
        latency_cv: mean(a.latency_cv, a.requests, b.latency_cv, b.requests),
    }
}

fn value(
    stat: Option<MetricStatistic>,
    (x, wx): (Option<f64>, Option<f64>),
    y: Option<f64>,
    wy: Option<f64>,
) -> Option<f64> {
    match stat {
        Some(MetricStatistic::Sum | MetricStatistic::SampleCount) => sum(x, y),
        Some(MetricStatistic::Maximum) => match (x, y) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        },
        Some(MetricStatistic::Minimum) => match (x, y) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        },
        _ => mean(x, wx, y, wy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequential::tests::{arm as sample, w};

    fn spec() -> AnalysisTemplateSpec {
        let text = "apiVersion: rolloutd.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: t}\nspec:\n  alb:\n    errorRate: {maxIncrease: 50%}\n    latency: {statistic: Average, maxIncrease: 10%}\n";
        let set = rollout_spec::load([("t.yaml", text)], &[]).expect("valid");
        set.templates[0].value.spec.clone()
    }

    /// Two days of minutes into 360 entries: bounded, every request and
    /// error counted, the newest intervals whole, sizes never growing from
    /// old to new.
    #[test]
    fn a_long_history_stays_bounded_and_keeps_its_totals() {
        let spec = spec();
        let mut h = Vec::new();
        for i in 0..2_880 {
            let e = f64::from(i % 7);
            push(
                &spec,
                &mut h,
                w(
                    sample(6_000.0, e, 0.100),
                    sample(300.0, 1.0, 0.050 + 0.0001 * f64::from(i % 3)),
                ),
                360,
            );
        }
        assert_eq!(h.len(), 360);
        let total = |f: fn(&IntervalMetrics) -> f64| h.iter().map(f).sum::<f64>();
        assert_eq!(total(|m| m.canary.requests.unwrap_or(0.0)), 300.0 * 2_880.0);
        assert_eq!(total(|m| m.canary.errors.unwrap_or(0.0)), 2_880.0);
        assert_eq!(total(|m| f64::from(m.merged + 1)), 2_880.0);
        assert!(h.windows(2).all(|p| p[0].merged >= p[1].merged));
        assert!(h.iter().rev().take(300).all(|m| m.merged == 0));
        let lat = total(|m| m.canary.latency.unwrap_or(0.0) * f64::from(m.merged + 1)) / 2_880.0;
        assert!((lat - 0.0501).abs() < 1e-6, "{lat}");
    }
}
