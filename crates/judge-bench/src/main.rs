//! `judge-bench`: the canary judges compared on the same simulated runs.
//!
//! Usage: `cargo run --release -p judge-bench -- [--runs N] [--seed S] [--minutes M] [--error-cv C]`
//! (and `… -- pacing`: fixed against evidence-driven pauses, see `pacing.rs`;
//! `… -- coverage`: the run report's intervals, see `coverage.rs`;
//! `… -- improvement`: the improvement gate, see `improvement.rs`;
//! `… -- report-time`: what a run report costs, see `report_time.rs`)
//!
//! Each run is `M` one-minute intervals (default 30) of both arms' ALB
//! metrics at a fixed canary share, generated from one seed:
//! - traffic 30, 100, 300, 1,000 or 3,000 requests a second; canary share
//!   5, 10, 25 or 50%;
//! - diurnal drift of traffic and latency, shared by both arms;
//! - bursts: 5% of minutes carry 2–4× the traffic;
//! - shared incidents: 3% of minutes start 2–5 minutes in which both arms'
//!   error rates rise 5–20× and latency 1.5–3×;
//! - overdispersed errors: each arm-minute's rate is drawn from a Gamma with
//!   CV 0.5 (`--error-cv`) around its mean, and 1% of arm-minutes add a burst
//!   of ~20 errors from one misbehaving host;
//! - per-arm host noise on latency (3% each minute), lognormal request
//!   latency (σ = 0.8 on the log scale), Average and p99 computed from the
//!   requests actually served (sampled below 200 requests, from their
//!   sampling distribution above);
//! - no datapoint when an arm served no request, and 1% random dropouts;
//! - before each run, stable's hour at all the traffic in the same world,
//!   from which the sequential judge learns how much the 5xx rate wanders
//!   (`rollout_analysis::noise`), as the daemon does at a run's start.
//!
//! Good canaries include one whose three hosts have one with bad minutes;
//! regressions include 5xx and latency together.
//!
//! Every judge sees the same runs. A judge rolls back at the first interval
//! where the failed count exceeds `failureLimit` (0); `mannWhitney` is run
//! both at a fixed horizon (once, at the last minute) and after every minute.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

mod coverage;
mod improvement;
mod pacing;
mod report_time;
mod tables;

use rollout_analysis::stats::{lognormal_cv, normal_pdf};
use rollout_analysis::{judge, judge_learnt, ArmSample, IntervalMetrics, Verdict};
use rollout_sim::Rng;
use rollout_spec::{
    AlbAnalysis, AnalysisTemplateSpec, Duration, ErrorRateCheck, JudgeKind, LatencyCheck,
    LatencyStatistic, Percent,
};

const BASE_ERROR_RATE: f64 = 0.002;
const BASE_LATENCY: f64 = 0.080;
const SIGMA_LN: f64 = 0.8;
const HOST_NOISE: f64 = 0.03;
/// A host's bad minute: in this share of arm-minutes an arm gets a burst
/// of about this many extra errors, whatever its traffic.
const HOST_BURST: (f64, f64) = (0.01, 20.0);
const TRAFFIC: [f64; 5] = [30.0, 100.0, 300.0, 1000.0, 3000.0];
const SHARES: [f64; 4] = [0.05, 0.10, 0.25, 0.50];

/// How the canary differs from stable.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    good: bool,
    errors: f64,
    latency_avg: f64,
    latency_p99: f64,
    /// The minute the difference starts (0: from the start).
    from: usize,
    /// Judge latency by p99 instead of Average.
    p99: bool,
    /// One of the canary's three hosts has bad minutes (see `BAD_HOST`).
    bad_host: bool,
}

/// One bad host of three in the canary: in this share of minutes, a third
/// of the canary's requests see 10× the errors and 1.5× the latency (the
/// canary's rate ×4 and its latency ×1.17 that minute; ×1.3 and ×1.017 over
/// a run, inside the template's tolerance: a good release).
const BAD_HOST: (f64, f64, f64) = (0.10, 10.0, 1.5);

const fn sc(name: &'static str, good: bool, errors: f64, latency: f64) -> Scenario {
    Scenario {
        name,
        good,
        errors,
        latency_avg: latency,
        latency_p99: latency,
        from: 0,
        p99: false,
        bad_host: false,
    }
}

