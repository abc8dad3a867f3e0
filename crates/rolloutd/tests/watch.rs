//! The live streams (issue 18): `GET /api/v1/watch` and
//! `/api/v1/rollouts/{name}/watch` as server-sent events, from the real
//! binary on a simulated load balancer: a snapshot first, then each status
//! change, event and deletion as it is written; tokens as for every read;
//! and `rolloutctl status --watch` following the same stream.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{next_event, post, post_with_token, start_simulated, watch, work_dir};

const SPEC: &str = "apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {name: NAME}
spec:
  revision: \"r1\"
  trafficRouting:
    alb:
      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/LISTENER
  stable: {targetGroupArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue/73e2d6bc24d8a067}
  canary: {targetGroupArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green/0f2a6b1c9d8e7f60}
  strategy:
    canary:
      steps: STEPS
";

fn spec(name: &str, listener: &str, steps: &str) -> String {
    SPEC.replace("NAME", name)
        .replace("LISTENER", listener)
        .replace("STEPS", steps)
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn the_stream_sends_a_snapshot_then_every_change_event_and_deletion() {
    let dir = work_dir("watch-all");
    let d = start_simulated(&dir, &[]);
    let all = watch(&d.base, "/api/v1/watch", None);
    let snapshot = next_event(&all, 10 * SECOND, "a snapshot first", |k, _| {
        k == "snapshot"
    });
    assert_eq!(snapshot["items"], Value::Array(vec![]), "{snapshot}");

    let (code, body) = post(
        &d,
        "/api/v1/apply",
        &spec(
            "web",
            "aaaaaaaaaaaaaaaa",
            "[{setWeight: 10}, {pause: {duration: 1h}}, {setWeight: 100}]",
        ),
    );
    assert_eq!(code, 200, "{body}");
    let r = next_event(&all, 10 * SECOND, "the rollout at 10%", |k, v| {
        k == "rollout" && v["metadata"]["name"] == "web" && v["status"]["canaryWeight"] == 10
    });
    assert_eq!(r["status"]["phase"], "Progressing", "{r}");
    let e = next_event(&all, 10 * SECOND, "its events", |k, v| {
        k == "event" && v["kind"] == "WeightVerified"
    });
    assert_eq!(e["rollout"], "web");
    assert!(e["id"].as_i64().is_some_and(|id| id > 0), "{e}");

    // One rollout's stream: its resource and events so far, then changes.
    let one = watch(&d.base, "/api/v1/rollouts/web/watch", None);
    let snap = next_event(&one, 10 * SECOND, "the rollout's snapshot", |k, _| {
        k == "snapshot"
    });
    assert_eq!(snap["rollout"]["metadata"]["name"], "web");
    let kinds: Vec<&str> = snap["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        kinds.contains(&"RunStarted") && kinds.contains(&"WeightVerified"),
        "{kinds:?}"
    );
    let t = Instant::now();
    let (code, body) = post(
        &d,
        "/api/v1/rollouts/web/pause",
        "{\"reason\": \"look first\"}",
    );
    assert_eq!(code, 202, "{body}");
    next_event(
        &one,
        5 * SECOND,
        "paused, on the rollout's stream",
        |k, v| k == "rollout" && v["status"]["phase"] == "Paused",
    );
    let took = t.elapsed();
    println!("pause accepted -> stream shows Paused: {took:?}");
    assert!(
        took < SECOND,
        "the change reached the stream after {took:?}"
    );
    next_event(
        &all,
        5 * SECOND,
        "paused, on every rollout's stream",
        |k, v| k == "rollout" && v["status"]["phase"] == "Paused",
    );

    // A second rollout appears; an orphan delete removes the first.
    let (code, body) = post(
        &d,
        "/api/v1/apply",
        &spec("api", "bbbbbbbbbbbbbbbb", "[{setWeight: 100}]"),
    );
    assert_eq!(code, 200, "{body}");
    next_event(&all, 10 * SECOND, "the new rollout", |k, v| {
        k == "rollout" && v["metadata"]["name"] == "api"
    });
    let (code, body) = support::delete(&d, "/api/v1/rollouts/web?orphan=true");
    assert_eq!(code, 200, "{body}");
    next_event(&all, 10 * SECOND, "the deletion", |k, v| {
        k == "deleted" && v["name"] == "web"
    });
    next_event(
        &one,
        10 * SECOND,
        "the deletion, on its own stream",
        |k, v| k == "deleted" && v["name"] == "web",
    );
    // An unknown rollout has no stream.
    let none = watch(&d.base, "/api/v1/rollouts/nobody/watch", None);
    let code = next_event(&none, 10 * SECOND, "404", |k, _| k == "status");
    assert_eq!(code, 404);
}

fn rolloutctl() -> std::path::PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rolloutd")).with_file_name("rolloutctl")
}

