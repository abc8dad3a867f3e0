//! Value types of the spec that are more than strings: durations,
//! percentages, latency statistics and load-balancer ARNs. Each parses once
//! ("parse, don't validate"), prints back to the form it was read from, and
//! describes itself in the JSON Schema.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::decode::{scalar, Ctx, Decode};
use crate::tree::Node;

/// Implements Display-based serialisation, FromStr-based deserialisation and
/// decoding from a located node for a type that is written as a string.
macro_rules! string_value {
    ($t:ty, $what:expr) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Decode for $t {
            fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
                let (text, _) = scalar(node, cx, $what)?;
                match text.parse::<$t>() {
                    Ok(v) => Some(v),
                    Err(e) => {
                        cx.error(node.pos, e);
                        None
                    }
                }
            }
        }
    };
}

mod arn;
pub use arn::*;

/// A span of time, written `500ms`, `90s`, `5m`, `1h` or combined (`1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(u64);

impl Duration {
    /// From whole milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms)
    }
    /// From whole seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(s.saturating_mul(1000))
    }
    /// In milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    /// In seconds (rounded down).
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }
    /// As a standard duration.
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration `{s}`: expected a whole number and a unit ms, s, m or h (e.g. 90s, 5m, 1h)"
            )
        };
        if s.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let factor = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = n
                .checked_mul(factor)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("duration `{s}` is too long"))?;
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        if ms % 1000 != 0 {
            return write!(f, "{ms}ms");
        }
        let s = ms / 1000;
        let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

string_value!(Duration, "a duration such as 90s or 5m");

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h))+$",
            "description": "A duration: a whole number and a unit ms, s, m or h, e.g. 90s, 5m, 1h30m."
        })
    }
}

/// A percentage, written `50%` (may have decimals: `0.5%`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(f64);

impl Percent {
    /// From a percentage value (50.0 for 50%).
    pub fn new(percent: f64) -> Option<Self> {
        (percent.is_finite() && percent >= 0.0).then_some(Percent(percent))
    }
    /// The percentage value (50.0 for 50%).
    pub fn value(self) -> f64 {
        self.0
    }
    /// As a fraction (0.5 for 50%).
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let Some(number) = s.strip_suffix('%') else {
            return Err(format!(
                "invalid percentage `{s}`: write a number followed by % (e.g. 50%), so 0.5 and 50 cannot be mistaken for each other"
            ));
        };
        let valid = !number.is_empty()
            && number.chars().all(|c| c.is_ascii_digit() || c == '.')
            && number.chars().filter(|&c| c == '.').count() <= 1
            && !number.starts_with('.')
            && !number.ends_with('.');
        let value: f64 = if valid {
            number.parse().map_err(|_| String::new())?
        } else {
            return Err(format!(
                "invalid percentage `{s}`: expected a non-negative number followed by % (e.g. 50%)"
            ));
        };
        Percent::new(value).ok_or_else(|| format!("invalid percentage `{s}`"))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

string_value!(Percent, "a percentage such as 50%");

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]+)?%$",
            "description": "A percentage: a non-negative number followed by %, e.g. 50% or 0.5%."
        })
    }
}

/// Which statistic of `TargetResponseTime` is compared.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LatencyStatistic {
    /// The mean response time.
    #[default]
    Average,
    /// A percentile, `p50`, `p99`, `p99.9` (the number is in (0, 100)).
    Percentile(f64),
}

impl FromStr for LatencyStatistic {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "Average" {
            return Ok(LatencyStatistic::Average);
        }
        let p = s
            .strip_prefix('p')
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .and_then(|n| n.parse::<f64>().ok());
        match p {
            Some(p) if p > 0.0 && p < 100.0 => Ok(LatencyStatistic::Percentile(p)),
            Some(_) => Err(format!(
                "statistic `{s}`: a percentile must be between p0 and p100, exclusive"
            )),
            None => Err(format!(
                "unknown statistic `{s}`: expected Average or a percentile such as p50, p90, p99"
            )),
        }
    }
}

