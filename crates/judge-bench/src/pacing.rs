//! `judge-bench pacing`: fixed pauses against evidence-driven pauses, each
//! run through the real decision core (the simulator's `Harness`: the
//! daemon's plan/decide loop over an in-memory load balancer and
//! CloudWatch with a fake clock).
//!
//! Usage: `cargo run --release -p judge-bench -- pacing [--runs N] [--seed S] [--error-cv C]`
//!
//! The schedule is 5/10/25/50/100 with a pause after each of the first
//! four steps: `{duration: 5m}` (fixed) or `{duration: 5m, minimum: 1m}`
//! (paced). Traffic gives the canary 300, 1,000 or 3,000 requests a minute
//! at 5%. Each arm's 5xx rate wanders from minute to minute on its own (CV
//! `--error-cv`, 0.5 by default, as in the judges' benchmark) around 0.2%,
//! and its latency by 3% (a host's bad minute), around 50 ms. Two
//! templates, both α = 1%, latency Average within +10%: 5xx within +50% of
//! stable's rate (`relative`), or 5xx under a 1% ceiling (`ceiling`).
//!
//! Per scenario it prints: for good canaries the median time from the
//! run's start to 100% and the share that did not finish; for bad ones the
//! share that reached 100% and the canary requests served while bad over
//! the first 40 minutes (a canary that reached 100% serves everything
//! until then).

use rollout_core::Phase;
use rollout_sim::{ArmBehaviour, Harness, EPOCH};

const TEMPLATES: [(&str, &str); 2] = [
    ("relative", "errorRate: {maxIncrease: 50%}"),
    ("ceiling", "errorRate: {maxRate: 1%}"),
];
/// Canary requests a minute at 5%.
const CANARY_PER_MINUTE: [f64; 3] = [300.0, 1000.0, 3000.0];
const MINUTE: u64 = 60_000;
/// Exposure is counted over this much of each run.
const HORIZON: u64 = 40 * MINUTE;

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    good: bool,
    errors: f64,
    latency: f64,
    from_minute: u64,
}

const fn sc(name: &'static str, good: bool, errors: f64, latency: f64) -> Scenario {
    Scenario {
        name,
        good,
        errors,
        latency,
        from_minute: 0,
    }
}

const SCENARIOS: [Scenario; 9] = [
    sc("identical arms", true, 1.0, 1.0),
    sc("better (5xx ×0.5, latency ×0.9)", true, 0.5, 0.9),
    sc(
        "within tolerance (5xx ×1.3, latency ×1.05)",
        true,
        1.3,
        1.05,
    ),
    sc("5xx ×3", false, 3.0, 1.0),
    sc("5xx ×10", false, 10.0, 1.0),
    sc("latency ×1.3", false, 1.0, 1.3),
    sc("latency ×2.0", false, 1.0, 2.0),
    Scenario {
        from_minute: 8,
        ..sc("5xx ×10 from minute 8", false, 10.0, 1.0)
    },
    Scenario {
        from_minute: 8,
        ..sc("latency ×1.6 from minute 8", false, 1.0, 1.6)
    },
];

