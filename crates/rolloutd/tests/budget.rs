//! The AWS API budget (issue 15) with the real `rolloutd` binary against
//! moto: rollouts that hold their weight read the load balancer within the
//! ELBv2 read budget however often they reconcile, and a throttling answer
//! slows the reads down.

mod support;

use std::time::Duration;

use rollout_awskit::alb::Aws;
use rollout_awskit::gateway::Gateway;
use rollout_awskit::moto::Moto;
use support::{metrics_text, phase, rollout_doc, start_daemon, until, work_dir, HOLD_AT_5};

fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// `n` load balancers in moto, each with a rollout `{prefix}{i}` holding at
/// 5% on its listener, written to `dir/specs/all.yaml`.
async fn holding_rollouts(aws: &Aws, dir: &std::path::Path, prefix: &str, n: usize) {
    let net = aws.network().expect("VPC and subnets");
    let mut specs = String::new();
    for i in 0..n {
        let svc = aws
            .service(&format!("{prefix}{i}"), &net, true)
            .await
            .expect("svc");
        specs.push_str(&rollout_doc(
            &format!("{prefix}{i}"),
            &format!("listenerArn: {}", svc.listener),
            &svc.stable,
            &svc.canary,
            HOLD_AT_5,
            "",
        ));
    }
    std::fs::write(dir.join("specs/all.yaml"), specs).expect("specs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_rollouts_stay_within_the_elbv2_read_budget() {
    let dir = work_dir("budget");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 31).await.expect("gateway");
    let clean = Gateway::start(&moto.url, 32).await.expect("gateway");
    let aws = Aws::new(&clean.url).await;
    // 24 rollouts, each on its own load balancer, reconciled every second.
    holding_rollouts(&aws, &dir, "r", 24).await;
    let d = start_daemon(&dir, &gateway.url);
    until(
        &d,
        Duration::from_secs(90),
        "every rollout holds at 5%",
        || (0..24).all(|i| phase(&d, &format!("r{i}")) == "Paused"),
    )
    .await;

    // Holding, every rollout reconciles every second; the reads stay
    // within 4 a second (bursts of 8).
    let from = gateway.elapsed();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let to = gateway.elapsed();
    let reads: Vec<f64> = gateway
        .log()
        .into_iter()
        .filter(|(t, s, op)| {
            s == "elasticloadbalancing" && op.starts_with("Describe") && *t >= from && *t <= to
        })
        .map(|(t, _, _)| t)
        .collect();
    let per_second = reads.len() as f64 / (to - from);
    let busiest = (0..reads.len())
        .map(|i| {
            reads[i..]
                .iter()
                .take_while(|t| **t < reads[i] + 1.0)
                .count()
        })
        .max()
        .unwrap_or(0);
    println!("holding: {per_second:.2} ELBv2 reads/s, busiest second {busiest}");
    assert!(per_second <= 4.5, "{per_second} ELBv2 reads a second");
    assert!(busiest <= 12, "{busiest} ELBv2 reads in one second");

    // Half of the ELBv2 calls throttled: the read rate backs off.
    gateway.set_elb_throttle_rate(0.5);
    until(&d, Duration::from_secs(30), "the rate backs off", || {
        let m = metrics_text(&d);
        gauge(
            &m,
            "rolloutd_aws_budget_rate_per_second{class=\"elbv2_read\"} ",
        ) < 4.0
            && gauge(
                &m,
                "rolloutd_aws_budget_throttled_total{class=\"elbv2_read\"} ",
            ) > 0.0
    })
    .await;
    gateway.set_elb_throttle_rate(0.0);
    drop(d);
    drop(moto);
}