#[test]
fn streams_need_a_token_as_every_read_and_whoami_says_what_one_may_do() {
    let dir = work_dir("watch-tokens");
    let write = dir.join("write");
    let read = dir.join("read");
    std::fs::write(&write, "watch-write-token-0123456789").expect("token");
    std::fs::write(&read, "watch-read-token-0123456789").expect("token");
    let d = start_simulated(
        &dir,
        &[
            "--api-token-file",
            &write.display().to_string(),
            "--api-read-token-file",
            &read.display().to_string(),
        ],
    );
    let refused = watch(&d.base, "/api/v1/watch", None);
    assert_eq!(
        next_event(&refused, 10 * SECOND, "401", |k, _| k == "status"),
        401
    );
    let wrong = watch(&d.base, "/api/v1/watch", Some("not-the-token"));
    assert_eq!(
        next_event(&wrong, 10 * SECOND, "401", |k, _| k == "status"),
        401
    );
    let ok = watch(
        &d.base,
        "/api/v1/watch",
        Some("watch-read-token-0123456789"),
    );
    next_event(
        &ok,
        10 * SECOND,
        "a snapshot with the read token",
        |k, _| k == "snapshot",
    );

    let whoami = |token: &str| -> Value {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(format!("{}/api/v1/whoami", d.base))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .expect("whoami");
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json")
    };
    let ro = whoami("watch-read-token-0123456789");
    assert_eq!(
        (ro["tokens"].clone(), ro["canChange"].clone()),
        (true.into(), false.into()),
        "{ro}"
    );
    let rw = whoami("watch-write-token-0123456789");
    assert_eq!(rw["canChange"], true, "{rw}");

    // `rolloutctl status --watch` follows the stream to the run's end.
    let (code, body) = post_with_token(
        &d,
        "/api/v1/apply",
        &spec(
            "shop",
            "cccccccccccccccc",
            "[{setWeight: 20}, {pause: {duration: 2s}}, {setWeight: 100}]",
        ),
        "watch-write-token-0123456789",
    );
    assert_eq!(code, 200, "{body}");
    let out = Command::new(rolloutctl())
        .args(["--server", &d.base, "status", "shop", "--watch"])
        .env("ROLLOUTD_TOKEN", "watch-read-token-0123456789")
        .output()
        .expect("rolloutctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phases: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("phase: ")
                .or_else(|| l.split("phase ").nth(1))
        })
        .collect();
    assert!(text.contains("Succeeded"), "{text}");
    assert!(
        text.contains("20%") || text.contains("canary 20"),
        "each change shown: {text}\n{phases:?}"
    );
}

#[test]
fn an_open_stream_does_not_hold_up_sigterm() {
    let dir = work_dir("watch-sigterm");
    let mut d = start_simulated(&dir, &[]);
    let stream = watch(&d.base, "/api/v1/watch", None);
    next_event(&stream, 10 * SECOND, "a snapshot", |k, _| k == "snapshot");
    let (status, took) = support::sigterm(&mut d.child, Duration::from_secs(20));
    println!("SIGTERM with a stream open: exited after {took:?} ({status})");
    assert!(status.success(), "{status}");
    // The shutdown grace is 10 s: the stream is ended, not waited out.
    assert!(took < Duration::from_secs(5), "{took:?}");
}
