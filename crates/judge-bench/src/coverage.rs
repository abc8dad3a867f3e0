//! `judge-bench coverage`: do the run report's 95% intervals (confidence
//! sequences, `rollout_analysis::effect`) hold the true effect whenever a
//! run stops, and how often is an unchanged canary called `improved` or
//! `regressed` against the truth?
//!
//! Usage: `cargo run --release -p judge-bench -- coverage [--runs N] [--seed S] [--only TEXT] [--error-cv C]`
//!
//! `--only` computes only the rows whose scenario name contains `TEXT`;
//! every run is still simulated, so those rows get the same seeds as in
//! the full table. The reports are computed on two threads.
//!
//! The same simulated runs as the judges' benchmark (30 minutes, every
//! traffic level and canary share; `--error-cv` sets each arm's 5xx
//! wander, 0.5 by default). After every minute the report is computed on
//! the run so far, with the wander learnt from stable's hour before the
//! run as the daemon learns it; a run *covers* when no minute's interval
//! excludes the true effect (so the figure holds for any stopping rule).
//! The true latency effect is the scenario's factor on the mean minus 1.
//!
//! The true 5xx effect, at each stopping point, is the revision's: the
//! ratio of the arms' expected 5xx rates over the minutes so far given
//! the requests each arm served, each arm-minute's rate being the
//! scenario's with the shared incidents (capped at every request failing).
//! A host's bad minute (a burst of ~20 errors in 1% of arm-minutes, on
//! either arm whatever its size) is noise the report must not be fooled
//! by, not part of what the revision does; a second column counts the
//! bursts' expectation in the truth as well (0.2 errors a minute on each
//! arm: on a small canary arm that is most of its expected errors, though
//! three runs in four never see one).

use rollout_analysis::effect::{self, EffectVerdict};
use rollout_sim::Rng;
use rollout_spec::JudgeKind;

use super::{
    hour_before, simulate_with_truth, template, ArmMinutes, Scenario, HOST_BURST, SCENARIOS,
    SHARES, TRAFFIC,
};

/// Added to the seed for the stream that draws stable's hour before each
/// run.
const HOURS_STREAM: u64 = 0x6c62_272e_07bb_0142;

/// Per scenario: runs, runs whose latency and 5xx intervals always held
/// the truth (5xx: the revision's, and with the host bursts counted), runs
/// where an unchanged canary was ever called improved or regressed against
/// the truth (latency, 5xx), and the minutes until a verdict other than
/// `unknown` (latency).
#[derive(Default)]
struct Tally {
    runs: u64,
    latency_covered: u64,
    errors_covered: u64,
    errors_covered_bursts: u64,
    errors_unfit: u64,
    latency_claimed: u64,
    errors_claimed: u64,
    decided_minutes: Vec<f64>,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.runs += o.runs;
        self.latency_covered += o.latency_covered;
        self.errors_covered += o.errors_covered;
        self.errors_covered_bursts += o.errors_covered_bursts;
        self.errors_unfit += o.errors_unfit;
        self.latency_claimed += o.latency_claimed;
        self.errors_claimed += o.errors_claimed;
        self.decided_minutes.extend(o.decided_minutes);
    }
}