const SCENARIOS: [Scenario; 19] = [
    sc("identical arms", true, 1.0, 1.0),
    sc(
        "worse within tolerance (5xx ×1.3, latency ×1.05)",
        true,
        1.3,
        1.05,
    ),
    sc("better (5xx ×0.5, latency ×0.9)", true, 0.5, 0.9),
    Scenario {
        p99: true,
        ..sc("identical arms, judged on p99", true, 1.0, 1.0)
    },
    sc("5xx ×3", false, 3.0, 1.0),
    sc("5xx ×5", false, 5.0, 1.0),
    sc("5xx ×10", false, 10.0, 1.0),
    sc("5xx ×20", false, 20.0, 1.0),
    sc("latency ×1.3", false, 1.0, 1.3),
    sc("latency ×1.6", false, 1.0, 1.6),
    sc("latency ×2.0", false, 1.0, 2.0),
    sc("latency ×2.5", false, 1.0, 2.5),
    Scenario {
        from: 10,
        ..sc("5xx ×5 from minute 10", false, 5.0, 1.0)
    },
    Scenario {
        from: 10,
        ..sc("latency ×1.6 from minute 10", false, 1.0, 1.6)
    },
    Scenario {
        latency_avg: 1.03,
        latency_p99: 2.0,
        p99: true,
        ..sc(
            "tail only (p99 ×2, average ×1.03), judged on p99",
            false,
            1.0,
            1.0,
        )
    },
    Scenario {
        latency_avg: 1.03,
        latency_p99: 2.0,
        ..sc(
            "tail only, judged on Average (cannot see it)",
            false,
            1.0,
            1.0,
        )
    },
    // Added on 2026-12-01 (issue 19); appended so the rows above keep
    // their seeds.
    Scenario {
        bad_host: true,
        ..sc(
            "one of three canary hosts has bad minutes (10% of minutes: 10× errors, 1.5× latency)",
            true,
            1.0,
            1.0,
        )
    },
    sc("5xx ×3 and latency ×1.3 together", false, 3.0, 1.3),
    sc("5xx ×2 and latency ×1.2 together", false, 2.0, 1.2),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum JudgeName {
    SeedCounts,
    SeedRates,
    MannWhitneyFixed,
    MannWhitneyEveryMinute,
    Sequential,
}

impl JudgeName {
    const ALL: [JudgeName; 5] = [
        JudgeName::SeedCounts,
        JudgeName::SeedRates,
        JudgeName::MannWhitneyFixed,
        JudgeName::MannWhitneyEveryMinute,
        JudgeName::Sequential,
    ];
    fn title(self) -> &'static str {
        match self {
            JudgeName::SeedCounts => {
                "seed rule as written (5xx counts ×1.5, mean latency ×1.1, every minute)"
            }
            JudgeName::SeedRates => "seed rule on rates (`threshold`)",
            JudgeName::MannWhitneyFixed => {
                "Kayenta-style Mann-Whitney, fixed horizon (once, at the end)"
            }
            JudgeName::MannWhitneyEveryMinute => {
                "Kayenta-style Mann-Whitney, checked every minute (`mannWhitney`)"
            }
            JudgeName::Sequential => "ours: `sequential` (the default)",
        }
    }
}

fn template(kind: JudgeKind, p99: bool) -> AnalysisTemplateSpec {
    AnalysisTemplateSpec {
        alb: AlbAnalysis {
            period: Duration::from_secs(60),
            delay: Duration::from_secs(60),
            error_rate: Some(ErrorRateCheck {
                max_increase: Percent::new(50.0),
                max_rate: None,
                min_improvement: None,
            }),
            latency: Some(LatencyCheck {
                statistic: if p99 {
                    LatencyStatistic::Percentile(99.0)
                } else {
                    LatencyStatistic::Average
                },
                max_increase: Percent::new(10.0),
                max: None,
                min_improvement: None,
            }),
            min_requests: 50,
        },
        metrics: Vec::new(),
        failure_limit: 0,
        inconclusive_limit: 5,
        consecutive_error_limit: 4,
        judge: kind,
        alpha: Percent::new(1.0).unwrap_or_default(),
    }
}

/// One arm-minute's true conditions.
#[derive(Debug, Clone, Copy)]
struct Conditions {
    rate_rps: f64,
    error_rate: f64,
    latency_mean: f64,
    /// Multiplier of the p99 beyond what the mean's change gives.
    tail: f64,
}

