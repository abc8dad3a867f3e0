//! The AWS API budget at scale (issue 15): the real `rolloutd` binary (from
//! the same target directory) runs N rollouts against moto through a
//! gateway that logs every call with its time. Each rollout shifts a rule of
//! a listener (50 rules a listener). Half hold at an indefinite pause at 5%
//! with background analysis every minute; half step 5 → 10 → 25 → 50 → 100
//! with a pause of `--pause-seconds` (300) between steps. Rollouts are
//! applied in ten batches spread over the first `--spread-seconds` (300), as
//! real deploys are, then everything runs for `--seconds` more.
//!
//! Reported: ELBv2 reads and writes per second (average over the steady
//! part, and the busiest one-second window), `GetMetricData` calls per
//! analysis interval, the step lag (a pause's end to the next weight seen on
//! the load balancer, from the rollouts' events), whether every raise was
//! read back, and, with `--aborts K`, the time from an abort to stable
//! carrying all traffic again for K stepping rollouts while the budget is
//! saturated. `--throttle 0.5` answers half the ELBv2 calls with
//! `Throttling`. `--bad-canary` turns the first load balancer's canary
//! group bad three minutes before the end and reports the time from each
//! failing verdict to stable seen at 100%. With `ROLLOUTD_CANARY_HEALTH_SOURCE=cloudwatch` in its
//! environment the daemon reads the canary's health from CloudWatch, and the
//! benchmark publishes `HealthyHostCount` for every canary group.
//!
//! ```text
//! cargo build --release -p rolloutd -p rollout-awskit
//! target/release/aws-budget-bench --rollouts 100 [--seconds 360] [--pause-seconds 300] [--aborts 10] [--throttle 0.5]
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rollout_awskit::alb::{Aws, Service};
use rollout_awskit::gateway::Gateway;
use rollout_awskit::moto::Moto;
use rollout_core::Time;
use serde_json::Value;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match arg(name) {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}: not a number: {s}")),
    }
}

const TEMPLATE: &str = "apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: errors}
spec:
  inconclusiveLimit: 1000000
  alb: {period: 60s, delay: 0s, errorRate: {maxIncrease: 50%}}
";

struct Rollout {
    name: String,
    svc: usize,
    rule: String,
    stepping: bool,
}

fn spec(r: &Rollout, svc: &Service, pause_s: u64) -> String {
    let (steps, analysis) = if r.stepping {
        let p = format!("{{pause: {{duration: {pause_s}s}}}}");
        (
            format!(
                "[{{setWeight: 5}}, {p}, {{setWeight: 10}}, {p}, {{setWeight: 25}}, {p}, {{setWeight: 50}}, {p}, {{setWeight: 100}}]"
            ),
            String::new(),
        )
    } else {
        (
            "[{setWeight: 5}, {pause: {}}, {setWeight: 100}]".to_string(),
            "\n  analysis: {interval: 60s, templates: [errors]}".to_string(),
        )
    };
    format!(
        "---
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  revision: \"r1\"
  trafficRouting: {{alb: {{listenerArn: {listener}, ruleArn: {rule}}}}}
  stable: {{targetGroupArn: {stable}}}
  canary: {{targetGroupArn: {canary}}}
  progressDeadline: 2h
  strategy: {{canary: {{steps: {steps}}}}}{analysis}
",
        name = r.name,
        listener = svc.listener,
        rule = r.rule,
        stable = svc.stable,
        canary = svc.canary,
    )
}

fn get(base: &str, path: &str) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    agent
        .get(&format!("{base}{path}"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_json().ok())
        .unwrap_or(Value::Null)
}