/// The true 5xx effect over the first `upto` minutes (those where both
/// arms have data, as the report reads them), with `bursts` expected
/// errors a minute on each arm besides the revision's.
fn true_error_effect(run: &[ArmMinutes], expected: &[[f64; 2]], upto: usize, bursts: f64) -> f64 {
    let (mut es, mut ns, mut ec, mut nc) = (0.0, 0.0, 0.0, 0.0);
    for ([(s, _), (c, _)], [xs, xc]) in run.iter().zip(expected).take(upto) {
        if let (Some(a), Some(b)) = (s.requests, c.requests) {
            (es, ns, ec, nc) = (es + xs + bursts, ns + a, ec + xc + bursts, nc + b);
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
    let flags =
        super::ModeFlags::parse(rest, "coverage", &["--only", "--error-cv"]).and_then(|f| {
            let only: String = f.get("--only", String::new())?;
            let cv: f64 = f.get("--error-cv", 0.5)?;
            if !(0.0..=3.0).contains(&cv) {
                return Err("--error-cv: between 0 and 3".into());
            }
            Ok((f.get("--runs", 10)?, f.get("--seed", 1)?, only, cv))
        });
    let (runs, seed, only, error_cv) = match flags {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let minutes = 30;
    let spec = template(JudgeKind::Sequential, false);
    let mut rng = Rng::new(seed);
    let mut hours = Rng::new(seed.wrapping_add(HOURS_STREAM));
    println!(
        "judge-bench coverage --runs {runs} --seed {seed} --error-cv {error_cv}: {} runs per scenario ({} traffic levels × {} canary shares × {runs}), {minutes} minutes each, the report after every minute; tolerance 50% (5xx) and 10% (latency Average)\n",
        runs * (TRAFFIC.len() * SHARES.len()) as u64,
        TRAFFIC.len(),
        SHARES.len()
    );
    println!("| scenario | runs | latency: truth always inside | 5xx: truth always inside | 5xx: truth with host bursts always inside | 5xx: no interval at some point (no ratio fits) | unchanged: a claim the truth contradicts (latency, 5xx) | median minutes to a latency verdict |");
    println!("|---|---|---|---|---|---|---|---|");
    // Not the bad-host scenario: its canary is slower in the minutes its
    // host is bad, so its latency truth is not the scenario's constant.
    for s in SCENARIOS
        .iter()
        .filter(|s| s.from == 0 && !s.p99 && !s.bad_host)
    {
        let wanted = s.name.contains(only.as_str());
        let mut runs_of_row = Vec::new();
        for &rps in &TRAFFIC {
            for &share in &SHARES {
                for _ in 0..runs {
                    let run = simulate_with_truth(&mut rng, s, (rps, share), minutes, error_cv);
                    // Stable's hour before the run, as the daemon reads it,
                    // from a stream of its own: the runs stay those of the
                    // table before the report learnt the noise.
                    let learnt = hour_before(&mut hours, rps, error_cv);
                    runs_of_row.push((run, learnt));
                }
            }
        }
        if !wanted {
            continue;
        }
        let half = runs_of_row.len().div_ceil(2);
        let mut t = Tally::default();
        std::thread::scope(|scope| {
            let workers: Vec<_> = runs_of_row
                .chunks(half.max(1))
                .map(|chunk| {
                    let spec = &spec;
                    scope.spawn(move || {
                        let mut t = Tally::default();
                        for ((run, expected), learnt) in chunk {
                            tally_run(&mut t, spec, s, (run, expected), *learnt);
                        }
                        t
                    })
                })
                .collect();
            for w in workers {
                t.add(w.join().expect("a coverage worker panicked"));
            }
        });
        print_row(s, &mut t);
    }
    std::process::ExitCode::SUCCESS
}

fn tally_run(
    t: &mut Tally,
    spec: &rollout_spec::AnalysisTemplateSpec,
    s: &Scenario,
    (run, expected): (&[ArmMinutes], &[[f64; 2]]),
    learnt: Option<f64>,
) {
    let latency_truth = s.latency_avg - 1.0;
    let unchanged = s.errors == 1.0 && s.latency_avg == 1.0;
    let (mut lat_ok, mut err_ok, mut lat_claim, mut err_claim) = (true, true, false, false);
    let (mut err_ok_bursts, mut err_unfit) = (true, false);
    let mut decided = None;
    let mut history = Vec::with_capacity(run.len());
    for (m, minute) in run.iter().enumerate() {
        history.push(super::interval(minute));
        // A claim the truth contradicts: `improved` when the canary is not
        // better, `regressed` when it is not worse. (With identical arms
        // the latency truth is 0, so any claim; the 5xx truth is 0 but
        // where incidents capped one arm's rate.)
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
                let e = effect::error_rate_learnt(c, learnt, &history);
                let truth = true_error_effect(run, expected, m + 1, 0.0);
                let with_bursts =
                    true_error_effect(run, expected, m + 1, HOST_BURST.0 * HOST_BURST.1);
                err_ok &= inside(&e, truth);
                err_ok_bursts &= inside(&e, with_bursts);
                // Enough data, yet no ratio fits it (no interval).
                err_unfit |= e.effect.is_some() && e.low.is_none() && e.intervals_needed.is_none();
                err_claim |= unchanged && claims(e.verdict, truth);
            }
        }
    }
    t.runs += 1;
    t.latency_covered += u64::from(lat_ok);
    t.errors_covered += u64::from(err_ok);
    t.errors_covered_bursts += u64::from(err_ok_bursts);
    t.errors_unfit += u64::from(err_unfit);
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
        "| {} | {} | {:.1}% | {:.1}% | {:.1}% | {:.1}% | {claims} | {median} |",
        s.name,
        t.runs,
        pct(t.latency_covered),
        pct(t.errors_covered),
        pct(t.errors_covered_bursts),
        pct(t.errors_unfit)
    );
}
