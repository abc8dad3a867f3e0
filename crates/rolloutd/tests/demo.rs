//! The README's first command, `rolloutd demo`, as a new user runs it: no
//! database server, no AWS, no configuration. Within a time limit the good
//! rollout ends `Succeeded` and the bad one `RolledBack`, seen through the
//! API the demo keeps up; the output says the world is simulated.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolloutd"))
        .arg("demo")
        .env("ROLLOUTD_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("ROLLOUTD_DATABASE_URL")
        .env_remove("ROLLOUTD_CONFIG")
        .env_remove("ROLLOUTD_SIMULATE_WORLD")
        .env("ROLLOUTD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("rolloutd demo");
    let out = Arc::new(Mutex::new(String::new()));
    {
        let out = Arc::clone(&out);
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut o) = out.lock() {
                    o.push_str(&line);
                    o.push('\n');
                }
            }
        });
    }
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
    let _ = child.kill();
    let _ = child.wait();
    let printed = out.lock().map(|o| o.clone()).unwrap_or_default();
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
