//! The `Rollout` and `AnalysisTemplate` documents as typed values.
//!
//! The serde and schemars derives here are the single description of the
//! wire shape: the JSON Schema under `docs/schema/` is generated from them,
//! and the API serialises with them. The [`Decode`] impls beside each type
//! read the same shape from a located tree, field for field; a round-trip test
//! (`tests/spec.rs`) holds the two to the same names.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::decode::{Ctx, Decode};
use crate::tree::Node;
use crate::values::{
    Duration, LatencyStatistic, ListenerArn, MetricStatistic, Name, Percent, RuleArn,
    TargetGroupArn, Weight,
};

mod strategy;
mod targets;
mod template;
pub use strategy::*;
pub use targets::*;
pub use template::*;

/// The only `apiVersion` this release reads.
pub const API_VERSION: &str = "rolloutd.dev/v1alpha1";

/// Name, labels and annotations, as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// A lowercase DNS label, unique among documents of the same kind.
    pub name: Name,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Decode for ObjectMeta {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["name", "labels", "annotations"])?;
        let name = f.req(cx, "name");
        let labels = f.or(cx, "labels", BTreeMap::new());
        let annotations = f.or(cx, "annotations", BTreeMap::new());
        Some(ObjectMeta {
            name: name?,
            labels: labels?,
            annotations: annotations?,
        })
    }
}

/// A progressive delivery of one service behind an Application Load Balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollout {
    /// Always `rolloutd.dev/v1alpha1`.
    #[schemars(extend("const" = "rolloutd.dev/v1alpha1"))]
    pub api_version: String,
    /// Always `Rollout`.
    #[schemars(extend("const" = "Rollout"))]
    pub kind: String,
    /// Name and labels.
    pub metadata: ObjectMeta,
    /// What to roll out and how.
    pub spec: RolloutSpec,
}

/// The longest `spec.revision`, in bytes (a commit SHA is 40, an image
/// digest 71).
pub const MAX_REVISION: usize = 253;

// On the wire (YAML, JSON, the JSON Schema) a spec is a
// `RolloutSpecDocument`: `stable` and `canary`, or `targetGroups`. In memory
// both forms have a `stable` and a `canary`: for `targetGroups` they are the
// roles as they stand (`RolloutSpec::with_roles`), the first of the pair
// stable until a run says otherwise.
/// What to roll out and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RolloutSpecDocument", into = "RolloutSpecDocument")]
pub struct RolloutSpec {
    /// Opaque; applying a new value starts a new run.
    pub revision: String,
    /// Where the traffic is shifted.
    pub traffic_routing: TrafficRouting,
    /// The target group that serves production now.
    pub stable: TargetGroupRef,
    /// The target group with the new revision.
    pub canary: TargetGroupRef,
    /// `targetGroups` as written, when the rollout ping-pongs between two
    /// target groups (the roles swap after each successful run).
    pub target_groups: Option<[TargetGroupArn; 2]>,
    /// More listeners (or rules) that move in lockstep with this one.
    pub additional_targets: Vec<AdditionalTarget>,
    /// How traffic moves from stable to canary.
    pub strategy: Strategy,
    /// Background analysis while a canary run progresses.
    pub analysis: Option<RolloutAnalysis>,
    /// How traffic returns to stable after a failed analysis.
    pub rollback: Option<RollbackPolicy>,
    /// A run that makes no progress for this long fails.
    pub progress_deadline: Duration,
    /// What a run does when the load balancer holds weights rolloutd did not write.
    pub on_drift: OnDrift,
    /// The daemon's notifiers that hear about this rollout's runs.
    pub notify: Vec<Name>,
}

