//! Small numerical helpers the judges share: the normal distribution, the
//! spread of a lognormal latency distribution, Wilson intervals.

/// The standard normal CDF, Φ(x), through [`erfc`] (absolute error below 1e-7).
pub fn normal_cdf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' `erfcc`, fractional
/// error below 1.2e-7 everywhere).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The standard normal density.
pub fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// The standard normal quantile for `p` in (0, 1) (Acklam's algorithm,
/// relative error below 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let low = 0.024_25;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

/// The coefficient of variation of single-request latency, from an arm's
/// Average and p99, assuming latency is lognormal: with σ the log-scale
/// spread, `ln(p99 / avg) = 2.326σ − σ²/2`. Ratios beyond the model's reach
/// (p99 more than ~15× the mean) are read as the widest spread it allows.
pub fn lognormal_cv(avg: f64, p99: f64) -> Option<f64> {
    if !(avg.is_finite() && p99.is_finite() && avg > 0.0 && p99 > 0.0) {
        return None;
    }
    let z = 2.326_347_874_040_841;
    let k = (p99 / avg).ln();
    let sigma = if k <= 0.0 {
        0.0
    } else if k >= z * z / 2.0 {
        z
    } else {
        // Smaller root of σ²/2 − zσ + k = 0.
        z - (z * z - 2.0 * k).sqrt()
    };
    Some(((sigma * sigma).exp() - 1.0).sqrt())
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// ln B(a, b).
pub fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// The Wilson score interval of a proportion `k / n` at 95%.
pub fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054;
    let n = n as f64;
    let p = k as f64 / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn normal_values() {
        // Reference values: Φ(1.96) = 0.9750021, Φ(-2.326348) = 0.01, Φ(0) = 0.5.
        assert!(close(normal_cdf(1.96), 0.975_002_1, 1e-6));
        assert!(close(normal_cdf(-2.326_348), 0.01, 1e-6));
        assert!(close(normal_cdf(0.0), 0.5, 1e-7));
        assert!(close(normal_quantile(0.975), 1.959_964, 1e-6));
        assert!(close(normal_quantile(0.01), -2.326_348, 1e-6));
        assert!(close(normal_pdf(0.0), 0.398_942_28, 1e-8));
    }

    #[test]
    fn lognormal_spread() {
        // σ = 0.5: avg = e^{μ+0.125}, p99 = e^{μ+1.163}; CV = sqrt(e^{0.25}−1) = 0.5329.
        let (mu, s) = (0.0_f64, 0.5_f64);
        let avg = (mu + s * s / 2.0).exp();
        let p99 = (mu + 2.326_348 * s).exp();
        let cv = lognormal_cv(avg, p99).expect("cv");
        assert!(close(cv, 0.532_88, 1e-4), "{cv}");
        assert_eq!(lognormal_cv(1.0, 0.5), Some(0.0));
        assert!(lognormal_cv(0.0, 1.0).is_none());
    }

    #[test]
    fn gamma_function() {
        // scipy.special.gammaln 1.17.1.
        assert!(close(ln_gamma(0.5), 0.572_364_942_924_7, 1e-12));
        assert!(close(ln_gamma(10.0), 12.801_827_480_081_469, 1e-11));
        assert!(close(ln_gamma(100.0), 359.134_205_369_575_4, 1e-9));
        assert!(close(ln_gamma(3.7), 1.428_072_326_665_388, 1e-12));
    }

    #[test]
    fn wilson_interval() {
        // 10 of 100: (0.0552, 0.1744).
        let (lo, hi) = wilson(10, 100);
        assert!(
            close(lo, 0.055_2, 1e-4) && close(hi, 0.174_4, 1e-4),
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }
}
