//! Improvement gates (`minImprovement` on a built-in check): the failure
//! test with a tolerance of `−minImprovement` fails a check once the data
//! shows, anytime-valid, that the canary is not better by that much; the
//! evidence that it is comes from `within` (`MetricVerdict::improvement`),
//! and the daemon's last raise needs it shown.

use rollout_spec::AlbAnalysis;

use crate::sequential::{error_evidence, fmt_e, latency_evidence, Interval};
use crate::{MetricVerdict, Verdict};

/// The checks with `minImprovement`: each fails when the data shows,
/// anytime-valid, that the canary is not faster (or its 5xx rate not
/// lower) than stable by that much, the failure test with a tolerance of
/// `−minImprovement`.
pub(crate) fn gates(alb: &AlbAnalysis, iv: &Interval<'_>, metrics: &mut [MetricVerdict]) {
    let bound = 1.0 / iv.alpha_check;
    for m in metrics.iter_mut() {
        let (what, min, e) = match m.metric.as_str() {
            "errorRate" => {
                let Some(c) = &alb.error_rate else { continue };
                let Some(min) = c.min_improvement else {
                    continue;
                };
                let tolerance = (Some(-min.fraction()), None);
                let (rel, _, _) =
                    error_evidence(tolerance, iv.history, iv.alpha_check, iv.error_cv);
                (
                    "error rate".to_string(),
                    min,
                    rel.map_or(0.0, |p| p.value()),
                )
            }
            "latency" => {
                let Some(c) = &alb.latency else { continue };
                let Some(min) = c.min_improvement else {
                    continue;
                };
                let tolerance = (c.statistic, Some(-min.fraction()), None);
                let (rel, _, _) = latency_evidence(tolerance, iv.history, iv.alpha_check);
                (
                    format!("latency {}", c.statistic),
                    min,
                    rel.map_or(0.0, |p| p.value()),
                )
            }
            _ => continue,
        };
        if e >= bound && m.verdict != Verdict::Fail {
            let effect = match (m.effect, m.effect_interval) {
                (Some(r), Some((lo, hi))) => format!(
                    "effect {:+.1}% [{:+.1}%, {:+.1}%]",
                    (r - 1.0) * 100.0,
                    (lo - 1.0) * 100.0,
                    (hi - 1.0) * 100.0
                ),
                (Some(r), None) => format!("effect {:+.1}%", (r - 1.0) * 100.0),
                _ => "no effect measured".into(),
            };
            m.verdict = Verdict::Fail;
            m.statistic = Some(e);
            m.reason = format!(
                "{what} not improved by {min}: {effect}; evidence {} ≥ {}",
                fmt_e(e),
                fmt_e(bound)
            );
        }
    }
}
