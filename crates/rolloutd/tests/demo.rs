//! The README's first command, `rolloutd demo`, as a new user runs it: no
//! database server, no AWS, no configuration. Within a time limit the good
//! rollout ends `Succeeded` and the bad one `RolledBack`, seen through the
//! API the demo keeps up; the output says the world is simulated.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;

fn phase(base: &str, name: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    agent
        .get(format!("{base}/api/v1/rollouts/{name}"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["status"]["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn the_demo_runs_a_good_and_a_bad_canary_to_their_end() {
    let mut demo = support::start_demo(None);
    let base = demo.base.clone();
    let t = Instant::now();
    let limit = Duration::from_secs(240);
    let (mut good, mut bad) = (String::new(), String::new());
    while t.elapsed() < limit {
        good = phase(&base, "storefront");
        bad = phase(&base, "payments");
        if good == "Succeeded" && bad == "RolledBack" {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Let the progress printer catch up before reading what it said.
    std::thread::sleep(Duration::from_millis(1_500));
    let _ = demo.child.kill();
    let _ = demo.child.wait();
    let printed = demo.printed();
    assert_eq!(
        (good.as_str(), bad.as_str()),
        ("Succeeded", "RolledBack"),
        "after {:?}:\n{printed}",
        t.elapsed()
    );
    assert!(printed.contains("SIMULATED"), "{printed}");
    assert!(printed.contains("no AWS calls"), "{printed}");
    assert!(
        printed.contains("payments: analysis"),
        "the rollback's reason is shown:\n{printed}"
    );
    assert!(printed.contains("Done in"), "{printed}");
}
