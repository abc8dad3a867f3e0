//! Chaos steps against moto's Fault Injection Service (issue 22): the real
//! binary, the official SDK. Experiments advance by time (moto's state
//! manager), as real ones do. The fault itself is simulated by the test:
//! while the experiment runs, one service's canary answers more 5xx (moto
//! serves no latency percentiles, which rolloutd reads beside the mean, so
//! the fault is in the error rate; the core's tests cover the rest).

mod support;

use std::time::Duration;

use rollout_awskit::alb::{Aws, Publisher};
use rollout_awskit::gateway::Gateway;
use rollout_awskit::moto::Moto;
use serde_json::Value;
use support::{get, post, start_daemon, tail, traffic, until, work_dir, ERRORS_TEMPLATE, GOOD};

/// Targets answering 20% 5xx: the canary under the fault.
const FAULTED: rollout_awskit::alb::Behaviour = rollout_awskit::alb::Behaviour {
    error_rate: 0.20,
    ..GOOD
};

fn chaos_doc(name: &str, svc: &rollout_awskit::alb::Service, template: &str) -> String {
    support::rollout_doc(
        name,
        &format!("listenerArn: {}", svc.listener),
        &svc.stable,
        &svc.canary,
        &format!(
            "[{{setWeight: 20}}, {{pause: {{duration: 4s}}}}, {{chaos: {{experimentTemplateId: {template}, duration: 2m}}}}, {{setWeight: 100}}]"
        ),
        "  progressDeadline: 5m\n  analysis: {interval: 2s, templates: [errors]}\n",
    )
}

fn status(d: &support::Daemon, name: &str) -> Value {
    get(d, &format!("/api/v1/rollouts/{name}")).1["status"].clone()
}

/// The experiment a rollout's status records: (id, state).
fn recorded(d: &support::Daemon, name: &str) -> Option<(String, String)> {
    let c = status(d, name)["chaos"].clone();
    Some((
        c["experimentId"].as_str()?.to_string(),
        c["state"].as_str().unwrap_or("").to_string(),
    ))
}

/// A canary that fails only under the fault is rolled back during the
/// chaos step, with all traffic on stable and its experiment stopped; a
/// canary that holds up passes the step and the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_breaks_under_the_fault_is_rolled_back_and_the_experiment_stopped() {
    let dir = work_dir("chaos");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 1).await.expect("gateway");
    let aws = Aws::new(&gateway.url).await;
    aws.fis_states_last(12)
        .expect("experiments advance by time");
    let net = aws.network().expect("VPC and subnets");
    let fragile = aws.service("fragile", &net, true).await.expect("svc");
    let sturdy = aws.service("sturdy", &net, true).await.expect("svc");
    let az_outage = aws
        .experiment_template("az-outage")
        .await
        .expect("template");
    let publisher = Publisher::start(
        aws.clone(),
        vec![traffic(&fragile, GOOD), traffic(&sturdy, GOOD)],
        22,
    );
    let specs = [
        ERRORS_TEMPLATE.to_string(),
        chaos_doc("fragile", &fragile, &az_outage),
        chaos_doc("sturdy", &sturdy, &az_outage),
    ];
    std::fs::write(dir.join("specs/all.yaml"), specs.join("---\n")).expect("spec");
    let d = start_daemon(&dir, &gateway.url);
    // The fault: while fragile's experiment runs, its canary fails.
    until(
        &d,
        Duration::from_secs(90),
        "fragile's experiment runs",
        || recorded(&d, "fragile").is_some_and(|(_, s)| s == "running"),
    )
    .await;
    publisher.set_behaviour(&fragile.canary, FAULTED);
    let (id, _) = recorded(&d, "fragile").expect("recorded");
    until(&d, Duration::from_secs(60), "fragile rolls back", || {
        status(&d, "fragile")["phase"] == "RolledBack"
    })
    .await;
    let rolled_back_at = std::time::Instant::now();
    assert_eq!(
        aws.weights(&fragile, false).await.expect("weights"),
        (100, 0, 0),
        "all traffic on stable"
    );
    // Stopped within one reconcile (1 s here) of the rollback: FIS says
    // stopping or stopped.
    until(
        &d,
        Duration::from_secs(10),
        "the experiment is stopped",
        || {
            status(&d, "fragile")["chaos"].is_null()
                || recorded(&d, "fragile").is_some_and(|(_, s)| s == "stopping" || s == "stopped")
        },
    )
    .await;
    let took = rolled_back_at.elapsed();
    let listed = aws.experiments(&az_outage).await.expect("list");
    let fis_state = listed
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    assert!(
        fis_state == "stopping" || fis_state == "stopped",
        "FIS: {listed:?}\n{}",
        tail(&d.log)
    );
    eprintln!("rolled back; experiment {id} {fis_state} {took:?} later");
    publisher.set_behaviour(&fragile.canary, GOOD);
    let s = status(&d, "fragile");
    assert!(
        s["message"].as_str().unwrap_or("").contains("error rate"),
        "{s}"
    );
    // The sturdy canary held up under its own experiment: the step passed.
    until(&d, Duration::from_secs(120), "sturdy succeeds", || {
        status(&d, "sturdy")["phase"] == "Succeeded"
    })
    .await;
    let events = get(&d, "/api/v1/rollouts/sturdy/events").1["items"].clone();
    let text: Vec<String> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "Chaos")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    assert!(
        text.iter()
            .any(|m| m.contains("completed and the canary held against stable under the fault")),
        "{text:#?}"
    );
    // The run report shows the intervals judged during the experiment apart.
    let (code, report) = get(&d, "/api/v1/rollouts/sturdy/runs/1");
    assert_eq!(code, 200, "{report}");
    let during = &report["underChaos"]["errors"]["errorRate"];
    assert!(
        during["canary"].is_number() && during["stable"].is_number(),
        "{report}"
    );
    // Each rollout started exactly one experiment, and none still runs.
    until(
        &d,
        Duration::from_secs(30),
        "fragile's experiment ends",
        || status(&d, "fragile")["chaos"].is_null(),
    )
    .await;
    let listed = aws.experiments(&az_outage).await.expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|(_, s)| s == "stopped" || s == "completed"),
        "{listed:?}"
    );
    assert!(publisher.errors().is_empty(), "{:?}", publisher.errors());
}