impl fmt::Display for LatencyStatistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LatencyStatistic::Average => f.write_str("Average"),
            LatencyStatistic::Percentile(p) => write!(f, "p{p}"),
        }
    }
}

string_value!(LatencyStatistic, "Average or a percentile such as p99");

impl JsonSchema for LatencyStatistic {
    fn schema_name() -> Cow<'static, str> {
        "LatencyStatistic".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^(Average|p[0-9]+(\\.[0-9]+)?)$",
            "description": "Average, or a percentile such as p50, p90, p99, p99.9."
        })
    }
}

/// The CloudWatch statistic of a custom metric.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum MetricStatistic {
    /// The mean of the datapoints' values.
    #[default]
    Average,
    /// The total.
    Sum,
    /// The smallest value.
    Minimum,
    /// The largest value.
    Maximum,
    /// How many values were published.
    SampleCount,
    /// A percentile, `p50`, `p99`, `p99.9` (the number is in (0, 100)).
    Percentile(f64),
}

impl MetricStatistic {
    /// Whether the statistic grows with the traffic an arm receives, so that
    /// two arms of different weights cannot be compared by it directly.
    pub fn grows_with_traffic(self) -> bool {
        matches!(self, MetricStatistic::Sum | MetricStatistic::SampleCount)
    }
}

impl FromStr for MetricStatistic {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Average" => return Ok(MetricStatistic::Average),
            "Sum" => return Ok(MetricStatistic::Sum),
            "Minimum" => return Ok(MetricStatistic::Minimum),
            "Maximum" => return Ok(MetricStatistic::Maximum),
            "SampleCount" => return Ok(MetricStatistic::SampleCount),
            _ => {}
        }
        match s.parse::<LatencyStatistic>() {
            Ok(LatencyStatistic::Percentile(p)) => Ok(MetricStatistic::Percentile(p)),
            Ok(LatencyStatistic::Average) => Ok(MetricStatistic::Average),
            Err(e) if s.starts_with('p') => Err(e),
            Err(_) => Err(format!(
                "unknown statistic `{s}`: expected Average, Sum, Minimum, Maximum, SampleCount or a percentile such as p99"
            )),
        }
    }
}

impl fmt::Display for MetricStatistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricStatistic::Average => f.write_str("Average"),
            MetricStatistic::Sum => f.write_str("Sum"),
            MetricStatistic::Minimum => f.write_str("Minimum"),
            MetricStatistic::Maximum => f.write_str("Maximum"),
            MetricStatistic::SampleCount => f.write_str("SampleCount"),
            MetricStatistic::Percentile(p) => write!(f, "p{p}"),
        }
    }
}

string_value!(
    MetricStatistic,
    "Average, Sum, Minimum, Maximum, SampleCount or a percentile such as p99"
);

impl JsonSchema for MetricStatistic {
    fn schema_name() -> Cow<'static, str> {
        "MetricStatistic".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^(Average|Sum|Minimum|Maximum|SampleCount|p[0-9]+(\\.[0-9]+)?)$",
            "description": "A CloudWatch statistic: Average, Sum, Minimum, Maximum, SampleCount, or a percentile such as p99."
        })
    }
}

/// A name that is a lowercase RFC 1123 DNS label: at most 63 characters of
/// `a-z`, `0-9` and `-`, starting and ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(Name(s.to_string()))
        } else if s.len() > 63 {
            Err(format!(
                "name `{}` is {} characters long; a name is a DNS label of at most 63",
                crate::decode::shown(s),
                s.len()
            ))
        } else {
            Err(format!(
                "name `{}` is not a lowercase DNS label (a-z, 0-9 and '-', starting and ending with a letter or digit)",
                crate::decode::shown(s)
            ))
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(Name, "a name");

impl JsonSchema for Name {
    fn schema_name() -> Cow<'static, str> {
        "Name".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 63,
            "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            "description": "A lowercase DNS label (RFC 1123)."
        })
    }
}

/// A traffic weight: the canary's percentage, 0–100.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(try_from = "u8")]
pub struct Weight(u8);