/// With a write budget far too small for the rollouts that want to start,
/// the wait is visible: the status message of a rollout whose reconcile
/// waits says it waits for the AWS API budget, and `/metrics` counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_waiting_for_the_budget_says_so() {
    let dir = work_dir("budget-wait");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 33).await.expect("gateway");
    let aws = Aws::new(&gateway.url).await;
    holding_rollouts(&aws, &dir, "w", 8).await;
    let db = format!("sqlite://{}", dir.join("state.db").display());
    let d = support::start_with(
        &dir,
        &gateway.url,
        &db,
        &[
            "--specs-dir",
            &dir.join("specs").display().to_string(),
            "--aws-elb-writes-per-second",
            "0.1",
        ],
        "rolloutd.log",
    );
    let mut seen = None;
    until(
        &d,
        Duration::from_secs(60),
        "a rollout says it waits for the AWS API budget",
        || {
            let list = support::get(&d, "/api/v1/rollouts").1;
            seen = list["items"].as_array().and_then(|items| {
                items.iter().find_map(|r| {
                    let m = r["status"]["message"].as_str()?;
                    m.contains("AWS").then(|| m.to_string())
                })
            });
            seen.is_some()
        },
    )
    .await;
    let message = seen.unwrap_or_default();
    println!("{message}");
    assert!(
        message.contains("for the AWS API budget") && message.contains("elbv2_write queued"),
        "{message}"
    );
    until(
        &d,
        Duration::from_secs(30),
        "/metrics counts the rollouts waiting for AWS",
        || gauge(&metrics_text(&d), "rolloutd_rollouts_waiting_for_aws ") >= 1.0,
    )
    .await;
    drop(d);
    drop(moto);
}

/// A `GetMetricData` that always says there is one more page does not hold
/// a reconcile forever: after `MAX_PAGES` pages the intervals are left
/// unjudged this time, with a message saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_metric_pages_are_cut_off() {
    let dir = work_dir("endless-pages");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 34).await.expect("gateway");
    let aws = Aws::new(&gateway.url).await;
    let net = aws.network().expect("VPC and subnets");
    let svc = aws.service("pages", &net, true).await.expect("svc");
    std::fs::write(
        dir.join("specs/all.yaml"),
        "apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: errors}
spec:
  inconclusiveLimit: 1000000
  alb: {period: 1s, delay: 1s, errorRate: {maxIncrease: 50%}}
"
        .to_string()
            + &rollout_doc(
                "pages",
                &format!("listenerArn: {}", svc.listener),
                &svc.stable,
                &svc.canary,
                HOLD_AT_5,
                "  analysis: {interval: 1s, templates: [errors]}\n",
            ),
    )
    .expect("specs");
    let d = start_daemon(&dir, &gateway.url);
    until(
        &d,
        Duration::from_secs(60),
        "the rollout holds at 5%",
        || phase(&d, "pages") == "Paused",
    )
    .await;
    let gmd = || {
        gateway
            .log()
            .iter()
            .filter(|(_, _, op)| op == "GetMetricData")
            .count()
    };
    let before = gmd();
    gateway.set_endless_metric_pages(true);
    until(
        &d,
        Duration::from_secs(60),
        "the endless pages are cut off",
        || {
            std::fs::read_to_string(&d.log)
                .unwrap_or_default()
                .contains("kept answering with a NextToken after 20 pages")
        },
    )
    .await;
    let calls = gmd() - before;
    println!("GetMetricData calls until the cut: {calls}");
    assert!(calls >= 20, "{calls}");
    gateway.set_endless_metric_pages(false);
    drop(d);
    drop(moto);
}