fn spec(errors: &str, paced: bool) -> String {
    let pause = if paced {
        "{duration: 5m, minimum: 1m}"
    } else {
        "{duration: 5m}"
    };
    format!(
        r#"
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {{name: bench}}
spec:
  revision: "r1"
  trafficRouting:
    alb:
      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2
  stable: {{targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-blue/73e2d6bc24d8a067"}}
  canary: {{targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-green/0f2a6b1c9d8e7f60"}}
  strategy:
    canary:
      steps:
        - setWeight: 5
        - pause: {pause}
        - setWeight: 10
        - pause: {pause}
        - setWeight: 25
        - pause: {pause}
        - setWeight: 50
        - pause: {pause}
        - setWeight: 100
  analysis:
    interval: 1m
    templates: [t]
---
apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: t}}
spec:
  alb:
    period: 60s
    delay: 60s
    {errors}
    latency: {{statistic: Average, maxIncrease: 10%}}
    minRequests: 50
  failureLimit: 0
  alpha: 1%
"#
    )
}

/// One run's outcome.
struct Outcome {
    /// Milliseconds from the start to 100%, when it got there.
    finished: Option<u64>,
    /// Canary requests served while bad, over the horizon.
    exposed: f64,
}

fn run_one(set: &rollout_spec::SpecSet, s: &Scenario, rps: f64, seed: u64, cv: f64) -> Outcome {
    let mut h = Harness::new(set, seed, rps);
    h.metrics.error_cv = cv;
    h.metrics.latency_noise = 0.03;
    let bad = ArmBehaviour {
        error_rate: ArmBehaviour::HEALTHY.error_rate * s.errors,
        latency: ArmBehaviour::HEALTHY.latency * s.latency,
    };
    let onset = EPOCH.plus_ms(s.from_minute * MINUTE);
    if s.from_minute == 0 {
        h.metrics.canary = bad;
    } else {
        h.metrics.canary_change = Some((onset, bad));
    }
    let done = |h: &Harness| h.phase().is_some_and(Phase::is_terminal);
    h.run_until(HORIZON, done);
    let st = h.status();
    let finished = st
        .as_ref()
        .filter(|st| st.phase == Phase::Succeeded)
        .and_then(|st| Some(st.ended_at?.since(st.started_at?)));
    // Canary requests while bad: its share of traffic over time, from the
    // onset to the horizon (at 100% after a success).
    let end = EPOCH.plus_ms(HORIZON);
    let mut exposed = 0.0;
    for w in h.seen.windows(2) {
        let (a, b) = (w[0].0.max(onset), w[1].0.min(end));
        if b > a {
            exposed += w[0].1 / 100.0 * rps * b.since(a) as f64 / 1000.0;
        }
    }
    if let Some((last, share)) = h.seen.last() {
        let from = (*last).max(onset);
        if end > from {
            exposed += share / 100.0 * rps * end.since(from) as f64 / 1000.0;
        }
    }
    Outcome { finished, exposed }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Parses `--runs`, `--seed`, `--error-cv` after `pacing`.
fn args(rest: &[String]) -> Result<(u64, u64, f64), String> {
    let f = super::ModeFlags::parse(rest, "pacing", &["--error-cv"])?;
    let cv = f.get("--error-cv", 0.5)?;
    if !(0.0..=3.0).contains(&cv) {
        return Err("--error-cv must be between 0 and 3".into());
    }
    Ok((f.get("--runs", 40)?, f.get("--seed", 1)?, cv))
}

/// `judge-bench pacing …`.
pub fn main(rest: &[String]) -> std::process::ExitCode {
    let (runs, seed, cv) = match args(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    println!(
        "judge-bench pacing --runs {runs} --seed {seed} --error-cv {cv}: {runs} runs per scenario, template and traffic level ({} levels); the same seeds for fixed and paced\n",
        CANARY_PER_MINUTE.len()
    );
    for (template, errors) in TEMPLATES {
        let fixed = load(&spec(errors, false));
        let paced = load(&spec(errors, true));
        println!("### template `{template}` ({errors}, latency Average +10%)\n");
        println!("| scenario | canary req/min at 5% | fixed | paced | paced/fixed |");
        println!("|---|---|---|---|---|");
        for s in SCENARIOS {
            for per_minute in CANARY_PER_MINUTE {
                let rps = per_minute / 60.0 / 0.05;
                let (mut f, mut p) = (Vec::new(), Vec::new());
                for i in 0..runs {
                    let run_seed = seed
                        .wrapping_mul(1_000_003)
                        .wrapping_add(i * 7919 + per_minute as u64);
                    f.push(run_one(&fixed, &s, rps, run_seed, cv));
                    p.push(run_one(&paced, &s, rps, run_seed, cv));
                }
                println!(
                    "| {} | {per_minute:.0} | {} | {} | {} |",
                    s.name,
                    cell(&s, &f),
                    cell(&s, &p),
                    ratio(&s, &f, &p)
                );
            }
        }
        println!();
    }
    std::process::ExitCode::SUCCESS
}

fn load(text: &str) -> rollout_spec::SpecSet {
    match rollout_spec::load([("bench.yaml", text)], &[]) {
        Ok(set) => set,
        Err(d) => panic!("the benchmark's own spec is invalid: {d:?}"),
    }
}

/// Good: median minutes to 100% and the share not finished; bad: the share
/// that reached 100% and the median exposure.
fn cell(s: &Scenario, runs: &[Outcome]) -> String {
    let n = runs.len().max(1) as f64;
    let done: Vec<f64> = runs
        .iter()
        .filter_map(|o| o.finished.map(|ms| ms as f64 / 60_000.0))
        .collect();
    if s.good {
        format!(
            "{} min; {:.1}% not finished",
            median(done.clone()).map_or("-".into(), |m| format!("{m:.1}")),
            100.0 * (1.0 - done.len() as f64 / n)
        )
    } else {
        format!(
            "{:.1}% reached 100%; exposure {}",
            100.0 * done.len() as f64 / n,
            median(runs.iter().map(|o| o.exposed).collect())
                .map_or("-".into(), |m| format!("{m:.0}"))
        )
    }
}

fn ratio(s: &Scenario, f: &[Outcome], p: &[Outcome]) -> String {
    let m = |v: &[Outcome]| {
        if s.good {
            median(
                v.iter()
                    .filter_map(|o| o.finished)
                    .map(|x| x as f64)
                    .collect(),
            )
        } else {
            median(v.iter().map(|o| o.exposed).collect())
        }
    };
    match (m(f), m(p)) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:.0}%", 100.0 * b / a),
        _ => "-".into(),
    }
}
