//! The canary's share of an interval's errors when each arm's 5xx rate
//! wanders on its own: the scaled beta-binomial.
//!
//! Each arm's rate in an interval is its mean times a Gamma of shape `k`
//! and mean 1 (a CV of `1/√k`: the negative binomial's overdispersion).
//! Given the interval's `E` errors, the canary's count `x` is binomial with
//! the share `p = τG₁/(τG₁ + G₂)`, `τ` the ratio of the arms' expected
//! errors (canary requests × its rate over stable's), so `p` is a *scaled*
//! Beta(k, k). On the logit scale it is `ln τ` plus a symmetric type-IV
//! logistic: its log-concave density makes the family's likelihood ratio
//! monotone in `x` for every `k`, so a test against the largest tolerated
//! `τ` holds for every smaller one.
//!
//! `P(x) = C(E,x)·τ^(−k)/B(k,k) · ∫ exp((x+k)w − E·s(w) − 2k·s(w − ln τ)) dw`
//! with `s` the softplus; the integrand is log-concave in `w`, integrated
//! by a double-exponential rule around its mode (41 points; against a
//! fine brute-force sum, within 2e-4 in the log).

/// ln of the integral above.
fn ln_integral(x: f64, e: f64, tau: f64, k: f64) -> f64 {
    let lt = tau.ln();
    let softplus = |w: f64| if w > 30.0 { w } else { w.exp().ln_1p() };
    let sigmoid = |w: f64| 1.0 / (1.0 + (-w).exp());
    let h = |w: f64| (x + k) * w - e * softplus(w) - 2.0 * k * softplus(w - lt);
    let slope = |w: f64| x + k - e * sigmoid(w) - 2.0 * k * sigmoid(w - lt);
    let curvature = |w: f64| {
        let (s0, s1) = (sigmoid(w), sigmoid(w - lt));
        e * s0 * (1.0 - s0) + 2.0 * k * s1 * (1.0 - s1)
    };
    // The mode: the slope falls from x + k to x − E − k, so it has one
    // root; Newton's steps, kept inside the bracket by bisection.
    let (mut lo, mut hi) = (-800.0_f64, 800.0_f64);
    let mut w = ((x + 0.5) / (e - x + 0.5)).ln().clamp(-700.0, 700.0);
    for _ in 0..100 {
        let d = slope(w);
        if d > 0.0 {
            lo = w;
        } else {
            hi = w;
        }
        let mut next = w + d / curvature(w).max(1e-300);
        if !(next > lo && next < hi) {
            next = 0.5 * (lo + hi);
        }
        let done = (next - w).abs() < 1e-9;
        w = next;
        if done || hi - lo < 1e-9 {
            break;
        }
    }
    let scale = 1.0 / curvature(w).max(1e-12).sqrt();
    let h0 = h(w);
    let mut total = 0.0;
    for &(offset, weight) in NODES.iter() {
        let d = h(w + scale * offset) - h0;
        if d > -80.0 {
            total += scale * weight * d.exp();
        }
    }
    h0 + total.ln()
}

/// The double-exponential rule: at `t = i·STEP` for `|i| ≤ HALF_NODES`,
/// the offset `sinh(π/2·sinh t)` from the mode (in units of the
/// integrand's width there) and its weight `π/2·cosh t·cosh(π/2·sinh t)·STEP`.
static NODES: std::sync::LazyLock<Vec<(f64, f64)>> = std::sync::LazyLock::new(|| {
    let half = std::f64::consts::FRAC_PI_2;
    (-HALF_NODES..=HALF_NODES)
        .map(|i| {
            let t = f64::from(i) * STEP;
            let u = half * t.sinh();
            (u.sinh(), half * t.cosh() * u.cosh() * STEP)
        })
        .collect()
});
const STEP: f64 = 0.15;
const HALF_NODES: i32 = 20;

/// ln P(x of E errors are the canary's) for an expected-error ratio `tau`
/// and shape `k`, without the terms that do not depend on `tau`.
pub(crate) fn ln_scaled_beta_binomial(x: f64, e: f64, tau: f64, k: f64) -> f64 {
    -k * tau.ln() + ln_integral(x, e, tau, k)
}

/// The Gamma shape of an arm's wander by a CV of `cv` (`1/cv²`; a CV of 0
/// is taken as a very small one).
pub(crate) fn shape(cv: f64) -> f64 {
    1.0 / (cv * cv).max(1e-6)
}

/// The log likelihood ratios of the canary's `ec` of `total` errors for
/// expected-error ratios `tau0·ρ` against `tau0`, at shape `k`.
pub(crate) fn log_lrs(
    (ec, total): (f64, f64),
    tau0: f64,
    k: f64,
    rhos: impl Iterator<Item = f64>,
) -> impl Iterator<Item = f64> {
    let null = ln_scaled_beta_binomial(ec, total, tau0, k);
    rhos.map(move |rho| ln_scaled_beta_binomial(ec, total, tau0 * rho, k) - null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{ln_beta, ln_gamma};

    fn pmf(x: f64, e: f64, tau: f64, k: f64) -> f64 {
        let ln_c = ln_gamma(e + 1.0) - ln_gamma(x + 1.0) - ln_gamma(e - x + 1.0);
        (ln_c - ln_beta(k, k) + ln_scaled_beta_binomial(x, e, tau, k)).exp()
    }

    /// The probabilities sum to 1, and match values computed by brute
    /// force (a 2,000,001-point trapezoid over [−400, 400]).
    #[test]
    fn the_share_is_a_distribution() {
        for (e, tau, k) in [(20.0, 0.05, 4.0), (30.0, 0.3, 0.25), (10.0, 1.0, 1.0)] {
            let sum: f64 = (0..=e as u32).map(|x| pmf(f64::from(x), e, tau, k)).sum();
            assert!((sum - 1.0).abs() < 1e-3, "{e} {tau} {k}: {sum}");
        }
        for (x, e, tau, k, brute) in [
            (3.0, 20.0, 0.05, 4.0, -26.500_616_847_393_527),
            (20.0, 30.0, 0.05, 0.25, -20.801_460_464_792_413),
            (500.0, 3000.0, 0.1, 4.0, -1_369.006_257_419_585_2),
            (100.0, 100.0, 0.05, 0.25, -1.359_633_007_009_467_8),
        ] {
            let got = ln_integral(x, e, tau, k);
            assert!(
                (got - brute).abs() < 1e-3,
                "{x} {e} {tau} {k}: {got} vs {brute}"
            );
        }
    }

    /// With equal expected errors and k = 1 the share is uniform.
    #[test]
    fn equal_arms_at_shape_one_are_uniform() {
        for x in 0..=10 {
            assert!((pmf(f64::from(x), 10.0, 1.0, 1.0) - 1.0 / 11.0).abs() < 1e-4);
        }
    }
}