fn epoch_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `--canary-health-source cloudwatch`: the canary's health before a raise
/// comes from `HealthyHostCount` (no `DescribeTargetHealth`): no healthy
/// host there holds the raise, one lets it go; a target group CloudWatch
/// has no recent datapoint of is read with `DescribeTargetHealth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_health_from_cloudwatch() {
    let dir = work_dir("health-cloudwatch");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 35).await.expect("gateway");
    let clean = Gateway::start(&moto.url, 36).await.expect("gateway");
    let aws = Aws::new(&clean.url).await;
    let net = aws.network().expect("VPC and subnets");
    let watched = aws.service("watched", &net, true).await.expect("svc");
    let unwatched = aws.service("unwatched", &net, true).await.expect("svc");
    // CloudWatch saw the canary group with no healthy host last minute
    // (DescribeTargetHealth would say its target is healthy).
    aws.publish_canary_health(&watched, epoch_s() - 60, 0, 1)
        .await
        .expect("publish");
    let spec = |name: &str, svc: &rollout_awskit::alb::Service| {
        rollout_doc(
            name,
            &format!("listenerArn: {}", svc.listener),
            &svc.stable,
            &svc.canary,
            HOLD_AT_5,
            "",
        )
    };
    std::fs::write(dir.join("specs/watched.yaml"), spec("watched", &watched)).expect("spec");
    let db = format!("sqlite://{}", dir.join("state.db").display());
    let d = support::start_with(
        &dir,
        &gateway.url,
        &db,
        &[
            "--specs-dir",
            &dir.join("specs").display().to_string(),
            "--canary-health-source",
            "cloudwatch",
        ],
        "rolloutd.log",
    );
    let describe = || {
        gateway
            .calls()
            .count("elasticloadbalancing", "DescribeTargetHealth")
    };
    until(
        &d,
        Duration::from_secs(30),
        "the raise is held for want of a healthy host",
        || {
            support::get(&d, "/api/v1/rollouts/watched").1["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("healthy"))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(
        phase(&d, "watched"),
        "Paused",
        "raised with no healthy host"
    );
    // A healthy host this minute: the raise goes.
    aws.publish_canary_health(&watched, epoch_s(), 1, 0)
        .await
        .expect("publish");
    until(&d, Duration::from_secs(30), "the canary gets 5%", || {
        phase(&d, "watched") == "Paused"
    })
    .await;
    assert_eq!(describe(), 0, "DescribeTargetHealth was called");
    assert_eq!(
        aws.weights(&watched, false).await.expect("weights"),
        (95, 5, 0)
    );
    // No datapoint for this one: DescribeTargetHealth it is.
    std::fs::write(
        dir.join("specs/unwatched.yaml"),
        spec("unwatched", &unwatched),
    )
    .expect("spec");
    until(
        &d,
        Duration::from_secs(30),
        "the other canary gets 5%",
        || phase(&d, "unwatched") == "Paused",
    )
    .await;
    assert!(describe() > 0, "no fallback to DescribeTargetHealth");
    drop(d);
    drop(moto);
}

/// A read whose asker is cancelled (a command interrupts a reconcile that
/// waits for AWS) still leaves the router serving everyone else: before,
/// a cancelled gatherer of a batch left every later read of the router
/// waiting forever (and a cancelled target-health read, every later one of
/// that group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_read_leaves_nobody_waiting() {
    use rollout_aws::budget::{Budget, BudgetConfig, Rate};
    use rollout_core::ports::TrafficRouter;
    use rollout_core::{Observed, Urgency};
    let dir = work_dir("cancelled-read");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let aws = Aws::new(&moto.url).await;
    let net = aws.network().expect("VPC and subnets");
    let svc = aws.service("cancel", &net, true).await.expect("svc");
    let rate = |per_second| Rate {
        per_second,
        burst: per_second * 2.0,
    };
    let budget = std::sync::Arc::new(Budget::new(BudgetConfig {
        elb_read: rate(4.0),
        elb_write: rate(2.0),
        cloudwatch: rate(5.0),
        alarms: rate(2.0),
        fis: rate(2.0),
    }));
    let observer: rollout_aws::CallObserver = std::sync::Arc::new(|_, _, _| {});
    let router = rollout_aws::AlbRouter::new(
        aws.elb.clone(),
        rollout_aws::regional::Accounts::default(),
        observer,
        budget,
    );
    let doc = rollout_doc(
        "cancel",
        &format!("listenerArn: {}", svc.listener),
        &svc.stable,
        &svc.canary,
        HOLD_AT_5,
        "",
    );
    let set = rollout_spec::load([("cancel.yaml", doc.as_str())], &[]).expect("valid");
    let spec = &set.rollouts[0].value.spec;
    for round in 0..3 {
        // A routine read gathers others for a second; its asker gives up
        // after 50 ms.
        let given_up = tokio::time::timeout(
            Duration::from_millis(50),
            router.forward_weights(spec, Urgency::Routine),
        )
        .await;
        assert!(given_up.is_err(), "round {round}: answered within 50 ms");
        let next = tokio::time::timeout(
            Duration::from_secs(10),
            router.forward_weights(spec, Urgency::Routine),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: the next read was never answered"));
        assert!(matches!(next, Observed::Ok(_)), "{next:?}");
        // The same for the canary's health.
        let _ = tokio::time::timeout(Duration::from_millis(1), router.canary_health(spec)).await;
        let health = tokio::time::timeout(Duration::from_secs(10), router.canary_health(spec))
            .await
            .unwrap_or_else(|_| panic!("round {round}: the next health read was never answered"));
        assert!(matches!(health, Observed::Ok(_)), "{health:?}");
    }
    drop(moto);
}