/// Average and p99 of `n` lognormal request latencies with mean `mean`.
fn latencies(rng: &mut Rng, n: u64, mean: f64, tail: f64) -> (f64, f64) {
    let mu = mean.ln() - SIGMA_LN * SIGMA_LN / 2.0;
    let z99 = 2.326_347_874_040_841;
    if n <= 200 {
        let mut xs: Vec<f64> = (0..n)
            .map(|_| (mu + SIGMA_LN * rng.normal()).exp())
            .collect();
        xs.sort_by(f64::total_cmp);
        let avg = xs.iter().sum::<f64>() / n as f64;
        let idx = ((0.99 * n as f64).ceil() as usize).clamp(1, xs.len()) - 1;
        (avg, xs[idx] * tail)
    } else {
        let cv = ((SIGMA_LN * SIGMA_LN).exp() - 1.0).sqrt();
        let avg = mean * (1.0 + cv / (n as f64).sqrt() * rng.normal());
        let se = SIGMA_LN * (0.99 * 0.01 / n as f64).sqrt() / normal_pdf(z99);
        let p99 = (mu + z99 * SIGMA_LN + se * rng.normal()).exp();
        (avg.max(1e-6), p99 * tail)
    }
}

/// One arm-minute's metrics, with its p99 beside (the sample carries the Average).
fn arm_minute(rng: &mut Rng, c: Conditions, error_cv: f64) -> (ArmSample, f64) {
    let n = rng.poisson(c.rate_rps * 60.0);
    if n == 0 || rng.uniform() < 0.01 {
        return (ArmSample::default(), 0.0);
    }
    let rate = (c.error_rate * rng.gamma_mean_one(1.0 / (error_cv * error_cv))).min(1.0);
    let mut errors = rng.poisson(n as f64 * rate);
    if rng.uniform() < HOST_BURST.0 {
        errors += rng.poisson(HOST_BURST.1);
    }
    let errors = errors.min(n);
    let (avg, p99) = latencies(rng, n, c.latency_mean, c.tail);
    let host = (HOST_NOISE * rng.normal()).exp();
    let (avg, p99) = (avg * host, p99 * host);
    let sample = ArmSample {
        requests: Some(n as f64),
        errors: (errors > 0).then_some(errors as f64),
        latency: Some(avg),
        latency_cv: lognormal_cv(avg, p99),
    };
    (sample, p99)
}

/// One simulated run: per minute, (stable, canary) samples with both the
/// Average (in `latency`) and the p99 alongside.
fn simulate(
    rng: &mut Rng,
    s: &Scenario,
    traffic: (f64, f64),
    minutes: usize,
    error_cv: f64,
) -> Vec<[(ArmSample, f64); 2]> {
    simulate_with_truth(rng, s, traffic, minutes, error_cv).0
}

/// `E[min(rate·G, 1)]` for the minute's noise `G` (gamma, mean 1, shape
/// `k`): an arm-minute's expected 5xx rate once capped at every request
/// failing (it matters in shared incidents at high rates). Exact for a
/// whole `k` (the benchmark's CV 0.5 gives 4); otherwise `rate`, capped.
fn clipped_rate(rate: f64, k: f64) -> f64 {
    if rate <= 0.0 || !k.is_finite() || (k - k.round()).abs() > 1e-9 || k < 1.0 {
        return rate.min(1.0);
    }
    let x = 1.0 / rate;
    // P(Gamma(n, rate k) < x) for a whole n: 1 − e^{−kx} Σ_{i<n} (kx)^i/i!.
    let below = |n: u32| {
        let (mut term, mut sum) = (1.0, 0.0);
        for i in 0..n {
            if i > 0 {
                term *= k * x / f64::from(i);
            }
            sum += term;
        }
        1.0 - (-k * x).exp() * sum
    };
    let n = k.round() as u32;
    // E[G·1{G<x}] is P(Gamma(n+1, rate k) < x), as k·x·f_n(x) = n·f_{n+1}(x).
    rate * below(n + 1) + (1.0 - below(n))
}

/// One minute of both arms: (stable, canary), each with its p99.
pub(crate) type ArmMinutes = [(ArmSample, f64); 2];

