//! Synthetic ALB traffic for one analysis interval, shared by the simulated
//! worlds (in memory, and in database tables): `rps` requests a second,
//! split each second by the canary's share at that second, counts drawn
//! from a generator seeded by route, second and arm, so every reader (and
//! every replica, and every restart) sees the same numbers.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use rollout_analysis::{ArmSample, IntervalMetrics};
use rollout_core::{IntervalRequest, Time};

use crate::{ArmBehaviour, Rng};

/// The canary's share (percent) of a route over time: `(since_ms, percent)`,
/// oldest first; 0 before the first entry.
pub fn share_at(history: &[(i64, f64)], ms: i64) -> f64 {
    history
        .iter()
        .take_while(|(at, _)| *at <= ms)
        .last()
        .map_or(0.0, |(_, s)| *s)
}

fn arm(
    route: &str,
    history: &[(i64, f64)],
    rps: f64,
    b: ArmBehaviour,
    (start, end): (Time, Time),
    canary: bool,
) -> ArmSample {
    let (mut n, mut e, mut lat) = (0u64, 0u64, 0.0);
    let mut s = start.millis().div_euclid(1000);
    while s * 1000 < end.millis() {
        let share = share_at(history, s * 1000) / 100.0;
        let mut h = DefaultHasher::new();
        (route, s, canary).hash(&mut h);
        let mut rng = Rng::new(h.finish());
        let rate = if canary {
            rps * share
        } else {
            rps * (1.0 - share)
        };
        let k = rng.poisson(rate);
        n += k;
        e += rng.poisson(k as f64 * b.error_rate).min(k);
        lat += k as f64 * b.latency * (1.0 + 0.05 * rng.normal()).max(0.1);
        s += 1;
    }
    if n == 0 {
        return ArmSample::default();
    }
    ArmSample {
        requests: Some(n as f64),
        errors: (e > 0).then_some(e as f64),
        latency: Some(lat / n as f64),
        latency_cv: None,
    }
}

/// Both arms' metrics over `window`, as published by `now` (nothing after it).
pub fn window(
    route: &str,
    history: &[(i64, f64)],
    rps: f64,
    (stable, canary): (ArmBehaviour, ArmBehaviour),
    window: &IntervalRequest,
    now: Time,
) -> IntervalMetrics {
    IntervalMetrics {
        stable: arm(
            route,
            history,
            rps,
            stable,
            (window.stable_start, window.stable_end.min(now)),
            false,
        ),
        canary: arm(
            route,
            history,
            rps,
            canary,
            (window.start, window.end.min(now)),
            true,
        ),
        // Only the ALB metrics are synthesised: custom metrics read as no data.
        custom: Vec::new(),
        merged: 0,
    }
}
