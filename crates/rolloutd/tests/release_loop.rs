//! The release loop with no hand edits, against moto (the real binary, the
//! official SDK through the CBOR gateway): ping-pong target groups take
//! turns revision after revision while only `revision` changes.

mod support;

use std::time::Duration;

use rollout_awskit::alb::{Aws, Publisher};
use rollout_awskit::gateway::Gateway;
use rollout_awskit::moto::Moto;
use serde_json::Value;
use support::{get, start_daemon, tail, traffic, until, work_dir, BAD, ERRORS_TEMPLATE, GOOD};

fn ping_pong(revision: &str, listener: &str, a: &str, b: &str) -> String {
    format!(
        "{ERRORS_TEMPLATE}---
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {{name: shop}}
spec:
  revision: \"{revision}\"
  trafficRouting: {{alb: {{listenerArn: {listener}}}}}
  targetGroups: [{a}, {b}]
  strategy: {{canary: {{steps: [{{setWeight: 10}}, {{pause: {{duration: 3s}}}}, {{setWeight: 50}}, {{pause: {{duration: 3s}}}}, {{setWeight: 100}}]}}}}
  progressDeadline: 3m
  analysis: {{interval: 2s, templates: [errors]}}
"
    )
}

fn status(d: &support::Daemon) -> Value {
    get(d, "/api/v1/rollouts/shop").1["status"].clone()
}

