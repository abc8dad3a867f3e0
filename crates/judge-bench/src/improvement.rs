//! `judge-bench improvement`: the improvement gate (`minImprovement: 5%`
//! on latency Average). Does an unchanged canary ever get promoted, and how
//! often and how soon is a faster one?
//!
//! Usage: `cargo run --release -p judge-bench -- improvement [--runs N] [--seed S]`
//!
//! The judges' benchmark runs (30 minutes at a fixed canary share, every
//! traffic level and share, per-arm noise). A run is *promoted* when, before
//! any failed interval, an interval passes with every gated check's
//! improvement shown (what the daemon needs before its last raise); it is
//! *rolled back* at the first failed interval (a regression, or the data
//! showing the improvement is not there); otherwise it ends undecided (the
//! daemon would roll it back when its steps end).

use rollout_analysis::{judge, IntervalMetrics, Verdict};
use rollout_sim::Rng;
use rollout_spec::{JudgeKind, Percent};

use super::{sc, simulate, template, Scenario, SHARES, TRAFFIC};

const SCENARIOS: [Scenario; 4] = [
    sc("unchanged (identical arms)", true, 1.0, 1.0),
    sc("3% faster (less than required)", true, 1.0, 0.97),
    sc("10% faster", true, 1.0, 0.90),
    sc("15% faster", true, 1.0, 0.85),
];

#[derive(Default)]
struct Tally {
    runs: u64,
    promoted: u64,
    rolled_back: u64,
    minutes: Vec<u32>,
}

/// `judge-bench improvement …`.
pub fn main(rest: &[String]) -> std::process::ExitCode {
    let (runs, seed) = match super::ModeFlags::runs_and_seed(rest, "improvement", 20) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let mut spec = template(JudgeKind::Sequential, false);
    if let Some(l) = spec.alb.latency.as_mut() {
        l.min_improvement = Percent::new(5.0);
    }
    let mut rng = Rng::new(seed);
    println!(
        "judge-bench improvement --runs {runs} --seed {seed}: latency Average maxIncrease 10%, minImprovement 5%; 5xx +50%; α = 1%; 30 minutes a run, {runs} runs per traffic level and canary share\n"
    );
    println!("| scenario | canary requests a minute | runs | promoted | rolled back | undecided | median / p90 minutes to promote |");
    println!("|---|---|---|---|---|---|---|");
    for s in &SCENARIOS {
        let (mut thin, mut busy) = (Tally::default(), Tally::default());
        for &rps in &TRAFFIC {
            for &share in &SHARES {
                let t = if rps * share * 60.0 >= 300.0 {
                    &mut busy
                } else {
                    &mut thin
                };
                for _ in 0..runs {
                    let run = simulate(&mut rng, s, (rps, share), 30, 0.5);
                    decide(t, &spec, &run);
                }
            }
        }
        print_row(s, "at least 300", &mut busy);
        print_row(s, "under 300", &mut thin);
    }
    std::process::ExitCode::SUCCESS
}

fn decide(
    t: &mut Tally,
    spec: &rollout_spec::AnalysisTemplateSpec,
    run: &[[(rollout_analysis::ArmSample, f64); 2]],
) {
    t.runs += 1;
    let mut history: Vec<IntervalMetrics> = Vec::with_capacity(run.len());
    for (m, minute) in run.iter().enumerate() {
        history.push(super::interval(minute));
        let v = judge(spec, &history);
        if v.verdict == Verdict::Fail {
            t.rolled_back += 1;
            return;
        }
        let shown = v
            .metrics
            .iter()
            .filter(|m| m.metric == "latency")
            .all(|m| m.improvement.is_some_and(|w| w.shown()));
        if v.verdict == Verdict::Pass && shown {
            t.promoted += 1;
            t.minutes.push(m as u32 + 1);
            return;
        }
    }
}

fn print_row(s: &Scenario, traffic: &str, t: &mut Tally) {
    let pct = |k: u64| 100.0 * k as f64 / t.runs.max(1) as f64;
    t.minutes.sort_unstable();
    let at = |q: f64| {
        t.minutes
            .get(((q * t.minutes.len() as f64).ceil() as usize).max(1) - 1)
            .map_or("-".into(), |m| m.to_string())
    };
    println!(
        "| {} | {traffic} | {} | {:.1}% | {:.1}% | {:.1}% | {} / {} |",
        s.name,
        t.runs,
        pct(t.promoted),
        pct(t.rolled_back),
        pct(t.runs - t.promoted - t.rolled_back),
        at(0.5),
        at(0.9)
    );
}
