//! `rolloutd demo`: the daemon's real loop, store and API, against a
//! simulated ALB and CloudWatch in memory (`rollout_sim::memory`, which
//! implements the same ports as the AWS adapters: the engine takes no
//! special path). It applies `docs/examples/demo.yaml` (a healthy canary and
//! one whose 5xx rate climbs) and prints what happens, line by line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rollout_api::println;
use rollout_core::RolloutStatus;
use rollout_sim::memory::{MemoryWorld, Target};
use rollout_sim::ArmBehaviour;
use rollout_spec::SpecSet;
use rollout_store::{Store, StoredRollout};

/// The demo's specs (checked by `rolloutctl validate` with the other docs).
pub const SPECS: &str = include_str!("../../../docs/examples/demo.yaml");
/// The rollout whose canary is healthy.
pub const GOOD: &str = "storefront";
/// The rollout whose canary's 5xx rate climbs.
pub const BAD: &str = "payments";
/// Requests per second each simulated load balancer serves.
pub const RPS: f64 = 2_000.0;

/// The demo's built-in specs do not parse (a bug of this build).
#[derive(Debug, thiserror::Error)]
#[error("the demo specs are invalid: {0}")]
pub struct InvalidDemoSpecs(String);

/// Parses the demo specs.
pub fn specs() -> Result<SpecSet, InvalidDemoSpecs> {
    let mut set = SpecSet::default();
    let mut diags = Vec::new();
    rollout_spec::parse_source("docs/examples/demo.yaml", SPECS, &mut set, &mut diags);
    if !diags.is_empty() {
        return Err(InvalidDemoSpecs(
            diags
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    Ok(set)
}

/// The simulated world of the demo.
pub fn world(set: &SpecSet, clock: fn() -> rollout_core::Time) -> Arc<MemoryWorld> {
    let world = Arc::new(MemoryWorld::new(RPS, clock));
    for r in &set.rollouts {
        for tg in [&r.value.spec.stable, &r.value.spec.canary] {
            world.set_target(tg.target_group_arn.as_str(), Target::default());
        }
    }
    world
}

/// The bad canary's 5xx rate `secs` seconds into the demo: healthy (0.2%)
/// for 10 s, then one point more every 2 s, up to 10%.
pub fn climbing_error_rate(secs: f64) -> f64 {
    let base = ArmBehaviour::HEALTHY.error_rate;
    if secs <= 10.0 {
        base
    } else {
        (base + 0.01 * ((secs - 10.0) / 2.0).floor()).min(0.10)
    }
}

/// Makes the bad canary's 5xx rate climb, every second, forever.
pub fn spawn_regression(world: Arc<MemoryWorld>, set: &SpecSet) {
    let Some(bad) = set
        .rollouts
        .iter()
        .find(|r| r.value.metadata.name.as_str() == BAD)
    else {
        return;
    };
    let tg = bad.value.spec.canary.target_group_arn.to_string();
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        loop {
            let secs = start.elapsed().as_secs_f64();
            world.set_target(
                &tg,
                Target {
                    behaviour: ArmBehaviour {
                        error_rate: climbing_error_rate(secs),
                        ..ArmBehaviour::HEALTHY
                    },
                    ..Target::default()
                },
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// One line about a rollout's state, for the terminal.
pub fn line(r: &StoredRollout, st: &RolloutStatus) -> String {
    let steps = r
        .rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .map_or(0, |c| c.steps.len());
    let verdict = st
        .analysis
        .templates
        .values()
        .filter_map(|t| t.last.as_ref())
        .max_by_key(|l| l.end)
        .map(|l| {
            let arms: Vec<String> = l
                .result
                .metrics
                .iter()
                .map(|m| {
                    let v = |x: Option<f64>| match (m.metric.as_str(), x) {
                        ("errorRate", Some(x)) => format!("{:.2}%", x * 100.0),
                        ("latency", Some(x)) => format!("{:.0}ms", x * 1000.0),
                        (_, Some(x)) => format!("{x:.3}"),
                        (_, None) => "-".to_string(),
                    };
                    format!(
                        "{} {} canary {} vs stable {}",
                        m.metric,
                        m.verdict.as_str(),
                        v(m.canary),
                        v(m.stable)
                    )
                })
                .collect();
            format!("  {}: {}", l.result.verdict.as_str(), arms.join("; "))
        })
        .unwrap_or_default();
    let bar_len = usize::from(st.canary_weight) / 5;
    format!(
        "{:<11} {:<11} step {}/{}  canary {:>3}% [{:<20}]{}",
        r.rollout.metadata.name.as_str(),
        format!("{:?}", st.phase),
        (st.current_step_index as usize + 1).min(steps.max(1)),
        steps,
        st.canary_weight,
        "#".repeat(bar_len),
        verdict
    )
}

/// Prints a line whenever a rollout's phase, step, weight or latest verdict
/// changes, and the reason when a run ends; says once when all have ended.
pub fn spawn_progress(store: Store, base: String) {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut last: HashMap<String, String> = HashMap::new();
        let mut done = false;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok(all) = store.rollouts().await else {
                continue;
            };
            let mut finished = 0;
            for r in &all {
                let Some(st) = &r.status else { continue };
                let text = line(r, st);
                let name = r.rollout.metadata.name.to_string();
                if last.get(&name) != Some(&text) {
                    println!("[{:>4}s] {text}", start.elapsed().as_secs());
                    if st.phase.is_terminal() {
                        println!("        {name}: {}", st.message);
                    }
                    last.insert(name, text);
                }
                if st.phase.is_terminal() {
                    finished += 1;
                }
            }
            if !done && finished == all.len() && !all.is_empty() {
                done = true;
                let phase = |n: &str| {
                    all.iter()
                        .find(|r| r.rollout.metadata.name.as_str() == n)
                        .and_then(|r| r.status.as_ref())
                        .map(|s| format!("{:?}", s.phase))
                        .unwrap_or_default()
                };
                println!();
                println!(
                    "Done in {} s: {GOOD} {}, {BAD} {}.",
                    start.elapsed().as_secs(),
                    phase(GOOD),
                    phase(BAD)
                );
                println!("The API and the dashboard stay up at {base}/ until Ctrl-C. Try, in another terminal:");
                println!("    cargo run --bin rolloutctl -- --server {base} get");
                println!("    cargo run --bin rolloutctl -- --server {base} status {BAD}");
                println!("    curl -s {base}/api/v1/rollouts/{BAD}/events");
                println!("    curl -s {base}/metrics | grep rolloutd_rollout");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_parse_and_name_both_rollouts() {
        let set = specs().expect("valid");
        let names: Vec<&str> = set
            .rollouts
            .iter()
            .map(|r| r.value.metadata.name.as_str())
            .collect();
        assert_eq!(names, vec![GOOD, BAD]);
    }

    #[test]
    fn the_error_rate_climbs_to_ten_percent() {
        assert_eq!(climbing_error_rate(0.0), ArmBehaviour::HEALTHY.error_rate);
        assert!(climbing_error_rate(20.0) > 0.04);
        assert_eq!(climbing_error_rate(600.0), 0.10);
    }
}
