//! An Application Load Balancer in moto, made through the APIs a user would
//! call, and a publisher that plays its CloudWatch side: every second it
//! reads the weights the load balancer holds at that moment, splits the
//! service's requests between the two target groups by them, and publishes
//! `RequestCount`, `HTTPCode_Target_5XX_Count` (only when non-zero, as ALB
//! does) and `TargetResponseTime` per target group with `PutMetricData`
//! (the publisher lives in [`crate::publisher`]).

use anyhow::{anyhow, Context};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, RuleCondition, TargetDescription,
    TargetGroupTuple, TargetTypeEnum,
};

/// SDK clients pointed at one endpoint, with test credentials.
#[derive(Clone)]
pub struct Aws {
    /// ELBv2.
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    /// CloudWatch.
    pub cw: aws_sdk_cloudwatch::Client,
    /// Fault Injection Service.
    pub fis: aws_sdk_fis::Client,
    endpoint: String,
    region: String,
    /// The access key the raw EC2 calls are signed with (moto tells the
    /// account from it).
    access_key: String,
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
    /// Clients for `endpoint` (moto, or a gateway in front of it), in
    /// us-east-1.
    pub async fn new(endpoint: &str) -> Aws {
        Aws::in_region(endpoint, "us-east-1").await
    }

    /// Clients for `endpoint` in `region` (moto keeps each region apart,
    /// as AWS does).
    pub async fn in_region(endpoint: &str, region: &str) -> Aws {
        let config = Aws::base(endpoint, region).await;
        Aws {
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            cw: aws_sdk_cloudwatch::Client::new(&config),
            fis: aws_sdk_fis::Client::new(&config),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region: region.to_string(),
            access_key: "testing".into(),
        }
    }

    /// Clients acting in another account through `role_arn` (STS
    /// `AssumeRole`, as rolloutd does; moto keeps accounts apart).
    pub async fn in_account(endpoint: &str, region: &str, role_arn: &str) -> anyhow::Result<Aws> {
        use aws_sdk_cloudwatch::config::ProvideCredentials;
        let base = Aws::base(endpoint, region).await;
        let provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
            .session_name("rolloutd-tests")
            .configure(&base)
            .build()
            .await;
        let creds = provider.provide_credentials().await.context("AssumeRole")?;
        let config = base
            .to_builder()
            .credentials_provider(aws_sdk_cloudwatch::config::SharedCredentialsProvider::new(
                provider,
            ))
            .build();
        Ok(Aws {
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            cw: aws_sdk_cloudwatch::Client::new(&config),
            fis: aws_sdk_fis::Client::new(&config),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region: region.to_string(),
            access_key: creds.access_key_id().to_string(),
        })
    }

    /// The endpoint these clients reach.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn base(endpoint: &str, region: &str) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new(region.to_string()))
            .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "rolloutd-tests",
            ))
            .load()
            .await
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
                &format!(
                    "AWS4-HMAC-SHA256 Credential={}/20260101/{}/ec2/aws4_request, SignedHeaders=host, Signature=0",
                    self.access_key, self.region
                ),
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
        for (i, zone) in ["a", "b"]
            .iter()
            .map(|z| format!("{}{z}", self.region))
            .enumerate()
        {
            let cidr = format!("10.0.{}.0/24", i + 1);
            let xml = self.ec2(&[
                ("Action", "CreateSubnet"),
                ("VpcId", &vpc),
                ("CidrBlock", &cidr),
                ("AvailabilityZone", &zone),
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

    /// Publishes the canary target group's `HealthyHostCount` and
    /// `UnHealthyHostCount` for the minute that holds `second` (epoch
    /// seconds), as ALB does every minute.
    pub async fn publish_canary_health(
        &self,
        svc: &Service,
        second: i64,
        healthy: u32,
        unhealthy: u32,
    ) -> anyhow::Result<()> {
        let dims = vec![
            Dimension::builder()
                .name("LoadBalancer")
                .value(svc.lb_dimension())
                .build(),
            Dimension::builder()
                .name("TargetGroup")
                .value(tg_dimension(&svc.canary))
                .build(),
        ];
        let datum = |name: &str, value: u32| {
            MetricDatum::builder()
                .metric_name(name)
                .set_dimensions(Some(dims.clone()))
                .timestamp(DateTime::from_secs(second - second.rem_euclid(60)))
                .value(f64::from(value))
                .unit(StandardUnit::Count)
                .build()
        };
        self.cw
            .put_metric_data()
            .namespace("AWS/ApplicationELB")
            .set_metric_data(Some(vec![
                datum("HealthyHostCount", healthy),
                datum("UnHealthyHostCount", unhealthy),
            ]))
            .send()
            .await
            .context("PutMetricData (health)")?;
        Ok(())
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

    /// Creates a CloudWatch alarm `name` on the service's 5xx count (its
    /// state is then set by hand with [`Aws::set_alarm`], as
    /// `aws cloudwatch set-alarm-state` does).
    pub async fn put_alarm(&self, name: &str, svc: &Service) -> anyhow::Result<()> {
        self.cw
            .put_metric_alarm()
            .alarm_name(name)
            .namespace("AWS/ApplicationELB")
            .metric_name("HTTPCode_Target_5XX_Count")
            .dimensions(
                Dimension::builder()
                    .name("LoadBalancer")
                    .value(svc.lb_dimension())
                    .build(),
            )
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(100.0)
            .comparison_operator(
                aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold,
            )
            .send()
            .await
            .context("PutMetricAlarm")?;
        Ok(())
    }

    /// Sets an alarm's state (`OK`, `ALARM`, `INSUFFICIENT_DATA`).
    pub async fn set_alarm(&self, name: &str, state: &str, reason: &str) -> anyhow::Result<()> {
        self.cw
            .set_alarm_state()
            .alarm_name(name)
            .state_value(aws_sdk_cloudwatch::types::StateValue::from(state))
            .state_reason(reason)
            .send()
            .await
            .context("SetAlarmState")?;
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

pub use crate::publisher::{Behaviour, Publisher, Seen, Traffic, DECLINES};