impl Weight {
    /// All traffic.
    pub const FULL: Weight = Weight(100);
    /// No traffic.
    pub const ZERO: Weight = Weight(0);
    /// A weight, when `w` is at most 100.
    pub const fn new(w: u8) -> Option<Self> {
        if w <= 100 {
            Some(Weight(w))
        } else {
            None
        }
    }
    /// The percentage.
    pub const fn get(self) -> u8 {
        self.0
    }
    /// What the other arm gets: `100 - self`.
    pub const fn complement(self) -> Weight {
        Weight(100 - self.0)
    }
}

impl TryFrom<u8> for Weight {
    type Error = String;
    fn try_from(w: u8) -> Result<Self, String> {
        Weight::new(w).ok_or_else(|| format!("weight {w} is outside 0–100"))
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Decode for Weight {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let (text, plain) = scalar(node, cx, "a weight from 0 to 100")?;
        match text.parse::<i64>() {
            Ok(w) if plain && (0..=100).contains(&w) => Weight::new(w as u8),
            Ok(w) if plain => {
                cx.error(node.pos, format!("weight {w} is outside 0–100"));
                None
            }
            _ => {
                cx.error(
                    node.pos,
                    format!(
                        "expected a weight from 0 to 100, found {} `{text}`",
                        node.describe()
                    ),
                );
                None
            }
        }
    }
}

impl JsonSchema for Weight {
    fn schema_name() -> Cow<'static, str> {
        "Weight".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": 0,
            "maximum": 100,
            "description": "A percentage of the traffic, 0 to 100."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (text, ms) in [
            ("90s", 90_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("0s", 0),
        ] {
            let d: Duration = text.parse().expect(text);
            assert_eq!(d.as_millis(), ms, "{text}");
            assert_eq!(d.to_string().parse::<Duration>(), Ok(d), "{text}");
        }
        assert_eq!(Duration::from_secs(90).to_string(), "1m30s");
        for bad in ["", "5", "m", "5 m", "-5s", "5d", "1.5m", "s5"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} should fail");
        }
        assert!("99999999999999999999h".parse::<Duration>().is_err());
    }

    #[test]
    fn percents_need_the_sign() {
        assert_eq!("50%".parse::<Percent>().map(Percent::fraction), Ok(0.5));
        assert_eq!("0.5%".parse::<Percent>().map(Percent::value), Ok(0.5));
        for bad in ["50", "%", "-5%", "5.%", ".5%", "5..0%", "abc%", "1e3%"] {
            assert!(bad.parse::<Percent>().is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn statistics() {
        assert_eq!("Average".parse(), Ok(LatencyStatistic::Average));
        assert_eq!("p99".parse(), Ok(LatencyStatistic::Percentile(99.0)));
        assert_eq!("p99.9".parse(), Ok(LatencyStatistic::Percentile(99.9)));
        assert!("p100".parse::<LatencyStatistic>().is_err());
        assert!("average".parse::<LatencyStatistic>().is_err());
    }

    #[test]
    fn arns_parse_into_dimensions() {
        let l: ListenerArn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2".parse().expect("listener");
        assert_eq!(l.load_balancer, "app/shop/50dc6c495c0c9188");
        assert_eq!(l.parts.region, "us-east-1");
        let t: TargetGroupArn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-blue/73e2d6bc24d8a067".parse().expect("tg");
        assert_eq!(t.dimension, "targetgroup/shop-blue/73e2d6bc24d8a067");
        let r: RuleArn = "arn:aws:elasticloadbalancing:eu-west-1:210987654321:listener-rule/app/edge/7a1b2c3d4e5f6a7b/0a1b2c3d4e5f6a7b/9f8e7d6c5b4a3f2e".parse().expect("rule");
        assert_eq!(r.listener_id, "0a1b2c3d4e5f6a7b");
        let nlb = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/net/shop/50dc6c495c0c9188/f2f7dc8efc522ab2".parse::<ListenerArn>();
        assert!(nlb.expect_err("nlb").contains("Network Load Balancer"));
    }
}
