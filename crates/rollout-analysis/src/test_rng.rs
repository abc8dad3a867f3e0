//! A small seeded generator for the statistical tests: an LCG with the
//! normal (Box-Muller), Gamma (Marsaglia-Tsang) and Poisson draws they need.

pub(crate) struct Lcg(pub u64);

impl Lcg {
    pub(crate) fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub(crate) fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// A Gamma of shape `k` and mean 1.
    pub(crate) fn gamma_mean_one(&mut self, k: f64) -> f64 {
        if k < 1.0 {
            let u = self.uniform();
            return self.gamma_mean_one(k + 1.0) * (k + 1.0) / k * u.powf(1.0 / k);
        }
        let d = k - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v > 0.0 && self.uniform().ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v / k;
            }
        }
    }

    /// A Poisson count of mean `mean` (a rounded normal above 30).
    pub(crate) fn poisson(&mut self, mean: f64) -> f64 {
        if mean > 30.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0);
        }
        let (limit, mut p, mut n) = ((-mean).exp(), 1.0, 0.0);
        loop {
            p *= self.uniform();
            if p <= limit {
                return n;
            }
            n += 1.0;
        }
    }
}
