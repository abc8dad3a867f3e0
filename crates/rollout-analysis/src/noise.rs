//! How much stable's 5xx rate wanders from one interval to the next,
//! learnt from its own intervals before a run: the per-interval CV the
//! judge then assumes for both arms (`sequential`, `share`).
//!
//! **Model.** An interval's errors are negative binomial around its
//! requests times a rate `r`: the rate wanders by a Gamma of CV `g` (shape
//! `1/g²`) on top of the Poisson count. Real history also holds minutes
//! that are not that wander: shared incidents, one host's burst, a
//! dependency's bad minute. They are a contamination: a share `ε` of the
//! intervals comes from a much wider distribution (ten times the rate and
//! 20 more errors, shape ½), so they cannot pass for a wider wander.
//!
//! **Estimate.** The `g` of greatest profile likelihood (maximised over
//! `r` and `ε`), on a grid from 0.1 to [`CEILING`]; never below [`FLOOR`].
//! The intervals are stable's before the run: data the run's own tests
//! never see, so the estimate is fixed before the first interval is
//! judged, as a test's parameters must be. It is a plug-in, not a bound:
//! when the canary wanders more than stable did, the guarantee is only as
//! good as the margin the judge keeps (its per-interval cap, the split
//! `α`); `judge-bench` measures what that gives (`docs/BENCHMARKS.md`). An
//! upper confidence bound instead (1.35 nats below the best) cost 1 point
//! of detection at CV 0.5 and bought nothing measurable.

use crate::sequential::ln_negative_binomial;

/// The least CV the judge assumes, whatever the history says: one host's
/// burst of errors is not in the model.
pub const FLOOR: f64 = 0.3;
/// The most: beyond it the judge could barely tell anything.
pub const CEILING: f64 = 3.0;
/// Fewest intervals with requests a bound is learnt from.
pub const MIN_INTERVALS: usize = 10;
/// Contamination shares tried.
const CONTAMINATION: [f64; 4] = [0.0, 0.03, 0.1, 0.2];

/// The CVs tried, from nearly Poisson to [`CEILING`].
fn grid() -> impl Iterator<Item = f64> {
    (0..=24).map(|i| 0.1 * (CEILING / 0.1_f64).powf(f64::from(i) / 24.0))
}

/// ln L of the intervals `(requests, errors)` at rate `r`, CV `g` and
/// contamination `eps`.
fn log_likelihood(data: &[(f64, f64)], r: f64, g: f64, eps: f64) -> f64 {
    let shape = 1.0 / (g * g);
    data.iter()
        .map(|&(n, e)| {
            let mu = n * r;
            let clean = ln_negative_binomial(e, mu, shape);
            if eps == 0.0 {
                return clean;
            }
            let wide = ln_negative_binomial(e, 10.0 * mu + 20.0, 0.5);
            let (a, b) = ((1.0 - eps).ln() + clean, eps.ln() + wide);
            let m = a.max(b);
            m + ((a - m).exp() + (b - m).exp()).ln()
        })
        .sum()
}

/// max over `r` and `ε` of the log likelihood at CV `g`.
fn profile(data: &[(f64, f64)], r0: f64, g: f64) -> f64 {
    CONTAMINATION
        .iter()
        .map(|&eps| {
            // Golden-section search on ln r around the pooled rate.
            let f = |lr: f64| log_likelihood(data, lr.exp(), g, eps);
            let (mut a, mut b) = (r0.ln() - 3.0, r0.ln() + 1.0);
            let phi = 0.5 * (5.0_f64.sqrt() - 1.0);
            let (mut c, mut d) = (b - phi * (b - a), a + phi * (b - a));
            let (mut fc, mut fd) = (f(c), f(d));
            for _ in 0..30 {
                if fc > fd {
                    b = d;
                    d = c;
                    fd = fc;
                    c = b - phi * (b - a);
                    fc = f(c);
                } else {
                    a = c;
                    c = d;
                    fc = fd;
                    d = a + phi * (b - a);
                    fd = f(d);
                }
            }
            fc.max(fd)
        })
        .fold(f64::NEG_INFINITY, f64::max)
}

