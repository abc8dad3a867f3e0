//! An Application Load Balancer in moto, made through the APIs a user would
//! call, and a publisher that plays its CloudWatch side: every second it
//! reads the weights the load balancer holds at that moment, splits the
//! service's requests between the two target groups by them, and publishes
//! `RequestCount`, `HTTPCode_Target_5XX_Count` (only when non-zero, as ALB
//! does) and `TargetResponseTime` per target group with `PutMetricData`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, RuleCondition, TargetDescription,
    TargetGroupTuple, TargetTypeEnum,
};
use rollout_sim::Rng;

/// SDK clients pointed at one endpoint, with test credentials.
#[derive(Clone)]
pub struct Aws {
    /// ELBv2.
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    /// CloudWatch.
    pub cw: aws_sdk_cloudwatch::Client,
    endpoint: String,
}

/// The environment a process needs to reach `endpoint` the standard way.
pub fn env_for(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

impl Aws {
    /// Clients for `endpoint` (moto, or a gateway in front of it).
    pub async fn new(endpoint: &str) -> Aws {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "rolloutd-tests",
            ))
            .load()
            .await;
        Aws {
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            cw: aws_sdk_cloudwatch::Client::new(&config),
            endpoint: endpoint.trim_end_matches('/').to_string(),
        }
    }

    /// One EC2 query-protocol call (the tests need a VPC and subnets, and
    /// nothing else of EC2, so no EC2 SDK is compiled for them).
    fn ec2(&self, params: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut body = String::from("Version=2016-11-15");
        for (k, v) in params {
            body.push_str(&format!("&{k}={v}"));
        }
        let resp = ureq::post(&format!("{}/", self.endpoint))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
            )
            .send(body.as_bytes())
            .context("EC2 call")?
            .body_mut()
            .read_to_string()?;
        Ok(resp)
    }

    /// A VPC with two subnets in two zones, as an ALB needs.
    pub fn network(&self) -> anyhow::Result<(String, Vec<String>)> {
        let tag = |xml: &str, name: &str| -> anyhow::Result<String> {
            let open = format!("<{name}>");
            let at = xml
                .find(&open)
                .ok_or_else(|| anyhow!("no <{name}> in {xml}"))?
                + open.len();
            let end = xml[at..]
                .find('<')
                .ok_or_else(|| anyhow!("unclosed <{name}>"))?;
            Ok(xml[at..at + end].to_string())
        };
        let vpc = tag(
            &self.ec2(&[("Action", "CreateVpc"), ("CidrBlock", "10.0.0.0/16")])?,
            "vpcId",
        )?;
        let mut subnets = Vec::new();
        for (i, zone) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
            let cidr = format!("10.0.{}.0/24", i + 1);
            let xml = self.ec2(&[
                ("Action", "CreateSubnet"),
                ("VpcId", &vpc),
                ("CidrBlock", &cidr),
                ("AvailabilityZone", zone),
            ])?;
            subnets.push(tag(&xml, "subnetId")?);
        }
        Ok((vpc, subnets))
    }

    /// A load balancer with a stable and a canary target group (each with
    /// one healthy target unless `canary_targets` is false) and an HTTP
    /// listener forwarding everything to stable.
    pub async fn service(
        &self,
        name: &str,
        network: &(String, Vec<String>),
        canary_targets: bool,
    ) -> anyhow::Result<Service> {
        let lb = self
            .elb
            .create_load_balancer()
            .name(name)
            .set_subnets(Some(network.1.clone()))
            .send()
            .await
            .context("CreateLoadBalancer")?;
        let lb_arn = lb
            .load_balancers()
            .first()
            .and_then(|l| l.load_balancer_arn())
            .ok_or_else(|| anyhow!("no load balancer ARN"))?
            .to_string();
        let mut tgs = Vec::new();
        for arm in ["blue", "green"] {
            tgs.push(self.target_group(&format!("{name}-{arm}"), network).await?);
        }
        let (stable, canary) = (tgs[0].clone(), tgs[1].clone());
        self.register(&stable, "10.0.1.10").await?;
        if canary_targets {
            self.register(&canary, "10.0.1.20").await?;
        }
        let listener = self
            .elb
            .create_listener()
            .load_balancer_arn(&lb_arn)
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .port(80)
            .default_actions(forward_to(&stable))
            .send()
            .await
            .context("CreateListener")?;
        let listener = listener
            .listeners()
            .first()
            .and_then(|l| l.listener_arn())
            .ok_or_else(|| anyhow!("no listener ARN"))?
            .to_string();
        Ok(Service {
            name: name.to_string(),
            load_balancer: lb_arn,
            listener,
            rule: None,
            stable,
            canary,
        })
    }

    /// Adds a path rule forwarding `/api/*` to stable; the rollout shifts it.
    pub async fn add_rule(&self, svc: &mut Service) -> anyhow::Result<()> {
        let out = self
            .elb
            .create_rule()
            .listener_arn(&svc.listener)
            .priority(10)
            .conditions(
                RuleCondition::builder()
                    .field("path-pattern")
                    .values("/api/*")
                    .build(),
            )
            .actions(forward_to(&svc.stable))
            .send()
            .await
            .context("CreateRule")?;
        svc.rule = Some(
            out.rules()
                .first()
                .and_then(|r| r.rule_arn())
                .ok_or_else(|| anyhow!("no rule ARN"))?
                .to_string(),
        );
        Ok(())
    }

    /// An empty IP target group for HTTP on port 80 in the VPC; its ARN.
    async fn target_group(
        &self,
        name: &str,
        network: &(String, Vec<String>),
    ) -> anyhow::Result<String> {
        let tg = self
            .elb
            .create_target_group()
            .name(name)
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .port(80)
            .vpc_id(&network.0)
            .target_type(TargetTypeEnum::Ip)
            .send()
            .await
            .context("CreateTargetGroup")?;
        Ok(tg
            .target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
            .ok_or_else(|| anyhow!("no target group ARN"))?
            .to_string())
    }

    /// One more target group in the service's VPC (not part of any
    /// rollout), with one target.
    pub async fn extra_target_group(
        &self,
        name: &str,
        network: &(String, Vec<String>),
    ) -> anyhow::Result<String> {
        let arn = self.target_group(name, network).await?;
        self.register(&arn, "10.0.1.30").await?;
        Ok(arn)
    }

    /// Sets the listener's default action to forward to these target groups
    /// with these weights, as a person (or Terraform) would.
    pub async fn set_forward(&self, svc: &Service, groups: &[(&str, i32)]) -> anyhow::Result<()> {
        let tuples: Vec<TargetGroupTuple> = groups
            .iter()
            .map(|(arn, w)| {
                TargetGroupTuple::builder()
                    .target_group_arn(*arn)
                    .weight(*w)
                    .build()
            })
            .collect();
        let action = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(
                ForwardActionConfig::builder()
                    .set_target_groups(Some(tuples))
                    .build(),
            )
            .build();
        self.elb
            .modify_listener()
            .listener_arn(&svc.listener)
            .default_actions(action)
            .send()
            .await
            .context("ModifyListener")?;
        Ok(())
    }

    /// Adds a rule at `priority` (path `/p{priority}/*`) forwarding to the
    /// service's stable target group; returns its ARN.
    pub async fn rule_at(&self, svc: &Service, priority: i32) -> anyhow::Result<String> {
        let out = self
            .elb
            .create_rule()
            .listener_arn(&svc.listener)
            .priority(priority)
            .conditions(
                RuleCondition::builder()
                    .field("path-pattern")
                    .values(format!("/p{priority}/*"))
                    .build(),
            )
            .actions(forward_to(&svc.stable))
            .send()
            .await
            .context("CreateRule")?;
        Ok(out
            .rules()
            .first()
            .and_then(|r| r.rule_arn())
            .ok_or_else(|| anyhow!("no rule ARN"))?
            .to_string())
    }

    /// Registers one IP target.
    pub async fn register(&self, tg: &str, ip: &str) -> anyhow::Result<()> {
        self.elb
            .register_targets()
            .target_group_arn(tg)
            .targets(TargetDescription::builder().id(ip).port(80).build())
            .send()
            .await
            .context("RegisterTargets")?;
        Ok(())
    }

    /// The forward weights (stable, canary, other) of the listener's default
    /// action, or of its rule when `rule` is given.
    pub async fn weights(&self, svc: &Service, rule: bool) -> anyhow::Result<(u32, u32, u32)> {
        let actions: Vec<Action> = match (&svc.rule, rule) {
            (Some(r), true) => self
                .elb
                .describe_rules()
                .rule_arns(r)
                .send()
                .await?
                .rules()
                .first()
                .map(|r| r.actions().to_vec())
                .unwrap_or_default(),
            _ => self
                .elb
                .describe_listeners()
                .listener_arns(&svc.listener)
                .send()
                .await?
                .listeners()
                .first()
                .map(|l| l.default_actions().to_vec())
                .unwrap_or_default(),
        };
        let mut w = (0, 0, 0);
        for a in actions
            .iter()
            .filter(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
        {
            let groups: Vec<(String, u32)> = match a.forward_config() {
                Some(f) if !f.target_groups().is_empty() => f
                    .target_groups()
                    .iter()
                    .map(|t| {
                        (
                            t.target_group_arn().unwrap_or("").to_string(),
                            t.weight().map_or(1, |w| u32::try_from(w).unwrap_or(0)),
                        )
                    })
                    .collect(),
                _ => a
                    .target_group_arn()
                    .map(|t| vec![(t.to_string(), 1)])
                    .unwrap_or_default(),
            };
            for (arn, weight) in groups {
                if arn == svc.stable {
                    w.0 += weight;
                } else if arn == svc.canary {
                    w.1 += weight;
                } else {
                    w.2 += weight;
                }
            }
        }
        Ok(w)
    }
}