/// Waits for the run of `revision` to end; its status.
async fn ended(d: &support::Daemon, revision: &str) -> Value {
    until(d, Duration::from_secs(120), revision, || {
        let s = status(d);
        s["revision"] == revision
            && ["Succeeded", "RolledBack", "Aborted", "Failed"]
                .contains(&s["phase"].as_str().unwrap_or(""))
    })
    .await;
    status(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_target_groups_take_turns_with_no_spec_edit() {
    let dir = work_dir("ping-pong");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 1).await.expect("gateway");
    let aws = Aws::new(&gateway.url).await;
    let net = aws.network().expect("VPC and subnets");
    // `stable` of the made service is A (it holds all traffic), `canary` B.
    let svc = aws.service("pingpong", &net, true).await.expect("service");
    let (a, b) = (svc.stable.clone(), svc.canary.clone());
    let publisher = Publisher::start(aws.clone(), vec![traffic(&svc, GOOD)], 11);
    let spec = dir.join("specs/shop.yaml");
    std::fs::write(&spec, ping_pong("v2", &svc.listener, &a, &b)).expect("spec");
    let d = start_daemon(&dir, &gateway.url);

    // (revision, the group it ends on); A is listed first and holds all
    // traffic at the start, so v2 goes into B.
    let mut on = Vec::new();
    for (revision, ends_on) in [("v2", &b), ("v3", &a), ("v4", &b)] {
        if revision != "v2" {
            std::fs::write(&spec, ping_pong(revision, &svc.listener, &a, &b)).expect("spec");
        }
        let s = ended(&d, revision).await;
        assert_eq!(s["phase"], "Succeeded", "{revision}: {s}\n{}", tail(&d.log));
        let (wa, wb, other) = aws.weights(&svc, false).await.expect("weights");
        let holder = if wa == 100 && wb == 0 {
            &a
        } else if wb == 100 && wa == 0 {
            &b
        } else {
            panic!("{revision}: A {wa} B {wb} other {other}")
        };
        assert_eq!(holder, ends_on, "{revision} ends on its canary group");
        // The roles swapped by themselves: the next revision goes into the
        // idle group, which the status names for CI.
        assert_eq!(s["stableTargetGroupArn"], ends_on.as_str());
        assert_ne!(s["canaryTargetGroupArn"], ends_on.as_str());
        on.push((revision, holder == &a));
    }

    // v5's canary (A) answers 10% 5xx: rolled back, B keeps all traffic,
    // and the roles stay (v6 would go into A again).
    publisher.set_behaviour(&a, BAD);
    std::fs::write(&spec, ping_pong("v5", &svc.listener, &a, &b)).expect("spec");
    let s = ended(&d, "v5").await;
    assert_eq!(s["phase"], "RolledBack", "{s}\n{}", tail(&d.log));
    assert_eq!(
        aws.weights(&svc, false).await.expect("weights"),
        (0, 100, 0)
    );
    assert_eq!(s["stableTargetGroupArn"], b.as_str());
    assert_eq!(s["canaryTargetGroupArn"], a.as_str());
    let runs: Vec<String> = s["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{}:{}",
                r["revision"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        runs,
        ["v2:Succeeded", "v3:Succeeded", "v4:Succeeded"],
        "{s}"
    );
    eprintln!("ends on A? {on:?}");
    drop(d);
    drop(publisher);
    drop(moto);
}

fn gated_doc(name: &str, svc: &rollout_awskit::alb::Service, steps: &str, extra: &str) -> String {
    support::rollout_doc(
        name,
        &format!("listenerArn: {}", svc.listener),
        &svc.stable,
        &svc.canary,
        steps,
        &format!("  progressDeadline: 3m\n{extra}"),
    )
}

fn events(d: &support::Daemon, name: &str) -> Vec<Value> {
    get(d, &format!("/api/v1/rollouts/{name}/events")).1["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn millis(t: &Value) -> i64 {
    t.as_str()
        .and_then(|s| s.parse::<rollout_core::Time>().ok())
        .map_or(0, |t| t.millis())
}

/// Gates beside the analysis, against moto and a real local HTTP server:
/// a CloudWatch alarm set to ALARM mid-run, a webhook step that refuses
/// (500) and one that answers 200 after a delay, and a canary that turns
/// bad during the bake after promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_webhooks_and_the_bake_gate_real_runs() {
    let dir = work_dir("gates");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 1).await.expect("gateway");
    let aws = Aws::new(&gateway.url).await;
    let net = aws.network().expect("VPC and subnets");
    let alarmed = aws.service("alarmed", &net, true).await.expect("svc");
    let refused = aws.service("refused", &net, true).await.expect("svc");
    let slow = aws.service("slow", &net, true).await.expect("svc");
    let baked = aws.service("baked", &net, true).await.expect("svc");
    aws.put_alarm("checkout-5xx", &alarmed)
        .await
        .expect("alarm");
    let hooks = rollout_awskit::receiver::Receiver::start(|r| match r.path.as_str() {
        "/fail" => (
            500,
            r#"{"reason":"smoke test: /checkout answered 502"}"#.to_string(),
            Duration::ZERO,
        ),
        _ => (200, "all good".to_string(), Duration::from_millis(1_500)),
    })
    .await
    .expect("receiver");
    std::fs::write(dir.join("hook-secret"), "s3cret\n").expect("secret");
    let analysis = "  analysis: {interval: 2s, templates: [errors]}\n";
    let specs = [
        ERRORS_TEMPLATE.to_string(),
        gated_doc(
            "alarmed",
            &alarmed,
            "[{setWeight: 10}, {pause: {duration: 10m}}, {setWeight: 100}]",
            "  analysis: {interval: 2s, templates: [errors], alarms: [checkout-5xx]}\n",
        ),
        gated_doc(
            "refused",
            &refused,
            &format!(
                "[{{setWeight: 10}}, {{webhook: {{name: smoke, url: '{}/fail'}}}}, {{setWeight: 100}}]",
                hooks.url
            ),
            analysis,
        ),
        gated_doc(
            "slow",
            &slow,
            &format!(
                "[{{setWeight: 10}}, {{webhook: {{name: smoke, url: '{}/slow', timeout: 5s, secretFile: '{}'}}}}, {{setWeight: 100}}]",
                hooks.url,
                dir.join("hook-secret").display()
            ),
            analysis,
        ),
        // The steps' flow list, then the strategy's bake.
        gated_doc(
            "baked",
            &baked,
            "[{setWeight: 10}, {pause: {duration: 3s}}, {setWeight: 100}], postPromotion: {duration: 2m}",
            analysis,
        ),
    ]
    .concat();
    std::fs::write(dir.join("specs/gates.yaml"), specs).expect("specs");
    let publisher = Publisher::start(
        aws.clone(),
        [&alarmed, &refused, &slow, &baked]
            .into_iter()
            .map(|svc| traffic(svc, GOOD))
            .collect(),
        13,
    );
    let d = start_daemon(&dir, &gateway.url);

    // The alarm: once the run holds at 10%, the alarm goes to ALARM; the
    // run is rolled back within two reconcile intervals (1 s here).
    until(&d, Duration::from_secs(60), "alarmed holds at 10%", || {
        let s = get(&d, "/api/v1/rollouts/alarmed").1["status"].clone();
        s["phase"] == "Progressing" && s["currentStepIndex"] == 1
    })
    .await;
    let set_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as i64);
    aws.set_alarm(
        "checkout-5xx",
        "ALARM",
        "Threshold Crossed: 1 datapoint [412.0] was greater than the threshold (100.0)",
    )
    .await
    .expect("set alarm");
    until(&d, Duration::from_secs(20), "alarmed rolled back", || {
        get(&d, "/api/v1/rollouts/alarmed").1["status"]["phase"] == "RolledBack"
    })
    .await;
    let s = get(&d, "/api/v1/rollouts/alarmed").1["status"].clone();
    let why = s["message"].as_str().unwrap_or("");
    assert!(
        why.contains("alarm `checkout-5xx` is in ALARM: Threshold Crossed"),
        "{why}"
    );
    let rolled_back = events(&d, "alarmed")
        .iter()
        .find(|e| e["kind"] == "RolledBack")
        .map(|e| millis(&e["at"]))
        .expect("a RolledBack event");
    let took = rolled_back - set_at;
    eprintln!("alarm set to ALARM -> RolledBack decided after {took} ms");
    assert!(took <= 2_000, "within two reconcile intervals: {took} ms");
    until(
        &d,
        Duration::from_secs(10),
        "alarmed back on stable",
        || futures_weights(&aws, &alarmed) == (100, 0, 0),
    )
    .await;

    // The webhooks.
    let phases = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .map(|n| {
                get(&d, &format!("/api/v1/rollouts/{n}")).1["status"]["phase"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    until(&d, Duration::from_secs(90), "webhook runs ended", || {
        let p = phases(&["refused", "slow"]);
        p.iter()
            .all(|p| ["Succeeded", "RolledBack", "Failed", "Aborted"].contains(&p.as_str()))
    })
    .await;
    assert_eq!(
        phases(&["refused", "slow"]),
        ["RolledBack", "Succeeded"],
        "{}",
        tail(&d.log)
    );
    let s = get(&d, "/api/v1/rollouts/refused").1["status"].clone();
    assert!(
        s["message"]
            .as_str()
            .unwrap_or("")
            .contains("webhook `smoke` refused with HTTP 500: smoke test: /checkout answered 502"),
        "{s}"
    );
    assert_eq!(futures_weights(&aws, &refused), (100, 0, 0));
    let calls = hooks.received();
    let slow_calls: Vec<_> = calls.iter().filter(|c| c.path == "/slow").collect();
    assert_eq!(slow_calls.len(), 1, "a 200 after 1.5 s is one call");
    let body: Value = serde_json::from_str(&slow_calls[0].body).expect("json body");
    assert_eq!(body["rollout"], "slow");
    assert_eq!(body["weights"]["canary"], 10);
    assert_eq!(
        slow_calls[0].header("x-rolloutd-signature").unwrap_or(""),
        rolloutd::hooks::signature(b"s3cret", slow_calls[0].body.as_bytes())
    );
    assert_eq!(
        calls.iter().filter(|c| c.path == "/fail").count(),
        1,
        "a refusal is not retried"
    );

    // The bake: at 100% the canary group turns bad; all traffic returns to
    // the previous group.
    until(&d, Duration::from_secs(90), "baked is baking", || {
        !get(&d, "/api/v1/rollouts/baked").1["status"]["bakeStartedAt"].is_null()
    })
    .await;
    assert_eq!(futures_weights(&aws, &baked), (0, 100, 0), "baking at 100%");
    publisher.set_behaviour(&baked.canary, BAD);
    until(&d, Duration::from_secs(60), "baked rolled back", || {
        get(&d, "/api/v1/rollouts/baked").1["status"]["phase"] == "RolledBack"
    })
    .await;
    until(&d, Duration::from_secs(10), "baked back on stable", || {
        futures_weights(&aws, &baked) == (100, 0, 0)
    })
    .await;
    drop(d);
    drop(publisher);
    drop(moto);
}

/// The weights (stable, canary, other) of the service's default action,
/// read outside the async context the `until` closures run in.
fn futures_weights(aws: &Aws, svc: &rollout_awskit::alb::Service) -> (u32, u32, u32) {
    let aws = aws.clone();
    let svc = svc.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
            .and_then(|rt| rt.block_on(aws.weights(&svc, false)).ok())
            .unwrap_or((0, 0, 0))
    })
    .join()
    .unwrap_or((0, 0, 0))
}

const NOTIFIED_SPEC: &str = "apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: quick}
spec:
  alb: {period: 1s, delay: 1s, errorRate: {maxIncrease: 50%}}
---
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {name: shop}
spec:
  revision: \"r1\"
  notify: [team]
  trafficRouting:
    alb:
      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2
  targetGroups:
    - arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue/73e2d6bc24d8a067
    - arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green/0f2a6b1c9d8e7f60
  strategy:
    canary:
      steps: [{setWeight: 10}, {pause: {duration: 3s}}, {setWeight: 50}, {pause: {duration: 3s}}, {setWeight: 100}]
  analysis: {interval: 1s, templates: [quick]}
";

/// The event ids of the notifications received, in the order they first
/// arrived, and how many arrived more than once.
fn ids(received: &[rollout_awskit::receiver::Received]) -> (Vec<i64>, usize) {
    let mut seen = Vec::new();
    let mut again = 0;
    for r in received {
        let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
        let Some(id) = v["eventId"].as_i64() else {
            continue;
        };
        if seen.contains(&id) {
            again += 1;
        } else {
            seen.push(id);
        }
    }
    (seen, again)
}

/// Every notification of a run arrives, in order, at least once, through a
/// receiver that answers 500 for its first 20 s and a daemon killed with
/// SIGKILL in between (the event log is the outbox; the cursor moves only
/// after a 2xx); a receiver that always answers gets each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_survive_500s_and_a_sigkill_in_order() {
    let dir = work_dir("notify");
    let flaky = rollout_awskit::receiver::Receiver::start(|r| {
        if r.at < Duration::from_secs(20) {
            (500, "down for maintenance".into(), Duration::ZERO)
        } else {
            (200, "ok".into(), Duration::ZERO)
        }
    })
    .await
    .expect("receiver");
    let steady =
        rollout_awskit::receiver::Receiver::start(|_| (204, String::new(), Duration::ZERO))
            .await
            .expect("receiver");
    std::fs::write(dir.join("team-secret"), "team-key\n").expect("secret");
    let config = dir.join("rolloutd.yaml");
    std::fs::write(
        &config,
        format!(
            "notifiers:\n  team: {{url: '{}/team', format: json, secretFile: '{}'}}\n  audit: {{url: '{}/audit'}}\ndefaultNotifiers: [audit]\npublicUrl: https://rolloutd.example.com\n",
            flaky.url,
            dir.join("team-secret").display(),
            steady.url
        ),
    )
    .expect("config");
    std::fs::write(dir.join("specs/shop.yaml"), NOTIFIED_SPEC).expect("spec");
    let args = [
        "--config",
        &config.to_string_lossy(),
        "--specs-dir",
        &dir.join("specs").to_string_lossy(),
        "--lease-ttl",
        "3s",
    ]
    .map(str::to_string);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = support::start_simulated(&dir, &args);
    until(&d, Duration::from_secs(60), "the run reaches 50%", || {
        let s = get(&d, "/api/v1/rollouts/shop").1["status"].clone();
        s["canaryWeight"] == 50
    })
    .await;
    let (before_kill, dups_before_kill) = ids(&steady.received());
    assert_eq!(
        dups_before_kill, 0,
        "the normal path delivers each event once"
    );
    assert!(
        !before_kill.is_empty(),
        "audit heard of the run before the kill"
    );
    assert!(
        !flaky.received().is_empty(),
        "team was tried (and answered 500)"
    );
    // SIGKILL, mid-run and while team's receiver is still down.
    drop(d);
    let d = support::start_simulated(&dir, &args);
    until(&d, Duration::from_secs(90), "the run ends", || {
        get(&d, "/api/v1/rollouts/shop").1["status"]["phase"] == "Succeeded"
    })
    .await;
    // What should have been notified: the run's events of the notified
    // kinds (a verdict only when it failed), in the log's order.
    let log: Vec<Value> = get(&d, "/api/v1/rollouts/shop/events").1["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let kinds: Vec<String> = rolloutd::notify::NOTIFIED
        .iter()
        .map(|k| {
            serde_json::to_value(k)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        })
        .collect();
    let expected: Vec<(String, String)> = log
        .iter()
        .filter(|e| kinds.iter().any(|k| e["kind"] == k.as_str()))
        .filter(|e| {
            e["kind"] != "AnalysisJudged"
                || e["message"].as_str().unwrap_or("").contains(": fail (")
        })
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(expected.len() >= 5, "{log:?}");
    let arrived = |r: &rollout_awskit::receiver::Receiver| -> Vec<(String, String)> {
        let mut out: Vec<(i64, (String, String))> = Vec::new();
        for x in r.received() {
            let v: Value = serde_json::from_str(&x.body).unwrap_or_default();
            let id = v["eventId"].as_i64().unwrap_or(-1);
            if !out.iter().any(|(i, _)| *i == id) {
                out.push((
                    id,
                    (
                        v["event"].as_str().unwrap_or("").to_string(),
                        v["message"].as_str().unwrap_or("").to_string(),
                    ),
                ));
            }
        }
        out.into_iter().map(|(_, e)| e).collect()
    };
    until(
        &d,
        Duration::from_secs(120),
        "every notification reached team",
        || {
            arrived(&flaky).len() >= expected.len()
                && get(&d, "/api/v1/rollouts/shop/notifications").1["items"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|n| n["pending"] == 0))
        },
    )
    .await;
    assert_eq!(arrived(&flaky), expected, "team: every event, in order");
    assert_eq!(arrived(&steady), expected, "audit: every event, in order");
    let (team_ids, _) = ids(&flaky.received());
    assert!(
        team_ids.windows(2).all(|w| w[0] < w[1]),
        "in order: {team_ids:?}"
    );
    let (_, audit_again) = ids(&steady.received());
    eprintln!(
        "notifications: {} expected; team got {} requests (500s before it came back), audit {} with {} repeated across the SIGKILL",
        expected.len(),
        flaky.received().len(),
        steady.received().len(),
        audit_again
    );
    // Signed, with the link, and the state visible in the API and /metrics.
    let first_ok = flaky
        .received()
        .into_iter()
        .find(|r| r.at >= Duration::from_secs(20))
        .expect("a delivery");
    assert_eq!(
        first_ok.header("x-rolloutd-signature").unwrap_or(""),
        rolloutd::hooks::signature(b"team-key", first_ok.body.as_bytes())
    );
    let v: Value = serde_json::from_str(&first_ok.body).expect("json");
    assert_eq!(
        v["url"],
        "https://rolloutd.example.com/api/v1/rollouts/shop"
    );
    assert_eq!(v["rollout"], "shop");
    let state = get(&d, "/api/v1/rollouts/shop/notifications").1;
    let team = state["items"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["notifier"] == "team").cloned())
        .expect("team's state");
    assert_eq!(team["pending"], 0, "{state}");
    assert_eq!(team["delivered"], expected.len() as i64, "{state}");
    let metrics = support::metrics_text(&d);
    assert!(
        metrics.contains("rolloutd_notifications_total{notifier=\"team\",outcome=\"delivered\"}"),
        "{metrics}"
    );
    drop(d);
}