fn post(base: &str, path: &str) -> u16 {
    ureq::post(&format!("{base}{path}"))
        .send_empty()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn metrics(base: &str) -> String {
    ureq::get(&format!("{base}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default()
}

/// A minute's worth of traffic for the first load balancer's two groups,
/// the canary answering half its requests with 5xx (as ALB publishes it).
async fn publish_bad_canary(aws: &Aws, svc: &Service) -> anyhow::Result<()> {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
    let now = wall_now().millis() / 1000;
    let lb = svc.lb_dimension();
    let mut data = Vec::new();
    for (tg, errors) in [(&svc.stable, 0.0), (&svc.canary, 100.0)] {
        let dims = vec![
            Dimension::builder().name("LoadBalancer").value(&lb).build(),
            Dimension::builder()
                .name("TargetGroup")
                .value(rollout_awskit::alb::tg_dimension(tg))
                .build(),
        ];
        let datum = |name: &str, value: f64| {
            MetricDatum::builder()
                .metric_name(name)
                .set_dimensions(Some(dims.clone()))
                .timestamp(DateTime::from_secs(now))
                .value(value)
                .unit(StandardUnit::Count)
                .storage_resolution(1)
                .build()
        };
        data.push(datum("RequestCount", 200.0));
        if errors > 0.0 {
            data.push(datum("HTTPCode_Target_5XX_Count", errors));
        }
    }
    aws.cw
        .put_metric_data()
        .namespace("AWS/ApplicationELB")
        .set_metric_data(Some(data))
        .send()
        .await?;
    Ok(())
}

fn wall_now() -> Time {
    Time::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    )
}

fn at(e: &Value) -> Option<Time> {
    serde_json::from_value(e["at"].clone()).ok()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Step lags (seconds) of one stepping rollout from its events: a pause
/// that began at the end of a `setWeight` step is due `pause_s` later; its
/// lag runs to the next `WeightVerified`. Also whether every weight set was
/// seen (read back), except one still in flight at the end.
fn lags(events: &[Value], pause_s: u64) -> (Vec<f64>, bool, bool) {
    let mut out = Vec::new();
    let mut due: Option<Time> = None;
    let mut set = 0;
    let mut verified = 0;
    let mut last_weight = 0;
    let mut monotonic = true;
    for e in events {
        let kind = e["kind"].as_str().unwrap_or("");
        let message = e["message"].as_str().unwrap_or("");
        match kind {
            "StepAdvanced" => {
                // "step X of N done": odd X (1-based) is a setWeight step.
                let x: u64 = message
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if x % 2 == 1 {
                    due = at(e).map(|t| t.plus_ms(pause_s * 1000));
                }
            }
            "WeightSet" => {
                set += 1;
                let after = e["weightAfter"].as_u64().unwrap_or(0);
                if after < last_weight {
                    monotonic = false;
                }
                last_weight = after;
            }
            "WeightVerified" => {
                verified += 1;
                if let (Some(d), Some(t)) = (due.take(), at(e)) {
                    // (A weight seen before its pause was due was an abort's.)
                    if t >= d {
                        out.push(t.since(d) as f64 / 1000.0);
                    }
                }
            }
            _ => {}
        }
    }
    (out, verified + 1 >= set, monotonic)
}

/// `n` listener rules, `per_listener` on each load balancer made in moto;
/// every second rollout steps, the others hold and analyse.
async fn make_rollouts(
    aws: &Aws,
    net: &(String, Vec<String>),
    n: usize,
    per_listener: usize,
) -> anyhow::Result<(Vec<Service>, Vec<Rollout>)> {
    let t = Instant::now();
    let mut services = Vec::new();
    let mut rollouts = Vec::with_capacity(n);
    for i in 0..n {
        if i % per_listener == 0 {
            services.push(
                aws.service(&format!("lb-{}", i / per_listener), net, true)
                    .await?,
            );
        }
        let svc = services.len() - 1;
        let rule = aws
            .rule_at(&services[svc], (i % per_listener) as i32 + 1)
            .await?;
        rollouts.push(Rollout {
            name: format!("r{i}"),
            svc,
            rule,
            stepping: i % 2 == 1,
        });
    }
    eprintln!(
        "{n} rules on {} listeners made in moto in {:.1} s",
        services.len(),
        t.elapsed().as_secs_f64()
    );
    Ok((services, rollouts))
}

/// With ROLLOUTD_CANARY_HEALTH_SOURCE=cloudwatch (inherited by the
/// daemon), CloudWatch gets every canary group's healthy host count each
/// minute, as ALB publishes it (through the setup gateway: not counted).
async fn publish_health_if_asked(setup_url: &str, services: &[Service]) {
    if std::env::var("ROLLOUTD_CANARY_HEALTH_SOURCE").as_deref() != Ok("cloudwatch") {
        return;
    }
    let aws = Aws::new(setup_url).await;
    let services = services.to_vec();
    tokio::spawn(async move {
        loop {
            let now = wall_now().millis() / 1000;
            for svc in &services {
                let _ = aws.publish_canary_health(svc, now, 3, 0).await;
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    });
}

/// Writes the rollouts' files in ten batches over `spread_s`; returns when
/// each rollout was applied.
async fn apply_in_batches(
    dir: &std::path::Path,
    rollouts: &[Rollout],
    services: &[Service],
    pause_s: u64,
    spread_s: u64,
) -> anyhow::Result<std::collections::HashMap<String, Time>> {
    let batches = 10;
    let per_batch = rollouts.len().div_ceil(batches);
    let mut applied_at: std::collections::HashMap<String, Time> = Default::default();
    for (b, chunk) in rollouts.chunks(per_batch).enumerate() {
        let text: String = chunk
            .iter()
            .map(|r| spec(r, &services[r.svc], pause_s))
            .collect();
        std::fs::write(dir.join(format!("specs/batch-{b}.yaml")), text)?;
        let written = wall_now();
        for r in chunk {
            applied_at.insert(r.name.clone(), written);
        }
        tokio::time::sleep(Duration::from_secs(spread_s / batches as u64)).await;
    }
    Ok(applied_at)
}

/// Aborts up to `aborts` stepping rollouts that hold canary traffic while
/// the budget is as busy as it gets; returns each abort's time to stable
/// seen carrying all traffic.
async fn abort_some(base: &str, aborts: usize) -> anyhow::Result<Vec<f64>> {
    let mut abort_times = Vec::new();
    let list = get(base, "/api/v1/rollouts");
    let candidates: Vec<String> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|r| {
            r["status"]["observedWeights"]["canary"]
                .as_u64()
                .unwrap_or(0)
                > 0
                && r["status"]["phase"] == "Progressing"
                && r["spec"]["strategy"]["canary"]["steps"]
                    .as_array()
                    .map_or(0, Vec::len)
                    > 3
        })
        .filter_map(|r| r["metadata"]["name"].as_str().map(str::to_string))
        .take(aborts)
        .collect();
    let mut asked = Vec::new();
    for name in &candidates {
        let now = Time::from_millis(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64,
        );
        if post(base, &format!("/api/v1/rollouts/{name}/abort")) == 202 {
            asked.push((name.clone(), now));
        }
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    for (name, when) in asked {
        let events = get(base, &format!("/api/v1/rollouts/{name}/events"));
        let back = events["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["kind"] == "WeightVerified" && e["weightAfter"] == 0)
            .filter_map(|e| at(&e))
            .find(|t| *t >= when);
        match back {
            Some(t) => abort_times.push(t.since(when) as f64 / 1000.0),
            None => eprintln!("  {name}: not back on stable within 60 s"),
        }
    }
    Ok(abort_times)
}

/// The bad canary's rollbacks: from each `RolledBack` event (the failing
/// verdict's decision) to stable seen carrying all traffic.
fn report_bad_canary(base: &str, rollouts: &[Rollout], bad_from: Time) {
    let mut back = Vec::new();
    let mut watched = 0;
    for r in rollouts.iter().filter(|r| r.svc == 0 && !r.stepping) {
        watched += 1;
        let events = get(base, &format!("/api/v1/rollouts/{}/events", r.name));
        let items = events["items"].as_array().cloned().unwrap_or_default();
        let Some(verdict) = items
            .iter()
            .filter(|e| e["kind"] == "RolledBack")
            .filter_map(at)
            .find(|t| *t >= bad_from)
        else {
            continue;
        };
        if let Some(seen) = items
            .iter()
            .filter(|e| e["kind"] == "WeightVerified" && e["weightAfter"] == 0)
            .filter_map(at)
            .find(|t| *t >= verdict)
        {
            back.push(seen.since(verdict) as f64 / 1000.0);
        }
    }
    let rolled = back.len();
    let p50 = percentile(&mut back, 0.5);
    let max = back.iter().copied().fold(f64::NAN, f64::max);
    eprintln!(
        "  bad canary: {rolled} of {watched} analysed rollouts on it rolled back and were seen at stable 100%; failing verdict -> stable seen p50 {p50:.1} s, max {max:.1} s"
    );
}

/// ELBv2 reads and writes per second over the steady part, the busiest
/// one-second window of each (sliding), and GetMetricData calls per 60 s
/// interval; prints the calls by operation.
fn elb_rates(
    log: &[(f64, String, String)],
    steady_from: f64,
    steady_to: f64,
) -> (f64, usize, f64, usize, f64, f64) {
    let elb: Vec<(f64, bool)> = log
        .iter()
        .filter(|(t, s, _)| s == "elasticloadbalancing" && *t >= steady_from && *t <= steady_to)
        .map(|(t, _, op)| (*t, op.starts_with("Describe")))
        .collect();
    let span = (steady_to - steady_from).max(1.0);
    let reads = elb.iter().filter(|(_, r)| *r).count() as f64;
    let writes = elb.iter().filter(|(_, r)| !*r).count() as f64;
    let busiest = |want_read: bool| {
        let times: Vec<f64> = elb
            .iter()
            .filter(|(_, r)| *r == want_read)
            .map(|(t, _)| *t)
            .collect();
        let mut best = 0;
        let mut j = 0;
        for i in 0..times.len() {
            while times[i] - times[j] >= 1.0 {
                j += 1;
            }
            best = best.max(i - j + 1);
        }
        best
    };
    // Which calls the budget went to.
    let mut by_op: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (t, _, op) in log {
        if *t >= steady_from && *t <= steady_to {
            *by_op.entry(op.as_str()).or_default() += 1;
        }
    }
    for (op, count) in &by_op {
        eprintln!("  {op}: {:.2}/s", *count as f64 / span);
    }
    let gmd = log
        .iter()
        .filter(|(t, _, op)| op == "GetMetricData" && *t >= steady_from && *t <= steady_to)
        .count() as f64;
    let gmd_per_interval = gmd / (span / 60.0);
    (
        reads,
        busiest(true),
        writes,
        busiest(false),
        span,
        gmd_per_interval,
    )
}

/// Start lags: from a rollout's file written to its first weight seen on
/// the load balancer (every rollout), and how many never started.
fn report_start_lags(
    base: &str,
    rollouts: &[Rollout],
    applied_at: &std::collections::HashMap<String, Time>,
    n: usize,
) {
    let mut start_lags = Vec::new();
    let mut not_started = 0;
    for r in rollouts {
        let events = get(base, &format!("/api/v1/rollouts/{}/events", r.name));
        let first = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["kind"] == "WeightVerified")
            .and_then(at);
        match (first, applied_at.get(&r.name)) {
            (Some(t), Some(a)) => start_lags.push(t.since(*a) as f64 / 1000.0),
            _ => not_started += 1,
        }
    }
    let start_p50 = percentile(&mut start_lags, 0.5);
    let start_p99 = percentile(&mut start_lags, 0.99);
    eprintln!(
        "  start lag (file written -> first weight seen): p50 {start_p50:.1} s, p99 {start_p99:.1} s; not started by the end: {not_started} of {n}"
    );
}

/// Step lags and read-backs, from the stepping rollouts' events: the lags,
/// how many have a raise never read back, how many went backwards without
/// an abort, how many finished.
fn step_lags(base: &str, rollouts: &[Rollout], pause_s: u64) -> (Vec<f64>, usize, usize, usize) {
    let mut all_lags = Vec::new();
    let mut unread = 0;
    let mut reversed = 0;
    let mut finished = 0;
    for r in rollouts.iter().filter(|r| r.stepping) {
        let events = get(base, &format!("/api/v1/rollouts/{}/events", r.name));
        let items = events["items"].as_array().cloned().unwrap_or_default();
        let (l, read_back, monotonic) = lags(&items, pause_s);
        all_lags.extend(l);
        if !read_back {
            unread += 1;
        }
        if !monotonic && !items.iter().any(|e| e["kind"] == "Aborted") {
            reversed += 1;
        }
        if items.iter().any(|e| e["kind"] == "Succeeded") {
            finished += 1;
        }
    }
    (all_lags, unread, reversed, finished)
}

/// Makes the canary group of `svc` bad from now on (every 10 s).
async fn start_bad_canary(setup_url: &str, svc: &Service) {
    let aws = Aws::new(setup_url).await;
    let svc = svc.clone();
    tokio::spawn(async move {
        loop {
            let _ = publish_bad_canary(&aws, &svc).await;
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });
}

async fn run(n: usize, rolloutd: &std::path::Path) -> anyhow::Result<()> {
    let seconds: u64 = num("--seconds", 360)?;
    let pause_s: u64 = num("--pause-seconds", 300)?;
    let spread_s: u64 = num("--spread-seconds", 300)?;
    let aborts: usize = num("--aborts", 0)?;
    let throttle: f64 = num("--throttle", 0.0)?;
    let per_listener = 50;
    let dir = std::env::temp_dir().join(format!("rolloutd-budget-{n}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("specs"))?;
    let moto = Moto::start(&dir.join("moto.log"))?;
    // The bench's own calls (setup) through one gateway, the daemon's
    // through another, which logs them.
    let setup = Gateway::start(&moto.url, 1).await?;
    let gateway = Gateway::start(&moto.url, 2).await?;
    let aws = Aws::new(&setup.url).await;
    let net = aws.network()?;
    let (services, rollouts) = make_rollouts(&aws, &net, n, per_listener).await?;
    std::fs::write(dir.join("specs/template.yaml"), TEMPLATE)?;
    // With ROLLOUTD_CANARY_HEALTH_SOURCE=cloudwatch (inherited by the
    // daemon), CloudWatch gets every canary group's healthy host count each
    // minute, as ALB publishes it (through the setup gateway: not counted).
    publish_health_if_asked(&setup.url, &services).await;
    let (mut child, base) = rollout_awskit::spawn_rolloutd(rolloutd, &dir, &gateway.url)?;
    if throttle > 0.0 {
        gateway.set_elb_throttle_rate(throttle);
    }
    let applied_at = apply_in_batches(&dir, &rollouts, &services, pause_s, spread_s).await?;
    let steady_from = gateway.elapsed();
    eprintln!("all {n} rollouts applied; running {seconds} s more");
    // With --bad-canary, the canary group of the first load balancer turns
    // bad three minutes before the end: its rollouts that analyse (half of
    // those on it) must roll back, each within one reconcile of its failing
    // verdict, while the budget is as busy as it gets.
    let bad = std::env::args().any(|a| a == "--bad-canary");
    let tail = if bad {
        180
    } else if aborts > 0 {
        60
    } else {
        0
    };
    tokio::time::sleep(Duration::from_secs(seconds.saturating_sub(tail))).await;
    let bad_from = wall_now();
    if bad {
        start_bad_canary(&setup.url, &services[0]).await;
    }
    let mut abort_times = if aborts > 0 {
        abort_some(&base, aborts).await?
    } else {
        Vec::new()
    };
    if bad {
        let waited = if aborts > 0 { 60 } else { 0 };
        tokio::time::sleep(Duration::from_secs(tail - waited)).await;
    }
    let steady_to = gateway.elapsed();
    let log = gateway.log();
    let text = metrics(&base);
    if bad {
        report_bad_canary(&base, &rollouts, bad_from);
    }
    let (reads, busiest_reads, writes, busiest_writes, span, gmd_per_interval) =
        elb_rates(&log, steady_from, steady_to);
    report_start_lags(&base, &rollouts, &applied_at, n);
    let (mut all_lags, unread, reversed, finished) = step_lags(&base, &rollouts, pause_s);
    let _ = child.kill();
    let _ = child.wait();
    let budget_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("rolloutd_aws_budget_") && l.contains("elbv2"))
        .collect();
    for l in &budget_lines {
        eprintln!("  {l}");
    }
    let steps = all_lags.len();
    let p50 = percentile(&mut all_lags, 0.5);
    let p99 = percentile(&mut all_lags, 0.99);
    let abort_p50 = percentile(&mut abort_times, 0.5);
    let abort_max = abort_times.iter().copied().fold(f64::NAN, f64::max);
    println!(
        "| {n} | {:.2} | {} | {:.2} | {} | {gmd_per_interval:.2} | {steps} | {p50:.1} | {p99:.1} | {unread} | {reversed} | {finished}/{} | {} | {abort_p50:.1} | {abort_max:.1} |",
        reads / span,
        busiest_reads,
        writes / span,
        busiest_writes,
        n / 2,
        abort_times.len(),
    );
    drop(moto);
    if std::env::var_os("KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if unread > 0 && throttle == 0.0 {
        bail!("{unread} stepping rollouts have a raise that was never read back");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let counts: Vec<usize> = arg("--rollouts")
        .unwrap_or_else(|| "10,100,1000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .context("--rollouts N,N,…")?;
    let rolloutd = match arg("--rolloutd") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark's directory")?
            .join("rolloutd"),
    };
    println!("| rollouts | ELBv2 reads/s (avg) | busiest 1 s of reads | ELBv2 writes/s (avg) | busiest 1 s of writes | GetMetricData per 60 s | steps measured | step lag p50 (s) | step lag p99 (s) | stepping rollouts with a raise not read back | runs that stepped back | stepping runs finished | aborts | abort → stable seen, p50 (s) | max (s) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in counts {
        run(n, &rolloutd).await?;
    }
    Ok(())
}
