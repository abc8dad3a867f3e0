//! The ALB's CloudWatch side, played every second: requests split by the
//! weights the load balancer holds at that second, 5xx and latency per
//! target group as each behaves (a behaviour can change mid-run).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use rollout_core::sync::lock;
use rollout_sim::Rng;

use crate::alb::{tg_dimension, Aws, Service};

/// How one arm's targets answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// The share of requests answered 5xx.
    pub error_rate: f64,
    /// Mean response time, seconds.
    pub latency: f64,
    /// The share of requests the application counts as a declined payment,
    /// published as the custom metric [`DECLINES`] (`Sum`, dimension
    /// `TargetGroup`) when either arm's share is above zero.
    pub declines: f64,
}

/// The custom metric the publisher plays the application for: namespace and
/// metric name.
pub const DECLINES: (&str, &str) = ("Shop/Payments", "Declines");

/// The traffic of one service.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// The service.
    pub service: Service,
    /// Follow the rule's weights (true) or the default action's.
    pub via_rule: bool,
    /// Requests per second.
    pub rps: f64,
    /// The stable target group's behaviour.
    pub stable: Behaviour,
    /// The canary target group's behaviour.
    pub canary: Behaviour,
}

/// The weights the publisher read, per service: (second, stable, canary, other).
pub type Seen = BTreeMap<String, Vec<(i64, u32, u32, u32)>>;

/// Behaviours that replace a target group's from now on, by ARN.
type Overrides = Arc<Mutex<BTreeMap<String, Behaviour>>>;

/// The running publisher.
pub struct Publisher {
    seen: Arc<Mutex<Seen>>,
    errors: Arc<Mutex<Vec<String>>>,
    overrides: Overrides,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Publisher {
    /// Publishes every second until dropped.
    pub fn start(aws: Aws, traffic: Vec<Traffic>, seed: u64) -> Publisher {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let overrides: Overrides = Arc::default();
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            let errors = Arc::clone(&errors);
            let overrides = Arc::clone(&overrides);
            async move {
                let mut rng = Rng::new(seed);
                loop {
                    // Wake just after each wall-clock second.
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    let wait = 1_000 - (now.as_millis() % 1_000) as u64 + 20;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    let second = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs() as i64
                        - 1;
                    let now_as: BTreeMap<String, Behaviour> = lock(&overrides).clone();
                    for t in &traffic {
                        if let Err(e) = publish(&aws, t, second, &mut rng, &seen, &now_as).await {
                            if let Ok(mut errs) = errors.lock() {
                                errs.push(format!("{}: {e:#}", t.service.name));
                            }
                        }
                    }
                }
            }
        });
        Publisher {
            seen,
            errors,
            overrides,
            task,
        }
    }

    /// From the next second on, the target group `arn` answers as `b`
    /// (whichever role it has: with ping-pong target groups the canary of
    /// one revision is the stable of the next).
    pub fn set_behaviour(&self, arn: &str, b: Behaviour) {
        lock(&self.overrides).insert(arn.to_string(), b);
    }

    /// The weights seen so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Publishing errors so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

async fn publish(
    aws: &Aws,
    t: &Traffic,
    second: i64,
    rng: &mut Rng,
    seen: &Mutex<Seen>,
    overrides: &BTreeMap<String, Behaviour>,
) -> anyhow::Result<()> {
    let (ws, wc, wo) = aws.weights(&t.service, t.via_rule).await?;
    if let Ok(mut s) = seen.lock() {
        s.entry(t.service.name.clone())
            .or_default()
            .push((second, ws, wc, wo));
    }
    let total = f64::from(ws + wc + wo);
    if total == 0.0 {
        return Ok(());
    }
    let lb = t.service.lb_dimension();
    let mut data = Vec::new();
    let mut custom = Vec::new();
    for (tg, weight, b) in [
        (&t.service.stable, ws, t.stable),
        (&t.service.canary, wc, t.canary),
    ] {
        let b = overrides.get(tg.as_str()).copied().unwrap_or(b);
        let requests = rng.poisson(t.rps * f64::from(weight) / total);
        if requests == 0 {
            continue;
        }
        let errors = rng.poisson(requests as f64 * b.error_rate).min(requests);
        let latency = (b.latency * (1.0 + 0.05 * rng.normal())).max(0.000_1);
        let dims = vec![
            Dimension::builder().name("LoadBalancer").value(&lb).build(),
            Dimension::builder()
                .name("TargetGroup")
                .value(tg_dimension(tg))
                .build(),
        ];
        let datum = |name: &str, value: f64, unit: StandardUnit| {
            MetricDatum::builder()
                .metric_name(name)
                .set_dimensions(Some(dims.clone()))
                .timestamp(DateTime::from_secs(second))
                .value(value)
                .unit(unit)
                .storage_resolution(1)
                .build()
        };
        data.push(datum("RequestCount", requests as f64, StandardUnit::Count));
        if errors > 0 {
            data.push(datum(
                "HTTPCode_Target_5XX_Count",
                errors as f64,
                StandardUnit::Count,
            ));
        }
        data.push(datum("TargetResponseTime", latency, StandardUnit::Seconds));
        if t.stable.declines > 0.0 || t.canary.declines > 0.0 {
            let declines = rng.poisson(requests as f64 * b.declines).min(requests);
            custom.push(
                MetricDatum::builder()
                    .metric_name(DECLINES.1)
                    .dimensions(
                        Dimension::builder()
                            .name("TargetGroup")
                            .value(tg_dimension(tg))
                            .build(),
                    )
                    .timestamp(DateTime::from_secs(second))
                    .value(declines as f64)
                    .unit(StandardUnit::Count)
                    .storage_resolution(1)
                    .build(),
            );
        }
    }
    if !custom.is_empty() {
        aws.cw
            .put_metric_data()
            .namespace(DECLINES.0)
            .set_metric_data(Some(custom))
            .send()
            .await
            .context("PutMetricData (custom)")?;
    }
    if data.is_empty() {
        return Ok(());
    }
    aws.cw
        .put_metric_data()
        .namespace("AWS/ApplicationELB")
        .set_metric_data(Some(data))
        .send()
        .await
        .context("PutMetricData")?;
    Ok(())
}