/// What to roll out and how, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpecDocument {
    /// Opaque; applying a new value starts a new run.
    pub revision: String,
    /// Where the traffic is shifted.
    pub traffic_routing: TrafficRouting,
    /// The target group that serves production now (with `canary`; or give
    /// `targetGroups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<TargetGroupRef>,
    /// The target group with the new revision (with `stable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<TargetGroupRef>,
    /// Two target groups that take turns (ping-pong), instead of `stable`
    /// and `canary`: the one holding all traffic when a run starts is
    /// stable, the other receives the new revision; after a successful run
    /// the roles swap by themselves, after a rollback they stay.
    /// `status.canaryTargetGroupArn` names the one to deploy into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_groups: Option<[TargetGroupArn; 2]>,
    /// More listeners (or rules), each with its own stable and canary
    /// target groups, in any region or account, that move in lockstep with
    /// `trafficRouting` (the target named `main`): every step is written to
    /// all and seen applied on all before it counts; each target's arms
    /// and all targets' arms pooled are judged; a failure on any returns
    /// every target to stable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_targets: Vec<AdditionalTarget>,
    /// How traffic moves from stable to canary.
    pub strategy: Strategy,
    /// Background analysis while a canary run progresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<RolloutAnalysis>,
    /// How traffic returns to stable after a failed analysis (default: all at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackPolicy>,
    /// A run that makes no progress for this long fails (default 30m).
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: Duration,
    /// What a run does when the load balancer holds weights rolloutd did not
    /// write (a person, Terraform, another tool): `pause` (default: hands
    /// off until resumed) or `revert`.
    #[serde(default, skip_serializing_if = "OnDrift::is_default")]
    pub on_drift: OnDrift,
    /// Notifiers (defined in the daemon's config file, where their URLs
    /// and secrets stay out of git) that hear about each run: its start,
    /// steps, failing verdicts, pauses waiting for a person, its end, drift.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Name>,
}

impl TryFrom<RolloutSpecDocument> for RolloutSpec {
    type Error = &'static str;

    fn try_from(d: RolloutSpecDocument) -> Result<Self, Self::Error> {
        let (stable, canary) = match (d.stable, d.canary, &d.target_groups) {
            (None, None, Some([a, b])) => (
                TargetGroupRef {
                    target_group_arn: a.clone(),
                },
                TargetGroupRef {
                    target_group_arn: b.clone(),
                },
            ),
            (Some(s), Some(c), None) => (s, c),
            _ => return Err("give `stable` and `canary`, or `targetGroups`"),
        };
        Ok(RolloutSpec {
            revision: d.revision,
            traffic_routing: d.traffic_routing,
            stable,
            canary,
            target_groups: d.target_groups,
            additional_targets: d.additional_targets,
            strategy: d.strategy,
            analysis: d.analysis,
            rollback: d.rollback,
            progress_deadline: d.progress_deadline,
            on_drift: d.on_drift,
            notify: d.notify,
        })
    }
}

impl From<RolloutSpec> for RolloutSpecDocument {
    fn from(s: RolloutSpec) -> Self {
        let fixed = s.target_groups.is_none();
        RolloutSpecDocument {
            revision: s.revision,
            traffic_routing: s.traffic_routing,
            stable: fixed.then_some(s.stable),
            canary: fixed.then_some(s.canary),
            target_groups: s.target_groups,
            additional_targets: s.additional_targets,
            strategy: s.strategy,
            analysis: s.analysis,
            rollback: s.rollback,
            progress_deadline: s.progress_deadline,
            on_drift: s.on_drift,
            notify: s.notify,
        }
    }
}

/// What a run does about weights it did not write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnDrift {
    /// The run pauses and leaves the weights as they are until resumed.
    #[default]
    Pause,
    /// The run writes its own weights back (never changing target groups it
    /// does not name).
    Revert,
}

impl OnDrift {
    fn is_default(&self) -> bool {
        *self == OnDrift::Pause
    }

    /// `pause` or `revert`, as in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDrift::Pause => "pause",
            OnDrift::Revert => "revert",
        }
    }
}

impl Decode for OnDrift {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let (text, _) = crate::decode::scalar(node, cx, "a drift policy")?;
        match text {
            "pause" => Some(OnDrift::Pause),
            "revert" => Some(OnDrift::Revert),
            other => {
                cx.error(
                    node.pos,
                    format!("unknown drift policy `{other}`: expected pause or revert"),
                );
                None
            }
        }
    }
}