/// SIGKILL right after the experiment started: the restarted daemon finds
/// the same experiment (no second one), and an abort then stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sigkill_the_same_experiment_is_adopted_and_an_abort_stops_it() {
    let dir = work_dir("chaos-kill");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 1).await.expect("gateway");
    let aws = Aws::new(&gateway.url).await;
    aws.fis_states_last(30)
        .expect("experiments advance by time");
    let net = aws.network().expect("VPC and subnets");
    let svc = aws.service("killed", &net, true).await.expect("svc");
    let template = aws.experiment_template("killed").await.expect("template");
    let _publisher = Publisher::start(aws.clone(), vec![traffic(&svc, GOOD)], 23);
    let specs = [
        ERRORS_TEMPLATE.to_string(),
        chaos_doc("killed", &svc, &template),
    ];
    std::fs::write(dir.join("specs/all.yaml"), specs.join("---\n")).expect("spec");
    let d = start_daemon(&dir, &gateway.url);
    until(
        &d,
        Duration::from_secs(90),
        "the experiment is started",
        || recorded(&d, "killed").is_some(),
    )
    .await;
    let (id, _) = recorded(&d, "killed").expect("recorded");
    // rolloutctl shows it.
    let ctl = std::path::Path::new(env!("CARGO_BIN_EXE_rolloutd")).with_file_name("rolloutctl");
    assert!(
        ctl.exists(),
        "{} is missing: build the workspace",
        ctl.display()
    );
    let out = std::process::Command::new(&ctl)
        .args(["--server", &d.base, "status", "killed"])
        .output()
        .expect("rolloutctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "chaos: experiment {id} of template {template}: pending"
        )),
        "{text}"
    );
    drop(d); // SIGKILL
    let d = start_daemon(&dir, &gateway.url);
    until(
        &d,
        Duration::from_secs(30),
        "the new process reads it again",
        || {
            let log = std::fs::read_to_string(&d.log).unwrap_or_default();
            log.contains("fault injection")
        },
    )
    .await;
    let listed = aws.experiments(&template).await.expect("list");
    assert_eq!(listed.len(), 1, "adopted, not started again: {listed:?}");
    assert_eq!(recorded(&d, "killed").map(|r| r.0), Some(id.clone()));
    let (code, body) = post(
        &d,
        "/api/v1/rollouts/killed/abort",
        r#"{"reason": "stop the drill"}"#,
    );
    assert_eq!(code, 202, "{body}");
    until(&d, Duration::from_secs(30), "aborted and stopped", || {
        status(&d, "killed")["phase"] == "Aborted"
    })
    .await;
    until(&d, Duration::from_secs(30), "FIS shows it stopping", || {
        futures_state(&aws, &template, &id).is_some_and(|s| s == "stopping" || s == "stopped")
    })
    .await;
    assert_eq!(aws.experiments(&template).await.expect("list").len(), 1);
}

/// One experiment's state, read on a helper runtime (for `until`'s
/// synchronous check).
fn futures_state(aws: &Aws, template: &str, id: &str) -> Option<String> {
    let aws = aws.clone();
    let (template, id) = (template.to_string(), id.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(aws.experiments(&template))
            .ok()?
            .into_iter()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| s)
    })
    .join()
    .ok()
    .flatten()
}
