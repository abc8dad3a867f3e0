//! The simulator's per-minute noise: a Gamma with mean 1 and shape `k`
//! (an arm-minute's 5xx rate wanders by CV `1/√k`).

use rollout_sim::Rng;

/// Gamma(shape `k`, mean 1): Marsaglia and Tsang for `k ≥ 1`; below 1 by
/// `Gamma(k) = Gamma(k + 1)·U^(1/k)` (their method needs `k ≥ 1`, and a CV
/// above 1 is `k` below 1); exactly 1 for an infinite `k` (CV 0).
pub(crate) fn gamma_mean_one(rng: &mut Rng, k: f64) -> f64 {
    if !k.is_finite() {
        return 1.0;
    }
    if k < 1.0 {
        let boost = rng.uniform().max(f64::MIN_POSITIVE).powf(1.0 / k);
        return gamma_mean_one(rng, k + 1.0) * (k + 1.0) / k * boost;
    }
    let d = k - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal();
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.uniform();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v / k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean 1 and the CV asked for, below and above CV 1.
    #[test]
    fn the_noise_has_mean_one_and_its_cv() {
        for cv in [0.5_f64, 1.0, 2.0] {
            let mut rng = Rng::new(7);
            let k = 1.0 / (cv * cv);
            let xs: Vec<f64> = (0..200_000).map(|_| gamma_mean_one(&mut rng, k)).collect();
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
            assert!((mean - 1.0).abs() < 0.03, "cv {cv}: mean {mean}");
            assert!(
                (var.sqrt() / mean - cv).abs() < 0.05 * cv.max(1.0),
                "cv {cv}: {}",
                var.sqrt()
            );
        }
        assert_eq!(gamma_mean_one(&mut Rng::new(1), f64::INFINITY), 1.0);
    }
}