impl RolloutSpec {
    /// The spec with the roles of a ping-pong pair as they stand: `stable`
    /// is the target group named here, `canary` the other. `None` when the
    /// rollout does not ping-pong or `stable` is not one of its pair (the
    /// spec is then used as it is).
    pub fn with_roles(&self, stable: &str) -> Option<RolloutSpec> {
        let [a, b] = self.target_groups.as_ref()?;
        let (s, c) = if a.as_str() == stable {
            (a, b)
        } else if b.as_str() == stable {
            (b, a)
        } else {
            return None;
        };
        let mut spec = self.clone();
        spec.stable.target_group_arn = s.clone();
        spec.canary.target_group_arn = c.clone();
        Some(spec)
    }

    /// Each target group with the path that names it in the document.
    pub fn target_group_paths(&self) -> [(String, &TargetGroupArn); 2] {
        match &self.target_groups {
            Some([a, b]) => [
                ("spec.targetGroups[0]".to_string(), a),
                ("spec.targetGroups[1]".to_string(), b),
            ],
            None => [
                (
                    "spec.stable.targetGroupArn".to_string(),
                    &self.stable.target_group_arn,
                ),
                (
                    "spec.canary.targetGroupArn".to_string(),
                    &self.canary.target_group_arn,
                ),
            ],
        }
    }

    /// `canary`, `blueGreen` or `experiment`, as the API and metrics name
    /// the strategy.
    pub fn strategy_name(&self) -> &'static str {
        if self.strategy.blue_green.is_some() {
            "blueGreen"
        } else if self.strategy.experiment.is_some() {
            "experiment"
        } else {
            "canary"
        }
    }

    /// Every AnalysisTemplate the rollout names, in any of its analyses.
    pub fn template_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .analysis
            .iter()
            .flat_map(|a| a.templates.iter().map(String::as_str))
            .collect();
        if let Some(bg) = &self.strategy.blue_green {
            for phase in [&bg.pre_promotion_analysis, &bg.post_promotion_analysis]
                .into_iter()
                .flatten()
            {
                names.extend(phase.templates.iter().map(String::as_str));
            }
        }
        names
    }
}

fn default_progress_deadline() -> Duration {
    Duration::from_secs(30 * 60)
}

impl Decode for Rollout {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        // `status`, `generation` and `source` are written by the server (a
        // rollout read from the API): taken and ignored, so what
        // `rolloutctl get -o yaml` prints applies back.
        let f = cx.fields(
            node,
            &[
                "apiVersion",
                "kind",
                "metadata",
                "spec",
                "status",
                "generation",
                "source",
            ],
        )?;
        let api_version = f.req(cx, "apiVersion");
        let kind = f.req(cx, "kind");
        let metadata = f.req(cx, "metadata");
        let spec = f.req(cx, "spec");
        Some(Rollout {
            api_version: api_version?,
            kind: kind?,
            metadata: metadata?,
            spec: spec?,
        })
    }
}