/// A minute as the judge reads it with the Average (the samples carry it).
pub(crate) fn interval([(stable, _), (canary, _)]: &ArmMinutes) -> IntervalMetrics {
    IntervalMetrics {
        stable: *stable,
        canary: *canary,
        custom: Vec::new(),
        merged: 0,
    }
}

/// [`simulate`], with each arm-minute's expected 5xx count given its
/// requests (its error rate, shared incidents included and capped at every
/// request failing, times its requests; a host's bursts, [`HOST_BURST`],
/// are not counted): what a run's true 5xx effect is computed from.
fn simulate_with_truth(
    rng: &mut Rng,
    s: &Scenario,
    (rps, share): (f64, f64),
    minutes: usize,
    error_cv: f64,
) -> (Vec<ArmMinutes>, Vec<[f64; 2]>) {
    let mut expected = Vec::with_capacity(minutes);
    let phase = rng.uniform() * 1440.0;
    let mut incident_left = 0usize;
    let (mut inc_err, mut inc_lat) = (1.0, 1.0);
    let mut out: Vec<[(ArmSample, f64); 2]> = Vec::with_capacity(minutes);
    for m in 0..minutes {
        let t = phase + m as f64;
        let diurnal = 1.0 + 0.3 * (2.0 * std::f64::consts::PI * t / 1440.0).sin();
        let burst = if rng.uniform() < 0.05 {
            2.0 + 2.0 * rng.uniform()
        } else {
            1.0
        };
        if incident_left == 0 && rng.uniform() < 0.03 {
            incident_left = 2 + (rng.uniform() * 4.0) as usize;
            inc_err = 5.0 + 15.0 * rng.uniform();
            inc_lat = 1.5 + 1.5 * rng.uniform();
        }
        let (e_mult, l_mult) = if incident_left > 0 {
            incident_left -= 1;
            (inc_err, inc_lat)
        } else {
            (1.0, 1.0)
        };
        let latency =
            BASE_LATENCY * (1.0 + 0.2 * (2.0 * std::f64::consts::PI * t / 1440.0).cos()) * l_mult;
        let total = rps * diurnal * burst;
        let active = m >= s.from;
        let (host_err, host_lat) = if s.bad_host && rng.uniform() < BAD_HOST.0 {
            ((2.0 + BAD_HOST.1) / 3.0, (2.0 + BAD_HOST.2) / 3.0)
        } else {
            (1.0, 1.0)
        };
        let stable = Conditions {
            rate_rps: total * (1.0 - share),
            error_rate: BASE_ERROR_RATE * e_mult,
            latency_mean: latency,
            tail: 1.0,
        };
        let canary = Conditions {
            rate_rps: total * share,
            error_rate: BASE_ERROR_RATE * e_mult * host_err * if active { s.errors } else { 1.0 },
            latency_mean: latency * host_lat * if active { s.latency_avg } else { 1.0 },
            tail: if active {
                s.latency_p99 / s.latency_avg
            } else {
                1.0
            },
        };
        let pair = [
            arm_minute(rng, stable, error_cv),
            arm_minute(rng, canary, error_cv),
        ];
        let k = 1.0 / (error_cv * error_cv);
        let exp = |(a, _): &(ArmSample, f64), c: &Conditions| {
            a.requests
                .map_or(0.0, |n| n * clipped_rate(c.error_rate, k))
        };
        expected.push([exp(&pair[0], &stable), exp(&pair[1], &canary)]);
        out.push(pair);
    }
    (out, expected)
}

/// The seed's rule exactly as written: 5xx *counts* and mean latency.
fn seed_counts(w: &IntervalMetrics) -> Verdict {
    let (Some(ns), Some(nc)) = (w.stable.requests, w.canary.requests) else {
        return Verdict::Inconclusive;
    };
    if ns < 50.0 || nc < 50.0 {
        return Verdict::Inconclusive;
    }
    let es = w.stable.errors.unwrap_or(0.0);
    let ec = w.canary.errors.unwrap_or(0.0);
    let (Some(ls), Some(lc)) = (w.stable.latency, w.canary.latency) else {
        return Verdict::Inconclusive;
    };
    if ec > 1.5 * es || lc > 1.1 * ls {
        Verdict::Fail
    } else {
        Verdict::Pass
    }
}