/// Stable's per-interval CV learnt from its intervals' `(requests,
/// errors)`, within [`FLOOR`, `CEILING`]; `None` when fewer than
/// [`MIN_INTERVALS`] had requests, or no errors at all were seen.
pub fn error_cv(intervals: &[(f64, f64)]) -> Option<f64> {
    let data: Vec<(f64, f64)> = intervals
        .iter()
        .copied()
        .filter(|(n, e)| *n > 0.0 && e.is_finite() && *e >= 0.0)
        .map(|(n, e)| (n, e.min(n)))
        .collect();
    if data.len() < MIN_INTERVALS {
        return None;
    }
    let (n, e) = data
        .iter()
        .fold((0.0, 0.0), |(a, b), (n, e)| (a + n, b + e));
    if e <= 0.0 {
        return None;
    }
    let r0 = e / n;
    let (g, _) =
        grid()
            .map(|g| (g, profile(&data, r0, g)))
            .fold((FLOOR, f64::NEG_INFINITY), |best, p| {
                if p.1 > best.1 {
                    p
                } else {
                    best
                }
            });
    Some(g.clamp(FLOOR, CEILING))
}

/// [`error_cv`] of stable's samples before the run, with how many had
/// requests (a missing 5xx datapoint with requests is zero errors).
pub fn stable_error_cv<'a>(
    stable: impl IntoIterator<Item = &'a crate::ArmSample>,
) -> (Option<f64>, usize) {
    let data: Vec<(f64, f64)> = stable
        .into_iter()
        .filter_map(|a| Some((a.requests()?, a.errors()?)))
        .filter(|(n, _)| *n > 0.0)
        .collect();
    (error_cv(&data), data.len())
}

/// What was learnt from `intervals` of stable's history before the run
/// (`error_cv` from [`stable_error_cv`]), in words: the daemon's event
/// and `rolloutctl replay` say this.
pub fn describe(error_cv: Option<f64>, intervals: usize) -> String {
    match error_cv {
        Some(cv) if cv <= FLOOR => format!(
            "stable's 5xx rate wandered by no more than {:.0}% from interval to interval over the {intervals} intervals before the run (the least the judge assumes); the judge assumes as much for both arms",
            cv * 100.0
        ),
        Some(cv) => format!(
            "stable's 5xx rate wandered by {:.0}% from interval to interval over the {intervals} intervals before the run; the judge assumes as much for both arms",
            cv * 100.0
        ),
        None => format!(
            "stable's {intervals} intervals with requests before the run were too few, or had no 5xx, to learn how much its rate wanders; the judge assumes {:.0}%",
            crate::sequential::ERROR_RATE_CV * 100.0
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Too little history, or none with errors, teaches nothing; steady
    /// counts give the floor. (Learning a world's wander, incidents and
    /// bursts included: `rollout-sim/tests/noise.rs`.)
    #[test]
    fn too_little_history_is_none() {
        assert_eq!(error_cv(&[(1000.0, 3.0); 9]), None);
        assert_eq!(error_cv(&[(1000.0, 0.0); 60]), None);
        assert_eq!(error_cv(&[(0.0, 0.0); 60]), None);
        assert_eq!(error_cv(&[(1000.0, 2.0); 60]), Some(FLOOR));
    }

    /// Counts that swing between nothing and hundreds wander a lot.
    #[test]
    fn swinging_counts_wander_a_lot() {
        let swinging: Vec<(f64, f64)> = (0..60)
            .map(|i| (10_000.0, [0.0, 2.0, 60.0, 5.0, 0.0, 110.0][i % 6]))
            .collect();
        assert!(error_cv(&swinging).is_some_and(|cv| cv > 1.0));
    }
}