/// Evidence-driven pauses against moto: the same steps and traffic, once
/// with fixed 20-second pauses and once with `minimum: 2s`; the paced
/// rollout finishes well before the fixed one, and a paced canary with
/// twice the 5xx ceiling is still rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_paced_pauses_finish_sooner_and_still_roll_back() {
    let dir = work_dir("pacing");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 1).await.expect("gateway");
    let aws = Aws::new(&gateway.url).await;
    let net = aws.network().expect("VPC and subnets");
    let fixed = aws.service("fixed", &net, true).await.expect("svc");
    let paced = aws.service("paced", &net, true).await.expect("svc");
    let bad = aws.service("badpaced", &net, true).await.expect("svc");
    let _publisher = Publisher::start(
        aws.clone(),
        vec![
            traffic(&fixed, GOOD),
            traffic(&paced, GOOD),
            traffic(&bad, BAD),
        ],
        21,
    );
    // A 5% ceiling: good canaries answer 1% 5xx, the bad one 10%.
    let template = ERRORS_TEMPLATE
        .replace("name: errors", "name: ceiling")
        .replace("errorRate: {maxIncrease: 50%}", "errorRate: {maxRate: 5%}");
    let steps = |pause: &str| {
        format!("[{{setWeight: 10}}, {{pause: {pause}}}, {{setWeight: 25}}, {{pause: {pause}}}, {{setWeight: 50}}, {{pause: {pause}}}, {{setWeight: 100}}]")
    };
    let analysis = "  analysis: {interval: 2s, templates: [ceiling]}\n";
    let specs = [
        template,
        gated_doc("fixed", &fixed, &steps("{duration: 20s}"), analysis),
        gated_doc(
            "paced",
            &paced,
            &steps("{duration: 20s, minimum: 2s}"),
            analysis,
        ),
        gated_doc(
            "badpaced",
            &bad,
            &steps("{duration: 20s, minimum: 2s}"),
            analysis,
        ),
    ];
    std::fs::create_dir_all(dir.join("specs")).expect("dir");
    std::fs::write(dir.join("specs/all.yaml"), specs.join("---\n")).expect("spec");
    let d = start_daemon(&dir, &gateway.url);
    let phase = |name: &str| {
        get(&d, &format!("/api/v1/rollouts/{name}")).1["status"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let done = ["Succeeded", "RolledBack", "Aborted", "Failed"];
    until(&d, Duration::from_secs(180), "all three runs end", || {
        ["fixed", "paced", "badpaced"]
            .iter()
            .all(|n| done.contains(&phase(n).as_str()))
    })
    .await;
    let took = |name: &str| {
        let s = get(&d, &format!("/api/v1/rollouts/{name}")).1["status"].clone();
        assert_eq!(
            s["phase"],
            if name == "badpaced" {
                "RolledBack"
            } else {
                "Succeeded"
            },
            "{name}: {s}\n{}",
            tail(&d.log)
        );
        millis(&s["endedAt"]) - millis(&s["startedAt"])
    };
    let (f, p) = (took("fixed"), took("paced"));
    took("badpaced");
    eprintln!("fixed pauses: {f} ms; evidence-paced: {p} ms");
    assert!(f >= 60_000, "three 20-second pauses: {f} ms");
    assert!(p * 2 < f, "paced {p} ms against fixed {f} ms");
    // Each early end says which evidence ended it.
    let early: Vec<String> = events(&d, "paced")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.contains("the evidence is in"))
        .map(str::to_string)
        .collect();
    assert_eq!(early.len(), 3, "{early:#?}");
    assert!(
        early[0].contains("errorRate within tolerance (evidence"),
        "{}",
        early[0]
    );
    assert_eq!(
        aws.weights(&bad, false).await.expect("weights"),
        (100, 0, 0)
    );
    drop(d);
    drop(moto);
}
