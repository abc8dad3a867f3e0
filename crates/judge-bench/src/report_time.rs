//! `judge-bench report-time`: what a run report costs to compute. The
//! daemon computes it when a run ends, when the API or `rolloutctl report`
//! asks, and when Prometheus scrapes a rollout whose status changed; a
//! template's history holds up to 360 entries however long the run.
//!
//! Usage: `cargo run --release -p judge-bench -- report-time [--runs N] [--seed S]`
//!
//! For histories of 10, 30, 120 and 360 one-minute intervals of the
//! judges' benchmark ("identical arms" and "5xx ×20", 1,000 requests a
//! second, canary share 10%), the median and the largest time of one
//! `effect::error_rate` and one `effect::latency` over `N` runs (default
//! 20), on one thread.

use std::time::Instant;

use rollout_analysis::effect;
use rollout_analysis::IntervalMetrics;
use rollout_sim::Rng;
use rollout_spec::JudgeKind;

use super::{simulate_with_truth, template, SCENARIOS};

const LENGTHS: [usize; 4] = [10, 30, 120, 360];

/// `judge-bench report-time …`.
pub fn main(rest: &[String]) -> std::process::ExitCode {
    let (runs, seed) = match super::ModeFlags::runs_and_seed(rest, "report-time", 20) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let spec = template(JudgeKind::Sequential, false);
    let (Some(errors), Some(latency)) = (&spec.alb.error_rate, &spec.alb.latency) else {
        eprintln!("the benchmark's template has no 5xx or latency check");
        return std::process::ExitCode::FAILURE;
    };
    let mut rng = Rng::new(seed);
    println!("judge-bench report-time --runs {runs} --seed {seed}: one report's checks, 1,000 requests a second, canary share 10%\n");
    println!("| scenario | intervals | errorRate median / max | latency median / max |");
    println!("|---|---|---|---|");
    let scenarios = ["identical arms", "5xx ×20"];
    for s in SCENARIOS.iter().filter(|s| scenarios.contains(&s.name)) {
        for minutes in LENGTHS {
            let (mut err_times, mut lat_times) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let (run, _) = simulate_with_truth(&mut rng, s, (1000.0, 0.10), minutes, 0.5);
                let history: Vec<IntervalMetrics> = run.iter().map(super::interval).collect();
                let t = Instant::now();
                std::hint::black_box(effect::error_rate(errors, &history));
                err_times.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                std::hint::black_box(effect::latency(latency, &history));
                lat_times.push(t.elapsed().as_secs_f64());
            }
            println!(
                "| {} | {minutes} | {} | {} |",
                s.name,
                spread(&mut err_times),
                spread(&mut lat_times)
            );
        }
    }
    std::process::ExitCode::SUCCESS
}

/// "median / max" of `times` (seconds), in milliseconds.
fn spread(times: &mut [f64]) -> String {
    times.sort_by(f64::total_cmp);
    let ms = |s: f64| format!("{:.2} ms", s * 1000.0);
    match (times.get(times.len() / 2), times.last()) {
        (Some(&m), Some(&x)) => format!("{} / {}", ms(m), ms(x)),
        _ => "-".into(),
    }
}
