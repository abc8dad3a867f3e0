//! The real `rolloutd` binary against AWS's wire protocols, served by moto
//! (an independent implementation of ELBv2 and CloudWatch) that the test
//! starts itself. The daemon reaches AWS the standard way
//! (`AWS_ENDPOINT_URL`), through a gateway that translates the current
//! CloudWatch SDK's RPC v2 CBOR to the JSON protocol moto serves, and that
//! can fail a share of calls. The load balancers, target groups, listeners
//! and rules are made through the ELBv2 API; a publisher plays the ALB's
//! CloudWatch side every second, splitting requests by the weights the
//! load balancer holds at that moment.
//!
//! moto serves no percentile statistics, so these templates judge the 5xx
//! rate; the latency path (Average, percentiles, spread) is unit-tested in
//! `rollout-aws`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rollout_awskit::alb::{Aws, Behaviour, Publisher, Seen, Service, Traffic};
use rollout_awskit::gateway::Gateway;
use rollout_awskit::moto::Moto;
use support::{get, metrics_text, phase, start_daemon, tail, work_dir, Daemon};

const TEMPLATE: &str = "apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: errors}
spec:
  alb:
    period: 1s
    delay: 2s
    errorRate: {maxIncrease: 50%}
---
apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: payments}
spec:
  alb: {period: 1s, delay: 2s}
  metrics:
    - name: declines
      namespace: Shop/Payments
      metricName: Declines
      statistic: Sum
      perRequest: true
      dimensions: {TargetGroup: '${targetGroup}'}
      maxIncrease: 100%
";

/// The seed's steps: 5, 10, 25, 50, 100 with a short bake at each.
const STEPS: [u32; 5] = [5, 10, 25, 50, 100];

fn rollout(name: &str, svc: &Service, rule: bool) -> String {
    rollout_judged_by(name, svc, rule, "errors")
}

fn rollout_judged_by(name: &str, svc: &Service, rule: bool, templates: &str) -> String {
    let rule = match (&svc.rule, rule) {
        (Some(r), true) => format!(", ruleArn: {r}"),
        _ => String::new(),
    };
    let steps: Vec<String> = STEPS
        .iter()
        .map(|w| {
            if *w == 100 {
                "{setWeight: 100}".to_string()
            } else {
                format!("{{setWeight: {w}}}, {{pause: {{duration: 5s}}}}")
            }
        })
        .collect();
    support::rollout_doc(
        name,
        &format!("listenerArn: {}{rule}", svc.listener),
        &svc.stable,
        &svc.canary,
        &format!("[{}]", steps.join(", ")),
        &format!(
            "  progressDeadline: 3m\n  analysis: {{interval: 2s, templates: [{templates}]}}\n"
        ),
    )
}

