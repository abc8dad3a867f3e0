//! A deterministic simulation of what rolloutd talks to, for tests and the
//! demo: an Application Load Balancer (forward weights, target health), a
//! CloudWatch that records per-second `AWS/ApplicationELB` metrics for both
//! target groups, split by the weights the load balancer holds at that
//! second, and a fake clock. [`Harness`] drives the real decision core
//! ([`rollout_core::plan`] and [`rollout_core::decide`]) against them, the way
//! the daemon does: observe, decide, record the status (intent), then act.
//!
//! Everything is seeded: the same scenario and seed give the same run, to the
//! millisecond, in a few milliseconds of real time.
#![forbid(unsafe_code)]

#[cfg(feature = "harness")]
mod harness;
pub mod memory;
pub mod synth;

#[cfg(feature = "harness")]
pub use harness::*;

/// A small, fast, seeded random number generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Poisson with the given mean (Knuth below 30, normal approximation above).
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 || !mean.is_finite() {
            return 0;
        }
        if mean < 30.0 {
            let limit = (-mean).exp();
            let mut k = 0u64;
            let mut p = self.uniform();
            while p > limit {
                k += 1;
                p *= self.uniform();
            }
            k
        } else {
            (mean + mean.sqrt() * self.normal()).round().max(0.0) as u64
        }
    }

    /// Gamma with shape `k` and mean 1 (a CV of `1/√k`): Marsaglia and
    /// Tsang for `k ≥ 1`; below 1 by `Gamma(k) = Gamma(k + 1)·U^(1/k)`
    /// (their method needs `k ≥ 1`, and a CV above 1 is `k` below 1);
    /// exactly 1 for an infinite `k` (CV 0).
    pub fn gamma_mean_one(&mut self, k: f64) -> f64 {
        if !k.is_finite() {
            return 1.0;
        }
        if k < 1.0 {
            let boost = self.uniform().max(f64::MIN_POSITIVE).powf(1.0 / k);
            return self.gamma_mean_one(k + 1.0) * (k + 1.0) / k * boost;
        }
        let d = k - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v / k;
            }
        }
    }
}

/// How one arm behaves: its 5xx rate and mean response time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmBehaviour {
    /// Fraction of requests answered with a 5xx.
    pub error_rate: f64,
    /// Mean response time in seconds.
    pub latency: f64,
}

impl ArmBehaviour {
    /// A healthy service: 0.2% errors, 50 ms.
    pub const HEALTHY: ArmBehaviour = ArmBehaviour {
        error_rate: 0.002,
        latency: 0.050,
    };
}
