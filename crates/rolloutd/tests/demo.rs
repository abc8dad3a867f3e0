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

/// `rolloutd demo | head -1`: once the reader has gone, the demo ends
/// quietly with 0. Before, the next line of output panicked (in the main
/// thread, or in the progress printer's task while the demo kept running).
#[test]
fn the_demo_ends_quietly_when_its_reader_stops() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let port = support::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolloutd"))
        .arg("demo")
        .env("ROLLOUTD_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("ROLLOUTD_CONFIG")
        .env_remove("ROLLOUTD_SIMULATE_WORLD")
        .env_remove("ROLLOUTD_DATABASE_URL")
        .env("ROLLOUTD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rolloutd demo");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a line");
    assert!(first.contains("SIMULATED"), "{first}");
    // The reader is gone: the pipe is closed.
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stderr}");
}