fn forward_to(tg: &str) -> Action {
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .forward_config(
            ForwardActionConfig::builder()
                .target_groups(
                    TargetGroupTuple::builder()
                        .target_group_arn(tg)
                        .weight(1)
                        .build(),
                )
                .build(),
        )
        .build()
}

/// A service behind a load balancer.
#[derive(Debug, Clone)]
pub struct Service {
    /// The load balancer's name.
    pub name: String,
    /// Its ARN.
    pub load_balancer: String,
    /// Its listener's ARN.
    pub listener: String,
    /// The rule a rollout shifts, when it shifts a rule.
    pub rule: Option<String>,
    /// The stable target group's ARN.
    pub stable: String,
    /// The canary target group's ARN.
    pub canary: String,
}

impl Service {
    /// The CloudWatch `LoadBalancer` dimension: `app/NAME/ID`.
    pub fn lb_dimension(&self) -> String {
        self.load_balancer
            .split_once(":loadbalancer/")
            .map_or_else(String::new, |(_, d)| d.to_string())
    }
}

/// The `TargetGroup` dimension of a target group ARN: `targetgroup/NAME/ID`.
pub fn tg_dimension(arn: &str) -> String {
    arn.rsplit_once(':')
        .map_or_else(String::new, |(_, d)| d.to_string())
}

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

/// The running publisher.
pub struct Publisher {
    seen: Arc<Mutex<Seen>>,
    errors: Arc<Mutex<Vec<String>>>,
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
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            let errors = Arc::clone(&errors);
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
                    for t in &traffic {
                        if let Err(e) = publish(&aws, t, second, &mut rng, &seen).await {
                            if let Ok(mut errs) = errors.lock() {
                                errs.push(format!("{}: {e:#}", t.service.name));
                            }
                        }
                    }
                }
            }
        });
        Publisher { seen, errors, task }
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
