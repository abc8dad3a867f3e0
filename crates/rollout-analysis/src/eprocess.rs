//! The e-process the sequential judge accumulates: a mixture over
//! alternatives and over the interval at which the canary went bad, each
//! interval's likelihood ratio capped (see `sequential`, "Robustness").

use crate::sequential::CAP_FRACTION;

/// A mixture e-process over alternatives *and* start times.
///
/// For alternative `k` and start interval `j`, `E_jk(t) = Π_{j≤i≤t} LR_ik` is
/// a test supermartingale (1 before `j`). Their average with weights
/// `w_j = 1/(j(j+1))` (which sum to 1) and `1/K` over alternatives is one
/// too, so Ville's inequality bounds the chance it ever reaches `1/α` by `α`.
/// Mixing over start times keeps a regression that begins late in a run
/// detectable: evidence for the canary banked by earlier good intervals does
/// not have to be paid back, only `ln(1/w_j)` nats.
///
/// Kept as `S_k(t) = Σ_{j≤t} w_j E_jk(t)`, updated by
/// `S_k(t) = (S_k(t−1) + w_t)·LR_tk`, in logs; the starts still to come
/// add their mass `1/(t+1)`.
#[derive(Debug, Clone)]
pub(crate) struct EProcess {
    log_s: Vec<f64>,
    t: u64,
    /// Each alternative's per-interval cap on its log-ratio.
    caps: Vec<f64>,
    /// The largest capped log-ratio of the latest interval.
    last: f64,
}

fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

impl EProcess {
    /// Every alternative capped at `CAP_FRACTION·ln(1/α)` per interval.
    pub(crate) fn new(alternatives: usize, alpha: f64) -> Self {
        EProcess {
            log_s: vec![f64::NEG_INFINITY; alternatives],
            t: 0,
            caps: vec![CAP_FRACTION * (1.0 / alpha).ln(); alternatives],
            last: 0.0,
        }
    }

    /// The same, with the alternatives `uncapped` says not capped
    /// (`sequential`, "Robustness"): a capped factor is below the ratio,
    /// so the e-process is valid whichever are.
    pub(crate) fn uncapped(mut self, uncapped: impl Fn(usize) -> bool) -> Self {
        for (i, cap) in self.caps.iter_mut().enumerate() {
            if uncapped(i) {
                *cap = f64::INFINITY;
            }
        }
        self
    }

    /// One interval's log likelihood ratios, one per alternative.
    pub(crate) fn push(&mut self, log_lrs: impl Iterator<Item = f64>) {
        self.t += 1;
        let t = self.t as f64;
        let log_w = -(t * (t + 1.0)).ln();
        self.last = f64::NEG_INFINITY;
        for ((s, cap), lr) in self.log_s.iter_mut().zip(&self.caps).zip(log_lrs) {
            let lr = if lr.is_finite() { lr.min(*cap) } else { 0.0 };
            self.last = self.last.max(lr);
            *s = log_add(*s, log_w) + lr;
        }
    }

    /// The e-value now.
    pub(crate) fn value(&self) -> f64 {
        let k = self.log_s.len() as f64;
        let started = self
            .log_s
            .iter()
            .fold(f64::NEG_INFINITY, |acc, &l| log_add(acc, l))
            - k.ln();
        let pending = -((self.t + 1) as f64).ln();
        log_add(started, pending).exp()
    }

    /// Whether the latest interval on its own looked bad enough to hold.
    pub(crate) fn last_suspicious(&self, alpha: f64) -> bool {
        self.last >= 0.5 * (1.0 / alpha).ln()
    }
}
