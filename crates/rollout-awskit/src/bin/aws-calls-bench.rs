//! AWS calls per analysis interval: the real `rolloutd` binary (from the
//! same target directory) runs N rollouts against moto, through a gateway
//! that counts every call by operation. The rollouts hold at their first
//! step (5%) with background analysis every interval; once every one of them
//! holds, the calls of the next intervals are counted.
//!
//! ```text
//! cargo build --release -p rolloutd -p rollout-awskit
//! target/release/aws-calls-bench --rollouts 1,100,1000 --intervals 3 [--interval-seconds 10] [--regions us-east-1,eu-west-1]
//! ```
//!
//! With `--regions`, the rollouts are spread over the regions in turn
//! (the daemon's own configuration names us-east-1) and GetMetricData is
//! also counted per region: each region's calls go to that region, ⌈its
//! queries / 500⌉ per interval.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rollout_awskit::alb::{Aws, Service};
use rollout_awskit::gateway::Gateway;
use rollout_awskit::moto::Moto;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn specs(services: &[Service], interval_s: u64) -> String {
    let mut out = format!(
        "apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: errors}}
spec:
  inconclusiveLimit: 1000000
  alb: {{period: {interval_s}s, delay: 0s, errorRate: {{maxIncrease: 50%}}}}
"
    );
    for s in services {
        out.push_str(&format!(
            "---
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  revision: \"r1\"
  trafficRouting: {{alb: {{listenerArn: {listener}}}}}
  stable: {{targetGroupArn: {stable}}}
  canary: {{targetGroupArn: {canary}}}
  progressDeadline: 1h
  strategy: {{canary: {{steps: [{{setWeight: 5}}, {{pause: {{}}}}, {{setWeight: 100}}]}}}}
  analysis: {{interval: {interval_s}s, templates: [errors]}}
",
            name = s.name,
            listener = s.listener,
            stable = s.stable,
            canary = s.canary,
        ));
    }
    out
}

/// Intervals judged so far, all rollouts together (from `/metrics`).
fn judged(base: &str) -> f64 {
    let Ok(mut r) = ureq::get(&format!("{base}/metrics")).call() else {
        return 0.0;
    };
    let text = r.body_mut().read_to_string().unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("rolloutd_analysis_verdicts_total{") && l.contains("metric=\"errorRate\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn holding(base: &str, n: usize) -> usize {
    let Ok(mut r) = ureq::get(&format!("{base}/api/v1/rollouts")).call() else {
        return 0;
    };
    let v: serde_json::Value = r.body_mut().read_json().unwrap_or(serde_json::Value::Null);
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let at5 = items
        .iter()
        .filter(|r| r["status"]["observedWeights"]["canary"] == 5)
        .count();
    at5.min(n)
}

async fn run(
    n: usize,
    intervals: u64,
    interval_s: u64,
    regions: &[String],
    rolloutd: &std::path::Path,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("rolloutd-aws-bench-{n}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("specs"))?;
    let moto = Moto::start(&dir.join("moto.log"))?;
    let gateway = Gateway::start(&moto.url, 5).await?;
    let mut places = Vec::new();
    for r in regions {
        let aws = Aws::in_region(&gateway.url, r).await;
        let net = aws.network()?;
        places.push((aws, net));
    }
    let t = Instant::now();
    let mut services = Vec::with_capacity(n);
    for i in 0..n {
        let (aws, net) = &places[i % places.len()];
        services.push(aws.service(&format!("svc-{i}"), net, true).await?);
    }
    eprintln!(
        "{n} services made in moto in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    std::fs::write(dir.join("specs/all.yaml"), specs(&services, interval_s))?;
    let (mut child, base) = rollout_awskit::spawn_rolloutd(rolloutd, &dir, &gateway.url)?;
    let t = Instant::now();
    while holding(&base, n) < n {
        if t.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            bail!(
                "only {} of {n} rollouts reached 5% in 300 s",
                holding(&base, n)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "{n} rollouts hold at 5% after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    gateway.reset_calls();
    let before = judged(&base);
    let window = Duration::from_secs(interval_s * intervals);
    tokio::time::sleep(window).await;
    let calls = gateway.calls();
    let intervals = judged(&base) - before;
    for ((service, op), count) in &calls.by_operation {
        eprintln!("  {service}:{op}: {count} in {intervals} intervals");
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(moto);
    // Per analysis interval: the intervals judged, per rollout.
    let rounds = (intervals / n as f64).max(1e-9);
    eprintln!("  {intervals} intervals judged: {rounds:.2} per rollout");
    let per = |service: &str, op: &str| calls.count(service, op) as f64 / rounds;
    let queries = n * 4; // RequestCount and 5xx Sum, both arms
    let naive = queries; // one GetMetricStatistics per metric per target group
                         // Per region: its rollouts' queries, ⌈queries / 500⌉, the calls made there.
    let mut least = 0;
    for (k, r) in regions.iter().enumerate() {
        let in_region = (0..n).filter(|i| i % regions.len() == k).count() * 4;
        least += in_region.div_ceil(500);
        let made: u64 = calls
            .by_region
            .iter()
            .filter(|((reg, svc, op), _)| reg == r && svc == "monitoring" && op == "GetMetricData")
            .map(|(_, c)| *c)
            .sum();
        if regions.len() > 1 {
            println!(
                "| {n} ({r}) | {in_region} | {} | {:.2} | | | |",
                in_region.div_ceil(500),
                made as f64 / rounds
            );
        }
    }
    let elb_reads = per("elasticloadbalancing", "DescribeListeners")
        + per("elasticloadbalancing", "DescribeRules")
        + per("elasticloadbalancing", "DescribeTargetHealth");
    let elb_writes = calls.count("elasticloadbalancing", "ModifyListener")
        + calls.count("elasticloadbalancing", "ModifyRule");
    println!(
        "| {n} | {queries} | {least} | {:.2} | {naive} | {elb_reads:.1} | {elb_writes} |",
        per("monitoring", "GetMetricData"),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let counts: Vec<usize> = arg("--rollouts")
        .unwrap_or_else(|| "1,100,1000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .context("--rollouts N,N,…")?;
    let intervals: u64 = arg("--intervals").map_or(Ok(3), |s| s.parse())?;
    let interval_s: u64 = arg("--interval-seconds").map_or(Ok(10), |s| s.parse())?;
    let regions: Vec<String> = arg("--regions")
        .unwrap_or_else(|| "us-east-1".into())
        .split(',')
        .map(|r| r.trim().to_string())
        .collect();
    let rolloutd = match arg("--rolloutd") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark's directory")?
            .join("rolloutd"),
    };
    println!("| rollouts | metric queries per interval | Σ over regions of ceil(queries / 500) | GetMetricData calls per interval (measured) | naive GetMetricStatistics calls | ELBv2 reads per interval | ELBv2 writes while holding |");
    println!("|---|---|---|---|---|---|---|");
    for n in counts {
        run(n, intervals, interval_s, &regions, &rolloutd).await?;
    }
    Ok(())
}
