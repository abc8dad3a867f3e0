//! `judge-bench coverage`: do the run report's 95% intervals (confidence
//! sequences, `rollout_analysis::effect`) hold the true effect whenever a
//! run stops, and how often is an unchanged canary called `improved` or
//! `regressed` against the truth?
//!
//! Usage: `cargo run --release -p judge-bench -- coverage [--runs N] [--seed S]`
//!
//! The same simulated runs as the judges' benchmark (30 minutes, every
//! traffic level and canary share). After every minute the report is
//! computed on the run so far; a run *covers* when no minute's interval
//! excludes the true effect (so the figure holds for any stopping rule).
//! The true latency effect is the scenario's factor on the mean minus 1.
//! The true 5xx effect, at each stopping point, is the ratio of the arms'
//! expected 5xx rates over the minutes so far given the requests each arm
//! served: each arm-minute's rate (shared incidents included) times its
//! requests, plus the ~20-error host bursts of 1% of arm-minutes (0.2
//! errors a minute on each arm, a larger rate on the smaller arm).

use rollout_analysis::effect::{self, EffectVerdict};
use rollout_analysis::IntervalMetrics;
use rollout_sim::Rng;
use rollout_spec::JudgeKind;

use super::{simulate_with_truth, template, Scenario, SCENARIOS, SHARES, TRAFFIC};

/// Per scenario: runs, runs whose latency and 5xx intervals always held
/// the truth, runs where an unchanged canary was ever called improved or
/// regressed (latency, 5xx), and the minutes until a verdict other than
/// `unknown` (latency).
#[derive(Default)]
struct Tally {
    runs: u64,
    latency_covered: u64,
    errors_covered: u64,
    latency_claimed: u64,
    errors_claimed: u64,
    decided_minutes: Vec<f64>,
}

/// The true 5xx effect over the first `upto` minutes (those where both
/// arms have data, as the report reads them).
fn true_error_effect(
    run: &[[(rollout_analysis::ArmSample, f64); 2]],
    expected: &[[f64; 2]],
    upto: usize,
) -> f64 {
    let (mut es, mut ns, mut ec, mut nc) = (0.0, 0.0, 0.0, 0.0);
    for ([(s, _), (c, _)], [xs, xc]) in run.iter().zip(expected).take(upto) {
        if let (Some(a), Some(b)) = (s.requests, c.requests) {
            (es, ns, ec, nc) = (es + xs, ns + a, ec + xc, nc + b);
        }
    }
    (ec / nc) / (es / ns) - 1.0
}

fn inside(e: &effect::Effect, truth: f64) -> bool {
    match (e.low, e.high) {
        (Some(lo), Some(hi)) => lo <= truth && truth <= hi,
        // No interval (no data yet): nothing is claimed.
        _ => true,
    }
}

/// `judge-bench coverage …`.
pub fn main(rest: &[String]) -> std::process::ExitCode {
    let (runs, seed) = match super::ModeFlags::runs_and_seed(rest, "coverage", 10) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let minutes = 30;
    let spec = template(JudgeKind::Sequential, false);
    let mut rng = Rng::new(seed);
    println!(
        "judge-bench coverage --runs {runs} --seed {seed}: {} runs per scenario ({} traffic levels × {} canary shares × {runs}), {minutes} minutes each, the report after every minute; tolerance 50% (5xx) and 10% (latency Average)\n",
        runs * (TRAFFIC.len() * SHARES.len()) as u64,
        TRAFFIC.len(),
        SHARES.len()
    );
    println!("| scenario | runs | latency: truth always inside | 5xx: truth always inside | unchanged: a claim the truth contradicts (latency, 5xx) | median minutes to a latency verdict |");
    println!("|---|---|---|---|---|---|");
    // Not the bad-host scenario: its canary is slower in the minutes its
    // host is bad, so its latency truth is not the scenario's constant.
    for s in SCENARIOS
        .iter()
        .filter(|s| s.from == 0 && !s.p99 && !s.bad_host)
    {
        let mut t = Tally::default();
        for &rps in &TRAFFIC {
            for &share in &SHARES {
                for _ in 0..runs {
                    let (run, expected) =
                        simulate_with_truth(&mut rng, s, (rps, share), minutes, 0.5);
                    tally_run(&mut t, &spec, s, &run, &expected);
                }
            }
        }
        print_row(s, &mut t);
    }
    std::process::ExitCode::SUCCESS
}

fn tally_run(
    t: &mut Tally,
    spec: &rollout_spec::AnalysisTemplateSpec,
    s: &Scenario,
    run: &[[(rollout_analysis::ArmSample, f64); 2]],
    expected: &[[f64; 2]],
) {
    let latency_truth = s.latency_avg - 1.0;
    let unchanged = s.errors == 1.0 && s.latency_avg == 1.0;
    let (mut lat_ok, mut err_ok, mut lat_claim, mut err_claim) = (true, true, false, false);
    let mut decided = None;
    let mut history = Vec::with_capacity(run.len());
    for (m, [(st, _), (ca, _)]) in run.iter().enumerate() {
        history.push(IntervalMetrics {
            stable: *st,
            canary: *ca,
            custom: Vec::new(),
            merged: 0,
        });
        // A claim the truth contradicts: `improved` when the canary is not
        // better, `regressed` when it is not worse. (With identical arms
        // the latency truth is 0, so any claim; the 5xx truth is not 0 on
        // unequal arms: the host bursts weigh more on the smaller one.)
        let claims = |v: EffectVerdict, truth: f64| match v {
            EffectVerdict::Improved => truth >= 0.0,
            EffectVerdict::Regressed => truth <= 0.0,
            _ => false,
        };
        if let Some(c) = &spec.alb.latency {
            let e = effect::latency(c, &history);
            lat_ok &= inside(&e, latency_truth);
            lat_claim |= unchanged && claims(e.verdict, latency_truth);
            if decided.is_none() && e.verdict != EffectVerdict::Unknown {
                decided = Some(m as f64 + 1.0);
            }
        }
        // The 5xx sequence costs a search: every third minute and the last.
        if m % 3 == 2 || m + 1 == run.len() {
            if let Some(c) = &spec.alb.error_rate {
                let e = effect::error_rate(c, &history);
                let truth = true_error_effect(run, expected, m + 1);
                err_ok &= inside(&e, truth);
                err_claim |= unchanged && claims(e.verdict, truth);
            }
        }
    }
    t.runs += 1;
    t.latency_covered += u64::from(lat_ok);
    t.errors_covered += u64::from(err_ok);
    t.latency_claimed += u64::from(lat_claim);
    t.errors_claimed += u64::from(err_claim);
    t.decided_minutes.extend(decided);
}

fn print_row(s: &Scenario, t: &mut Tally) {
    let pct = |k: u64| 100.0 * k as f64 / t.runs.max(1) as f64;
    let claims = if s.errors == 1.0 && s.latency_avg == 1.0 {
        format!(
            "{:.1}%, {:.1}%",
            pct(t.latency_claimed),
            pct(t.errors_claimed)
        )
    } else {
        "-".into()
    };
    t.decided_minutes.sort_by(f64::total_cmp);
    let median = t
        .decided_minutes
        .get(t.decided_minutes.len() / 2)
        .map_or("-".into(), |m| format!("{m:.0}"));
    println!(
        "| {} | {} | {:.1}% | {:.1}% | {claims} | {median} |",
        s.name,
        t.runs,
        pct(t.latency_covered),
        pct(t.errors_covered)
    );
}