#[derive(Debug, Default, Clone)]
struct Tally {
    runs: u64,
    rolled_back: u64,
    /// Minutes of bad data until the rollback, per detected run.
    minutes: Vec<u32>,
    /// Canary requests served while bad, until the rollback.
    exposed: Vec<f64>,
    /// Rolled back before a mid-run regression began: false rollbacks.
    early: u64,
    /// Runs where the canary serves at least 300 requests a minute, and
    /// those of them decided in the first full interval after the onset.
    runs_300: u64,
    first_300: u64,
}

/// Stable's hour before the run at all the traffic (the same world: drift,
/// bursts, incidents, the same wander), and the 5xx CV the sequential
/// judge learns from it, as the daemon does at a run's start.
fn hour_before(rng: &mut Rng, rps: f64, error_cv: f64) -> Option<f64> {
    let calm = &SCENARIOS[0];
    let hour = simulate(rng, calm, (rps, 0.0), 60, error_cv);
    rollout_analysis::noise::stable_error_cv(hour.iter().map(|[(s, _), _]| s)).0
}

fn decide(
    name: JudgeName,
    run: &[[(ArmSample, f64); 2]],
    p99: bool,
    learnt: Option<f64>,
) -> Option<usize> {
    let kind = match name {
        JudgeName::SeedRates => JudgeKind::Threshold,
        JudgeName::MannWhitneyFixed | JudgeName::MannWhitneyEveryMinute => JudgeKind::MannWhitney,
        _ => JudgeKind::Sequential,
    };
    let spec = template(kind, p99);
    let history: Vec<IntervalMetrics> = run
        .iter()
        .map(|[(s, sp), (c, cp)]| {
            let pick = |a: &ArmSample, p: f64| ArmSample {
                latency: if p99 {
                    a.requests.map(|_| p)
                } else {
                    a.latency
                },
                ..*a
            };
            IntervalMetrics {
                stable: pick(s, *sp),
                canary: pick(c, *cp),
                custom: Vec::new(),
                merged: 0,
            }
        })
        .collect();
    match name {
        JudgeName::SeedCounts => history.iter().position(|w| seed_counts(w) == Verdict::Fail),
        JudgeName::MannWhitneyFixed => {
            (judge(&spec, &history).verdict == Verdict::Fail).then_some(history.len() - 1)
        }
        JudgeName::Sequential => (0..history.len())
            .find(|&i| judge_learnt(&spec, learnt, &history[..=i]).verdict == Verdict::Fail),
        _ => (0..history.len()).find(|&i| judge(&spec, &history[..=i]).verdict == Verdict::Fail),
    }
}

struct Args {
    runs: u64,
    seed: u64,
    minutes: usize,
    error_cv: f64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        runs: 40,
        seed: 1,
        minutes: 30,
        error_cv: 0.5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--minutes" => a.minutes = value()?.parse().map_err(|e| format!("--minutes: {e}"))?,
            "--error-cv" => a.error_cv = value()?.parse().map_err(|e| format!("--error-cv: {e}"))?,
            other => return Err(format!("unknown argument {other}; usage: judge-bench [--runs N] [--seed S] [--minutes M] [--error-cv C]")),
        }
    }
    if !(0.0..=3.0).contains(&a.error_cv) {
        return Err("--error-cv must be between 0 and 3".into());
    }
    if a.minutes < 12 {
        return Err("--minutes must be at least 12 (regressions start at minute 10)".into());
    }
    Ok(a)
}

/// (judge, scenario index, showable) -> tally
type Tallies = BTreeMap<(JudgeName, usize, bool), Tally>;

/// A mode's flags (`--runs`, `--seed` and `extra`), each with a value.
struct ModeFlags(BTreeMap<String, String>);

impl ModeFlags {
    /// `--runs` (default `runs`) and `--seed` of a mode that takes nothing
    /// else; a mistake is printed, and the exit code to leave with given.
    fn runs_and_seed(
        rest: &[String],
        mode: &str,
        runs: u64,
    ) -> Result<(u64, u64), std::process::ExitCode> {
        let read = || -> Result<(u64, u64), String> {
            let f = ModeFlags::parse(rest, mode, &[])?;
            Ok((f.get("--runs", runs)?, f.get("--seed", 1)?))
        };
        read().map_err(|e| {
            eprintln!("{e}");
            std::process::ExitCode::from(2)
        })
    }