impl Decode for RolloutSpec {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(
            node,
            &[
                "revision",
                "trafficRouting",
                "stable",
                "canary",
                "targetGroups",
                "additionalTargets",
                "strategy",
                "analysis",
                "rollback",
                "progressDeadline",
                "onDrift",
                "notify",
            ],
        )?;
        let revision: Option<String> = f.req(cx, "revision");
        let revision = match revision {
            Some(r) if r.len() > MAX_REVISION => {
                cx.at_key("revision", |cx| {
                    cx.error(
                        f.pos_of("revision"),
                        format!(
                            "a revision of {} bytes is too long: at most {MAX_REVISION} are accepted (it goes into every event, log line and metric label)",
                            r.len()
                        ),
                    )
                });
                None
            }
            other => other,
        };
        let traffic_routing = f.req(cx, "trafficRouting");
        let arms = decode_target_groups(&f, cx);
        let additional_targets = f.or(cx, "additionalTargets", Vec::new());
        let strategy = f.req(cx, "strategy");
        let analysis = f.opt(cx, "analysis");
        let rollback = f.opt(cx, "rollback");
        let progress_deadline = f.or(cx, "progressDeadline", default_progress_deadline());
        let on_drift = f.or(cx, "onDrift", OnDrift::Pause);
        let notify = f.or(cx, "notify", Vec::new());
        let (stable, canary, target_groups) = arms?;
        Some(RolloutSpec {
            revision: revision?,
            traffic_routing: traffic_routing?,
            stable,
            canary,
            target_groups,
            additional_targets: additional_targets?,
            strategy: strategy?,
            analysis: analysis.ok()?,
            rollback: rollback.ok()?,
            progress_deadline: progress_deadline?,
            on_drift: on_drift?,
            notify: notify?,
        })
    }
}

type Arms = (TargetGroupRef, TargetGroupRef, Option<[TargetGroupArn; 2]>);

/// `stable` and `canary`, or `targetGroups: [A, B]` (A stable until a run
/// says otherwise), never both.
fn decode_target_groups(f: &crate::decode::Fields<'_>, cx: &mut Ctx) -> Option<Arms> {
    if f.has("targetGroups") {
        if f.has("stable") || f.has("canary") {
            let key = if f.has("stable") { "stable" } else { "canary" };
            cx.error(
                f.pos_of(key),
                "give `targetGroups` (two target groups that take turns) or `stable` and `canary`, not both",
            );
            return None;
        }
        let pair: Vec<TargetGroupArn> = f.req(cx, "targetGroups")?;
        let [a, b]: [TargetGroupArn; 2] = match pair.try_into() {
            Ok(p) => p,
            Err(pair) => {
                cx.at_key("targetGroups", |cx| {
                    cx.error(
                        f.pos_of("targetGroups"),
                        format!(
                            "targetGroups names {} target groups: give exactly two, which take turns as stable and canary",
                            pair.len()
                        ),
                    )
                });
                return None;
            }
        };
        let arm = |arn: &TargetGroupArn| TargetGroupRef {
            target_group_arn: arn.clone(),
        };
        return Some((arm(&a), arm(&b), Some([a, b])));
    }
    let stable = f.req(cx, "stable");
    let canary = f.req(cx, "canary");
    Some((stable?, canary?, None))
}

/// Where traffic is shifted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficRouting {
    /// An Application Load Balancer listener (or one of its rules).
    pub alb: AlbTrafficRouting,
}

impl Decode for TrafficRouting {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["alb"])?;
        Some(TrafficRouting {
            alb: f.req(cx, "alb")?,
        })
    }
}

/// The listener whose forward action is weighted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlbTrafficRouting {
    /// The listener; its default action is shifted unless `ruleArn` is given.
    pub listener_arn: ListenerArn,
    /// A rule of that listener to shift instead of the default action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_arn: Option<RuleArn>,
}

impl AlbTrafficRouting {
    /// The ARN of what is shifted: the rule, or the listener (for its
    /// default action).
    pub fn place(&self) -> &str {
        match &self.rule_arn {
            Some(rule) => rule.as_str(),
            None => self.listener_arn.as_str(),
        }
    }
}

impl Decode for AlbTrafficRouting {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["listenerArn", "ruleArn"])?;
        let listener_arn = f.req(cx, "listenerArn");
        let rule_arn = f.opt(cx, "ruleArn");
        Some(AlbTrafficRouting {
            listener_arn: listener_arn?,
            rule_arn: rule_arn.ok()?,
        })
    }
}

/// A target group of the load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetGroupRef {
    /// Its ARN.
    pub target_group_arn: TargetGroupArn,
}

impl Decode for TargetGroupRef {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["targetGroupArn"])?;
        Some(TargetGroupRef {
            target_group_arn: f.req(cx, "targetGroupArn")?,
        })
    }
}