/// Waits until every named rollout is in a final phase; their phases.
async fn wait_final(d: &Daemon, names: &[&str], limit: Duration) -> BTreeMap<String, String> {
    let t = Instant::now();
    loop {
        let phases: BTreeMap<String, String> =
            names.iter().map(|n| (n.to_string(), phase(d, n))).collect();
        if phases
            .values()
            .all(|p| ["Succeeded", "RolledBack", "Aborted", "Failed"].contains(&p.as_str()))
        {
            return phases;
        }
        assert!(
            t.elapsed() < limit,
            "runs did not end within {limit:?}: {phases:?}\n{}",
            tail(&d.log)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

const GOOD: Behaviour = Behaviour {
    error_rate: 0.01,
    latency: 0.05,
    declines: 0.02,
};
const BAD: Behaviour = Behaviour {
    error_rate: 0.10,
    latency: 0.05,
    declines: 0.02,
};
/// 5xx as good as stable's, but ten times the declined payments.
const DECLINING: Behaviour = Behaviour {
    declines: 0.20,
    ..GOOD
};

fn traffic(service: &Service, via_rule: bool, canary: Behaviour) -> Traffic {
    Traffic {
        service: service.clone(),
        via_rule,
        rps: 2_000.0,
        stable: GOOD,
        canary,
    }
}

/// The distinct canary weights the load balancer held, in order.
fn canary_steps(seen: &Seen, name: &str) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for (_, s, c, o) in seen.get(name).map(Vec::as_slice).unwrap_or_default() {
        let total = s + c + o;
        let pct = (c * 100).checked_div(total).unwrap_or(0);
        if out.last() != Some(&pct) {
            out.push(pct);
        }
    }
    out
}

/// Every reading sums to 100 (rolloutd writes percentages) and gives
/// nothing to target groups the rollout does not own.
fn always_whole(seen: &Seen, name: &str) {
    for (at, s, c, o) in seen.get(name).map(Vec::as_slice).unwrap_or_default() {
        assert!(
            *o == 0 && (s + c == 100 || (s + c == 1 && *c == 0)),
            "{name} at {at}: stable {s} canary {c} other {o}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_rollouts_against_moto() {
    let dir = work_dir("runs");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 1).await.expect("gateway");
    let aws = Aws::new(&gateway.url).await;
    let net = aws.network().expect("VPC and subnets");
    let good = aws.service("good", &net, true).await.expect("good");
    let bad = aws.service("bad", &net, true).await.expect("bad");
    let mut ruled = aws.service("ruled", &net, true).await.expect("ruled");
    aws.add_rule(&mut ruled).await.expect("rule");
    let empty = aws.service("empty", &net, false).await.expect("empty");
    let declining = aws
        .service("declining", &net, true)
        .await
        .expect("declining");

    let specs = [
        TEMPLATE.to_string(),
        // The healthy canary is judged by the custom metric too: it passes.
        rollout_judged_by("good", &good, false, "errors, payments"),
        rollout_judged_by("declining", &declining, false, "errors, payments"),
        rollout("bad", &bad, false),
        rollout("ruled", &ruled, true),
        rollout("empty", &empty, false),
    ]
    .concat();
    std::fs::write(dir.join("specs/rollouts.yaml"), specs).expect("specs");
    let publisher = Publisher::start(
        aws.clone(),
        vec![
            traffic(&good, false, GOOD),
            traffic(&bad, false, BAD),
            traffic(&ruled, true, GOOD),
            traffic(&empty, false, GOOD),
            traffic(&declining, false, DECLINING),
        ],
        7,
    );
    first_readings(&publisher, 5).await;
    let d = start_daemon(&dir, &gateway.url);
    let phases = wait_final(
        &d,
        &["good", "bad", "ruled", "declining"],
        Duration::from_secs(150),
    )
    .await;
    // One more reading of every load balancer after the runs ended.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let seen = publisher.seen();

    assert_eq!(phases["good"], "Succeeded", "{}", tail(&d.log));
    assert_eq!(
        canary_steps(&seen, "good"),
        [0, 5, 10, 25, 50, 100],
        "every step's weight seen on the load balancer"
    );
    assert_eq!(phases["ruled"], "Succeeded");
    assert_eq!(canary_steps(&seen, "ruled"), [0, 5, 10, 25, 50, 100]);
    // The rule was shifted; the listener's default action was not touched.
    assert_eq!(
        aws.weights(&ruled, false).await.expect("default action"),
        (1, 0, 0)
    );

    assert_eq!(phases["bad"], "RolledBack", "{}", tail(&d.log));
    assert_eq!(
        aws.weights(&bad, false).await.expect("weights"),
        (100, 0, 0),
        "all traffic on stable"
    );
    let steps = canary_steps(&seen, "bad");
    assert_eq!(steps.last(), Some(&0), "{steps:?}");
    let (_, run) = get(&d, "/api/v1/rollouts/bad");
    let why = run["status"]["message"].as_str().unwrap_or("");
    assert!(
        why.contains("analysis `errors` failed") && why.contains("error rate: canary"),
        "the rollback says why, with both arms: {why}"
    );

    // A custom CloudWatch metric (declined payments per request, from the
    // application's own namespace) rolls back a canary whose 5xx are fine.
    assert_eq!(phases["declining"], "RolledBack", "{}", tail(&d.log));
    assert_eq!(
        aws.weights(&declining, false).await.expect("weights"),
        (100, 0, 0)
    );
    let (_, run) = get(&d, "/api/v1/rollouts/declining");
    let why = run["status"]["message"].as_str().unwrap_or("");
    assert!(
        why.contains("analysis `payments` failed") && why.contains("declines per request: canary"),
        "the rollback names the custom metric: {why}"
    );
    // The good run's last analysis judged the custom metric and passed it.
    let (_, run) = get(&d, "/api/v1/rollouts/good");
    let text = run["status"].to_string();
    assert!(
        text.contains("\"metric\":\"declines\"") && text.contains("per request"),
        "{text}"
    );

    // No healthy target in the canary group: it never gets traffic.
    assert!(
        canary_steps(&seen, "empty").iter().all(|w| *w == 0),
        "{:?}",
        canary_steps(&seen, "empty")
    );
    assert_eq!(
        aws.weights(&empty, false).await.expect("weights"),
        (1, 0, 0)
    );
    let (_, run) = get(&d, "/api/v1/rollouts/empty");
    assert!(
        run["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("healthy"),
        "the hold says why: {}",
        run["status"]
    );
    for name in ["good", "bad", "ruled", "empty", "declining"] {
        always_whole(&seen, name);
    }
    assert!(publisher.errors().is_empty(), "{:?}", publisher.errors());

    // Every call the daemon made is in the IAM policy, and counted.
    let (_, metrics) = (0, metrics_text(&d));
    let policy = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/iam-policy.json"),
    )
    .expect("policy");
    let mut called = 0;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("rolloutd_aws_requests_total{"))
    {
        let label = |k: &str| {
            line.split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let action = format!("{}:{}", label("service"), label("operation"));
        assert!(
            policy.contains(&format!("\"{action}\"")),
            "{action} is not in deploy/iam-policy.json"
        );
        called += 1;
    }
    assert!(called >= 4, "{metrics}");
    // While a run holds its weight, nothing is written to the load balancer.
    let calls = gateway.calls();
    let writes = calls.count("elasticloadbalancing", "ModifyListener")
        + calls.count("elasticloadbalancing", "ModifyRule");
    // good and ruled: 5 raises each; bad and declining: their raises plus
    // one rollback each.
    let raises = |name: &str| canary_steps(&seen, name).iter().filter(|w| **w > 0).count() as u64;
    assert_eq!(
        writes,
        10 + raises("bad") + 1 + raises("declining") + 1,
        "{calls:?}"
    );
    drop(d);
    drop(publisher);
    drop(moto);
}

/// Waits for the publisher's first reading of every service (the weights
/// before the daemon starts).
async fn first_readings(p: &Publisher, services: usize) {
    let t = Instant::now();
    while p.seen().len() < services {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "publisher: {:?}",
            p.errors()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_of_calls_fail() {
    let dir = work_dir("faults");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    // The test's own calls go through a clean gateway; the daemon's through
    // one that throttles, answers 503, or loses the response after moto did
    // the work, for 30% of calls.
    let clean = Gateway::start(&moto.url, 2).await.expect("gateway");
    let faulty = Gateway::start(&moto.url, 3).await.expect("gateway");
    faulty.set_fault_rate(0.30);
    let aws = Aws::new(&clean.url).await;
    let net = aws.network().expect("VPC and subnets");
    let good = aws.service("good", &net, true).await.expect("good");
    let bad = aws.service("bad", &net, true).await.expect("bad");
    let specs = [
        TEMPLATE.to_string(),
        rollout("good", &good, false),
        rollout("bad", &bad, false),
    ]
    .concat();
    std::fs::write(dir.join("specs/rollouts.yaml"), specs).expect("specs");
    let publisher = Publisher::start(
        aws.clone(),
        vec![traffic(&good, false, GOOD), traffic(&bad, false, BAD)],
        11,
    );
    first_readings(&publisher, 2).await;
    let d = start_daemon(&dir, &faulty.url);
    let phases = wait_final(&d, &["good", "bad"], Duration::from_secs(170)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let seen = publisher.seen();
    let calls = faulty.calls();
    // The API budget keeps the daemon's calls few (about 70 in this run),
    // so a third of them is a couple of dozen faults.
    assert!(calls.injected >= 10, "faults were injected: {calls:?}");
    assert_eq!(phases["good"], "Succeeded", "{}", tail(&d.log));
    // Never a skipped step, never a step back, never a split that is not whole.
    assert_eq!(canary_steps(&seen, "good"), [0, 5, 10, 25, 50, 100]);
    assert_eq!(phases["bad"], "RolledBack", "{}", tail(&d.log));
    assert_eq!(
        aws.weights(&bad, false).await.expect("weights"),
        (100, 0, 0)
    );
    let steps = canary_steps(&seen, "bad");
    assert!(
        steps.windows(2).all(|w| w[1] > w[0] || w[1] == 0),
        "{steps:?}"
    );
    always_whole(&seen, "good");
    always_whole(&seen, "bad");
    // A call that still failed after the SDK's retries is logged and
    // counted with its outcome. (With the API budget the daemon makes few
    // calls here, so every fault may have been retried away.)
    let metrics = metrics_text(&d);
    let failed = std::fs::read_to_string(&d.log)
        .unwrap_or_default()
        .contains("AWS call failed");
    assert!(
        !failed
            || metrics
                .lines()
                .any(|l| l.starts_with("rolloutd_aws_requests_total{")
                    && !l.contains("outcome=\"success\"")),
        "failed calls are counted: {metrics}"
    );
    drop(d);
    drop(publisher);
    drop(moto);
}
