//! The AWS API budget (issue 15) with the real `rolloutd` binary against
//! moto: rollouts that hold their weight read the load balancer within the
//! ELBv2 read budget however often they reconcile, and a throttling answer
//! slows the reads down.

mod support;

use std::time::Duration;

use rollout_awskit::alb::Aws;
use rollout_awskit::gateway::Gateway;
use rollout_awskit::moto::Moto;
use support::{metrics_text, phase, start_daemon, until, work_dir};

fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_rollouts_stay_within_the_elbv2_read_budget() {
    let dir = work_dir("budget");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 31).await.expect("gateway");
    let clean = Gateway::start(&moto.url, 32).await.expect("gateway");
    let aws = Aws::new(&clean.url).await;
    let net = aws.network().expect("VPC and subnets");
    // 24 rollouts, each on its own load balancer, reconciled every second.
    let mut specs = String::new();
    for i in 0..24 {
        let svc = aws
            .service(&format!("b{i}"), &net, true)
            .await
            .expect("svc");
        specs.push_str(&format!(
            "---
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {{name: r{i}}}
spec:
  revision: \"r1\"
  trafficRouting: {{alb: {{listenerArn: {}}}}}
  stable: {{targetGroupArn: {}}}
  canary: {{targetGroupArn: {}}}
  strategy: {{canary: {{steps: [{{setWeight: 5}}, {{pause: {{}}}}, {{setWeight: 100}}]}}}}
",
            svc.listener, svc.stable, svc.canary
        ));
    }
    std::fs::write(dir.join("specs/all.yaml"), specs).expect("specs");
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