    fn parse(rest: &[String], mode: &str, extra: &[&str]) -> Result<ModeFlags, String> {
        let mut out = BTreeMap::new();
        let mut it = rest.iter();
        while let Some(flag) = it.next() {
            let known =
                ["--runs", "--seed"].contains(&flag.as_str()) || extra.contains(&flag.as_str());
            if !known {
                let more: String = extra.iter().map(|e| format!(" [{e} V]")).collect();
                return Err(format!(
                    "unknown argument {flag}; usage: judge-bench {mode} [--runs N] [--seed S]{more}"
                ));
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            out.insert(flag.clone(), value.clone());
        }
        Ok(ModeFlags(out))
    }

    /// The flag's value, or `default`.
    fn get<T: std::str::FromStr>(&self, flag: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        self.0.get(flag).map_or(Ok(default), |v| {
            v.parse().map_err(|e| format!("{flag}: {e}"))
        })
    }
}

fn main() -> std::process::ExitCode {
    let all: Vec<String> = std::env::args().skip(1).collect();
    match all.first().map(String::as_str) {
        Some("pacing") => return pacing::main(&all[1..]),
        Some("coverage") => return coverage::main(&all[1..]),
        Some("improvement") => return improvement::main(&all[1..]),
        Some("report-time") => return report_time::main(&all[1..]),
        _ => {}
    }
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let tallies = run_all(&a);
    println!(
        "judge-bench --runs {} --seed {} --minutes {} --error-cv {}: {} runs per scenario ({} traffic levels × {} canary shares × {}), α = 1%, maxIncrease 50% (5xx) and 10% (latency), minRequests 50, failureLimit 0\n",
        a.runs,
        a.seed,
        a.minutes,
        a.error_cv,
        a.runs * (TRAFFIC.len() * SHARES.len()) as u64,
        TRAFFIC.len(),
        SHARES.len(),
        a.runs
    );
    for name in JudgeName::ALL {
        println!("### {}\n", name.title());
        tables::print_good(&tallies, name);
        tables::print_bad(&tallies, name);
    }
    std::process::ExitCode::SUCCESS
}

/// Every scenario at every traffic level and canary share, `a.runs` times,
/// judged by every judge.
fn run_all(a: &Args) -> Tallies {
    let mut tallies: Tallies = BTreeMap::new();
    let mut rng = Rng::new(a.seed);
    for (si, s) in SCENARIOS.iter().enumerate() {
        for &rps in &TRAFFIC {
            for &share in &SHARES {
                let showable = rps * share * 60.0 >= 100.0;
                let busy = rps * share * 60.0 >= 300.0;
                for _ in 0..a.runs {
                    let learnt = hour_before(&mut rng, rps, a.error_cv);
                    let run = simulate(&mut rng, s, (rps, share), a.minutes, a.error_cv);
                    for name in JudgeName::ALL {
                        let t = tallies.entry((name, si, showable)).or_default();
                        t.runs += 1;
                        t.runs_300 += u64::from(busy);
                        let at = decide(name, &run, s.p99, learnt);
                        t.first_300 += u64::from(busy && at == Some(s.from));
                        match at {
                            Some(_) if s.good => t.rolled_back += 1,
                            Some(at) if at >= s.from => {
                                t.rolled_back += 1;
                                t.minutes.push((at + 1 - s.from) as u32);
                                let exposed: f64 = run[s.from..=at]
                                    .iter()
                                    .filter_map(|m| m[1].0.requests)
                                    .sum();
                                t.exposed.push(exposed);
                            }
                            // Rolled back before the regression began: a false rollback.
                            Some(_) => t.early += 1,
                            None => {}
                        }
                    }
                }
            }
        }
    }
    tallies
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capped expected rate agrees with sampling the benchmark's own
    /// noise (shape 4) and capping each draw.
    #[test]
    fn clipped_rate_matches_sampling() {
        let mut rng = Rng::new(5);
        for rate in [0.002, 0.2, 0.5, 0.8, 1.5] {
            let n = 200_000;
            let sampled = (0..n)
                .map(|_| (rate * rng.gamma_mean_one(4.0)).min(1.0))
                .sum::<f64>()
                / f64::from(n);
            let exact = clipped_rate(rate, 4.0);
            assert!(
                (sampled / exact - 1.0).abs() < 0.01,
                "{rate}: {sampled} vs {exact}"
            );
        }
        assert_eq!(clipped_rate(0.3, 2.5), 0.3);
    }
}
