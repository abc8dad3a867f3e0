//! Learning how much stable's 5xx rate wanders from its hour before a run
//! (`rollout_analysis::noise`), in simulated worlds with incidents and one
//! host's bursts.

use rollout_analysis::noise::{error_cv, FLOOR};
use rollout_sim::Rng;

/// An hour of stable's minutes: `n` requests a minute at 0.2% errors, each
/// minute's rate a Gamma of CV `cv`, with an incident (errors ×10) in
/// minutes 20–24 and one host's burst of 20 errors in minute 40.
fn hour(rng: &mut Rng, n: f64, cv: f64) -> Vec<(f64, f64)> {
    (0..60)
        .map(|m| {
            let wander = rng.gamma_mean_one(1.0 / (cv * cv));
            let incident = if (20..25).contains(&m) { 10.0 } else { 1.0 };
            let burst = if m == 40 { 20 } else { 0 };
            let errors = rng.poisson(n * 0.002 * wander * incident) + burst;
            (n, errors as f64)
        })
        .collect()
}

/// The learnt CV follows the world's, incident and burst or not (the
/// median of five hours); a calm world gets the floor.
#[test]
fn learns_the_wander_despite_incidents() {
    for (cv, lo, hi) in [
        (0.0, FLOOR, FLOOR),
        (0.5, FLOOR, 0.8),
        (1.0, 0.7, 1.5),
        (2.0, 1.4, 3.0),
    ] {
        let mut rng = Rng::new(19);
        let mut got: Vec<f64> = (0..5)
            .map(|_| error_cv(&hour(&mut rng, 20_000.0, cv)).expect("enough data"))
            .collect();
        got.sort_by(f64::total_cmp);
        assert!(got[2] >= lo && got[2] <= hi, "cv {cv}: {got:?}");
    }
}

/// The simulator's wander is a Gamma of mean 1 and the CV asked for,
/// below and above CV 1.
#[test]
fn the_wander_has_mean_one_and_its_cv() {
    for cv in [0.5_f64, 1.0, 2.0] {
        let mut rng = Rng::new(7);
        let k = 1.0 / (cv * cv);
        let xs: Vec<f64> = (0..200_000).map(|_| rng.gamma_mean_one(k)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((mean - 1.0).abs() < 0.03, "cv {cv}: mean {mean}");
        assert!(
            (var.sqrt() / mean - cv).abs() < 0.05 * cv.max(1.0),
            "cv {cv}: {}",
            var.sqrt()
        );
    }
    assert_eq!(Rng::new(1).gamma_mean_one(f64::INFINITY), 1.0);
}
