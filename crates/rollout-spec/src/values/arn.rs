//! Elastic Load Balancing ARNs: listeners, listener rules, target groups.

use super::*;

/// The parts every Elastic Load Balancing ARN has.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ElbArnParts {
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: String,
    /// The region, e.g. `us-east-1`.
    pub region: String,
    /// The 12-digit account.
    pub account: String,
}

fn parse_elb_arn<'a>(
    s: &'a str,
    expected: &str,
) -> Result<(ElbArnParts, &'a str, &'a str), String> {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return Err(format!(
            "`{s}` is not an ARN: expected arn:aws:elasticloadbalancing:REGION:ACCOUNT:{expected}/…"
        ));
    }
    let (partition, service, region, account, resource) =
        (parts[1], parts[2], parts[3], parts[4], parts[5]);
    if !matches!(partition, "aws" | "aws-cn" | "aws-us-gov") {
        return Err(format!(
            "ARN partition `{partition}` is not one of aws, aws-cn, aws-us-gov"
        ));
    }
    if service != "elasticloadbalancing" {
        return Err(format!(
            "this is an ARN of service `{service}`; expected an elasticloadbalancing {expected} ARN"
        ));
    }
    let region_ok = {
        let segs: Vec<&str> = region.split('-').collect();
        segs.len() >= 3
            && segs.iter().all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
            && segs
                .last()
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
    };
    if !region_ok {
        return Err(format!(
            "ARN region `{region}` is not a region such as us-east-1"
        ));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "ARN account `{account}` is not a 12-digit account ID"
        ));
    }
    let (kind, rest) = resource.split_once('/').unwrap_or((resource, ""));
    if kind != expected {
        return Err(format!("expected a {expected} ARN, found a {kind} ARN"));
    }
    Ok((
        ElbArnParts {
            partition: partition.into(),
            region: region.into(),
            account: account.into(),
        },
        kind,
        rest,
    ))
}

fn id_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn check_lb(
    kind: &str,
    lb_type: &str,
    lb_name: &str,
    lb_id: &str,
    arn: &str,
) -> Result<(), String> {
    if lb_type == "net" || lb_type == "gwy" {
        return Err(format!(
            "`{arn}` belongs to a {} Load Balancer; rolloutd shifts weights on Application Load Balancers ({kind}/app/…)",
            if lb_type == "net" { "Network" } else { "Gateway" }
        ));
    }
    if lb_type != "app" || !name_ok(lb_name) || !id_ok(lb_id) {
        return Err(format!(
            "`{arn}` is not a well-formed {kind} ARN: expected …:{kind}/app/LB-NAME/LB-ID/…"
        ));
    }
    Ok(())
}

/// An Application Load Balancer listener: `…:listener/app/NAME/LB-ID/LISTENER-ID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenerArn {
    raw: String,
    /// Partition, region and account.
    pub parts: ElbArnParts,
    /// `app/NAME/LB-ID`, the CloudWatch `LoadBalancer` dimension.
    pub load_balancer: String,
    /// The listener's own ID.
    pub listener_id: String,
}

impl FromStr for ListenerArn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (parts, kind, rest) = parse_elb_arn(s, "listener")?;
        let segs: Vec<&str> = rest.split('/').collect();
        if segs.len() != 4 {
            check_lb(kind, segs.first().copied().unwrap_or(""), "", "", s)?;
            return Err(format!(
                "`{s}` is not a well-formed listener ARN: expected …:listener/app/LB-NAME/LB-ID/LISTENER-ID"
            ));
        }
        check_lb(kind, segs[0], segs[1], segs[2], s)?;
        if !id_ok(segs[3]) {
            return Err(format!(
                "`{s}`: the listener ID `{}` is not hexadecimal",
                segs[3]
            ));
        }
        Ok(ListenerArn {
            raw: s.into(),
            parts,
            load_balancer: segs[..3].join("/"),
            listener_id: segs[3].into(),
        })
    }
}

/// A rule of an Application Load Balancer listener:
/// `…:listener-rule/app/NAME/LB-ID/LISTENER-ID/RULE-ID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleArn {
    raw: String,
    /// Partition, region and account.
    pub parts: ElbArnParts,
    /// `app/NAME/LB-ID`.
    pub load_balancer: String,
    /// The listener the rule belongs to.
    pub listener_id: String,
    /// The rule's own ID.
    pub rule_id: String,
}

impl FromStr for RuleArn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (parts, kind, rest) = parse_elb_arn(s, "listener-rule")?;
        let segs: Vec<&str> = rest.split('/').collect();
        if segs.len() != 5 {
            check_lb(kind, segs.first().copied().unwrap_or(""), "", "", s)?;
            return Err(format!(
                "`{s}` is not a well-formed listener-rule ARN: expected …:listener-rule/app/LB-NAME/LB-ID/LISTENER-ID/RULE-ID"
            ));
        }
        check_lb(kind, segs[0], segs[1], segs[2], s)?;
        if !id_ok(segs[3]) || !id_ok(segs[4]) {
            return Err(format!(
                "`{s}`: the listener and rule IDs must be hexadecimal"
            ));
        }
        Ok(RuleArn {
            raw: s.into(),
            parts,
            load_balancer: segs[..3].join("/"),
            listener_id: segs[3].into(),
            rule_id: segs[4].into(),
        })
    }
}

/// A target group: `…:targetgroup/NAME/ID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetGroupArn {
    raw: String,
    /// Partition, region and account.
    pub parts: ElbArnParts,
    /// `targetgroup/NAME/ID`, the CloudWatch `TargetGroup` dimension.
    pub dimension: String,
}

impl FromStr for TargetGroupArn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (parts, _, rest) = parse_elb_arn(s, "targetgroup")?;
        let segs: Vec<&str> = rest.split('/').collect();
        if segs.len() != 2 || !name_ok(segs[0]) || !id_ok(segs[1]) {
            return Err(format!(
                "`{s}` is not a well-formed target group ARN: expected …:targetgroup/NAME/ID"
            ));
        }
        Ok(TargetGroupArn {
            raw: s.into(),
            parts,
            dimension: format!("targetgroup/{rest}"),
        })
    }
}

macro_rules! arn_common {
    ($t:ty, $what:expr, $pattern:expr) => {
        impl $t {
            /// The ARN as written.
            pub fn as_str(&self) -> &str {
                &self.raw
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.raw)
            }
        }
        string_value!($t, $what);
        impl JsonSchema for $t {
            fn schema_name() -> Cow<'static, str> {
                stringify!($t).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": concat!("The ARN of ", $what, ".")
                })
            }
        }
    };
}

arn_common!(
    ListenerArn,
    "an Application Load Balancer listener",
    "^arn:aws(-cn|-us-gov)?:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:listener/app/[A-Za-z0-9-]+/[0-9a-f]+/[0-9a-f]+$"
);
arn_common!(
    RuleArn,
    "an Application Load Balancer listener rule",
    "^arn:aws(-cn|-us-gov)?:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:listener-rule/app/[A-Za-z0-9-]+/[0-9a-f]+/[0-9a-f]+/[0-9a-f]+$"
);
arn_common!(
    TargetGroupArn,
    "a target group",
    "^arn:aws(-cn|-us-gov)?:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:targetgroup/[A-Za-z0-9-]+/[0-9a-f]+$"
);
