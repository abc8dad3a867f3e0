//! How traffic moves: the canary and blue-green strategies, their steps
//! (weights, pauses, webhooks), the analyses and the rollback policy.

use super::*;

/// Exactly one of `canary`, `blueGreen` or `experiment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    /// Shift traffic step by step, comparing the arms at every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,
    /// Switch all at once after a preview check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStrategy>,
    /// Measure, not release: send a share of the traffic to the new
    /// revision for a while, judging it as a canary step does, then return
    /// all of it to stable whatever was learnt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Experiment>,
}

impl Decode for Strategy {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        const KINDS: [&str; 3] = ["canary", "blueGreen", "experiment"];
        let f = cx.fields(node, &KINDS)?;
        let canary = f.opt(cx, "canary");
        let blue_green = f.opt(cx, "blueGreen");
        let experiment = f.opt(cx, "experiment");
        let (canary, blue_green, experiment) = (canary.ok()?, blue_green.ok()?, experiment.ok()?);
        let given: Vec<&str> = KINDS.into_iter().filter(|k| f.node(k).is_some()).collect();
        match given.as_slice() {
            [] => {
                cx.error(
                    f.pos(),
                    "choose a strategy: `canary`, `blueGreen` or `experiment`",
                );
                return None;
            }
            [first, second, ..] => {
                cx.error(
                    f.pos_of(second),
                    format!("give one strategy: `{first}` or `{second}`, not both"),
                );
                return None;
            }
            [_] => {}
        }
        Some(Strategy {
            canary,
            blue_green,
            experiment,
        })
    }
}

impl Strategy {
    /// The steps a canary-like run takes: a canary's own, or an
    /// experiment's (its weight, a pause of its duration, back to 0); none
    /// for blue-green.
    pub fn canary_steps(&self) -> Option<std::borrow::Cow<'_, [CanaryStep]>> {
        if let Some(c) = &self.canary {
            return Some(std::borrow::Cow::Borrowed(&c.steps));
        }
        let e = self.experiment.as_ref()?;
        Some(std::borrow::Cow::Owned(vec![
            CanaryStep::SetWeight(e.weight),
            CanaryStep::Pause(Pause {
                duration: Some(e.duration),
                minimum: None,
            }),
            CanaryStep::SetWeight(Weight::ZERO),
        ]))
    }
}

/// An experiment: `weight` percent of the traffic on the new revision for
/// `duration`, judged as usual (a failing canary is still pulled at once),
/// then all traffic back on stable and the run's report kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Experiment {
    /// The canary's share during the experiment (1–99).
    pub weight: Weight,
    /// How long the canary serves that share.
    pub duration: Duration,
}

impl Decode for Experiment {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["weight", "duration"])?;
        let weight = f.req(cx, "weight");
        let duration = f.req(cx, "duration");
        Some(Experiment {
            weight: weight?,
            duration: duration?,
        })
    }
}

/// The canary strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStrategy {
    /// The steps, in order; the last `setWeight` must be 100.
    pub steps: Vec<CanaryStep>,
    /// A bake after the canary reached 100%: the run keeps judging the new
    /// revision for this long (against stable's last interval before the
    /// final step, plus alarms and absolute limits) before it succeeds; a
    /// failure returns all traffic to the previous target group, which
    /// must be kept ready meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion: Option<PostPromotion>,
}

impl Decode for CanaryStrategy {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["steps", "postPromotion"])?;
        let steps = f.req(cx, "steps");
        let post_promotion = f.opt(cx, "postPromotion");
        Some(CanaryStrategy {
            steps: steps?,
            post_promotion: post_promotion.ok()?,
        })
    }
}

/// The bake after promotion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostPromotion {
    /// How long the new revision is judged at 100% before the run succeeds.
    pub duration: Duration,
}

impl Decode for PostPromotion {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["duration"])?;
        Some(PostPromotion {
            duration: f.req(cx, "duration")?,
        })
    }
}

/// One step of a canary run: `{setWeight: N}` or `{pause: {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum CanaryStep {
    /// Send this percentage of traffic (0–100) to the canary.
    SetWeight(Weight),
    /// Wait: for a duration, or (without one) until promoted.
    Pause(Pause),
    /// Call a webhook (a smoke test, a gate) and wait for a 2xx answer; a
    /// refusal or exhausted retries fails the run like a failed analysis.
    Webhook(Webhook),
    /// Run an AWS Fault Injection Service experiment at the current weight
    /// and judge both arms while it runs; it is always stopped when the
    /// run leaves the step for any reason but success.
    Chaos(Chaos),
}

impl Decode for CanaryStep {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        const KINDS: [&str; 4] = ["setWeight", "pause", "webhook", "chaos"];
        let f = cx.fields(node, &KINDS)?;
        let given: Vec<&str> = KINDS.into_iter().filter(|k| f.node(k).is_some()).collect();
        match given.as_slice() {
            ["setWeight"] => f.req(cx, "setWeight").map(CanaryStep::SetWeight),
            ["pause"] => Some(CanaryStep::Pause(f.or(cx, "pause", Pause::default())?)),
            ["webhook"] => f.req(cx, "webhook").map(CanaryStep::Webhook),
            ["chaos"] => f.req(cx, "chaos").map(CanaryStep::Chaos),
            _ if given.is_empty() => {
                if !f.had_unknown() {
                    cx.error(
                        f.pos(),
                        "a step needs `setWeight`, `pause`, `webhook` or `chaos`",
                    );
                }
                None
            }
            [first, second, ..] => {
                cx.error(
                    f.pos_of(second),
                    format!("a step is one of `setWeight`, `pause`, `webhook` or `chaos`; write `{first}` and `{second}` as two steps"),
                );
                None
            }
            _ => None,
        }
    }
}

/// What a chaos step does when its experiment fails or is stopped by its
/// own stop conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnExperimentFailure {
    /// The step fails: all traffic back on stable, the run `RolledBack`.
    #[default]
    Fail,
    /// Recorded, and the run goes on (the verdicts still count).
    Continue,
}

impl Decode for OnExperimentFailure {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let (text, _) = crate::decode::scalar(node, cx, "an outcome")?;
        match text {
            "fail" => Some(OnExperimentFailure::Fail),
            "continue" => Some(OnExperimentFailure::Continue),
            other => {
                cx.error(
                    node.pos,
                    format!("unknown outcome `{other}`: expected fail or continue"),
                );
                None
            }
        }
    }
}

/// A chaos step: the FIS experiment template to start, and the longest
/// the experiment may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Chaos {
    /// The experiment template's id (`EXT…`, letters and digits), in the
    /// region and account of the rollout's load balancer.
    pub experiment_template_id: String,
    /// The experiment must complete within this; one still running then
    /// is stopped and counts as failed.
    pub duration: Duration,
    /// `fail` (default) or `continue`.
    #[serde(default)]
    pub on_experiment_failure: OnExperimentFailure,
}

impl Decode for Chaos {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(
            node,
            &["experimentTemplateId", "duration", "onExperimentFailure"],
        )?;
        let id: Option<String> = f.req(cx, "experimentTemplateId");
        let duration = f.req(cx, "duration");
        let on_failure = f.opt(cx, "onExperimentFailure");
        let id = id?;
        let valid =
            !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid {
            let pos = f.pos_of("experimentTemplateId");
            cx.error(
                pos,
                format!("`{id}` is not an experiment template id: give the id FIS shows (`EXT…`, letters and digits), not an ARN or a name"),
            );
            return None;
        }
        Some(Chaos {
            experiment_template_id: id,
            duration: duration?,
            on_experiment_failure: on_failure.ok()?.unwrap_or_default(),
        })
    }
}

/// The longest a webhook may take to answer.
pub const MAX_WEBHOOK_TIMEOUT_S: u64 = 300;
/// The most retries of a webhook.
pub const MAX_WEBHOOK_RETRIES: u32 = 10;

/// A webhook step: rolloutd POSTs a JSON body (rollout, revision, run,
/// step, weights, the last verdicts) to `url` and waits for a 2xx.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    /// A name for events and messages.
    pub name: Name,
    /// `http://` or `https://`.
    pub url: String,
    /// How long one call may take (default 10s, at most 5m).
    #[serde(default = "default_webhook_timeout")]
    pub timeout: Duration,
    /// How often a call that got no answer (timeout, connection refused) is
    /// tried again before the run fails (default 2). An answer other than
    /// 2xx is a refusal and fails the run at once.
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
    /// A file on the daemon's host holding the HMAC-SHA256 key that signs
    /// the body (`X-Rolloutd-Signature: sha256=HEX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// Headers whose values are read from files on the daemon's host (a
    /// token stays out of git): `{Authorization: /run/secrets/smoke}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header_files: BTreeMap<String, String>,
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_webhook_retries() -> u32 {
    2
}

impl Decode for Webhook {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(
            node,
            &[
                "name",
                "url",
                "timeout",
                "retries",
                "secretFile",
                "headerFiles",
            ],
        )?;
        let name = f.req(cx, "name");
        let url: Option<String> = f.req(cx, "url");
        let url = url.and_then(|u| {
            if u.starts_with("http://") || u.starts_with("https://") {
                Some(u)
            } else {
                cx.at_key("url", |cx| {
                    cx.error(
                        f.pos_of("url"),
                        "a webhook URL starts with http:// or https://",
                    )
                });
                None
            }
        });
        let timeout: Option<Duration> = f.or(cx, "timeout", default_webhook_timeout());
        let timeout = timeout.and_then(|t| {
            if t.as_millis() == 0 || t.as_millis() > MAX_WEBHOOK_TIMEOUT_S * 1000 {
                cx.at_key("timeout", |cx| {
                    cx.error(
                        f.pos_of("timeout"),
                        format!("a webhook timeout of {t} is out of range: give 1s to 5m"),
                    )
                });
                None
            } else {
                Some(t)
            }
        });
        let retries: Option<u32> = f.or(cx, "retries", default_webhook_retries());
        let retries = retries.and_then(|r| {
            if r > MAX_WEBHOOK_RETRIES {
                cx.at_key("retries", |cx| {
                    cx.error(
                        f.pos_of("retries"),
                        format!("{r} retries: at most {MAX_WEBHOOK_RETRIES}"),
                    )
                });
                None
            } else {
                Some(r)
            }
        });
        let secret_file = f.opt(cx, "secretFile");
        let header_files = f.or(cx, "headerFiles", BTreeMap::new());
        Some(Webhook {
            name: name?,
            url: url?,
            timeout: timeout?,
            retries: retries?,
            secret_file: secret_file.ok()?,
            header_files: header_files?,
        })
    }
}

/// A pause; without a duration it waits for `promote`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pause {
    /// How long to wait; absent: until a person promotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// With a duration: the pause may end after this long, before the
    /// duration, once every check of every analysis template has shown the
    /// canary within its tolerance (evidence-driven pacing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<Duration>,
}

impl Decode for Pause {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["duration", "minimum"])?;
        let duration = f.opt(cx, "duration");
        let minimum = f.opt(cx, "minimum");
        Some(Pause {
            duration: duration.ok()?,
            minimum: minimum.ok()?,
        })
    }
}

/// The blue-green strategy: the new target group gets no production traffic
/// until the pre-promotion analysis passes (or a person promotes), then all of
/// it at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueGreenStrategy {
    /// A test listener that forwards to the new target group during the
    /// preview, so the pre-promotion analysis has traffic to judge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_listener_arn: Option<ListenerArn>,
    /// Promote as soon as the pre-promotion analysis passes (default true);
    /// false waits for `promote`.
    #[serde(default = "default_true")]
    pub auto_promotion: bool,
    /// Judged before any production traffic moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<PhaseAnalysis>,
    /// Judged after the switch; a failure switches traffic back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<PhaseAnalysis>,
    /// A gate before the switch (after the pre-promotion analysis): the
    /// webhook must answer 2xx (a smoke test against the preview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_webhook: Option<Webhook>,
    /// A gate after the switch: the webhook must answer 2xx before the run
    /// succeeds; a refusal switches traffic back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_webhook: Option<Webhook>,
    /// A chaos check before the switch: this FIS experiment runs during the
    /// pre-promotion analysis, which must pass while it runs; stopped if
    /// the run leaves the preview any other way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_chaos: Option<Chaos>,
}

fn default_true() -> bool {
    true
}

impl Decode for BlueGreenStrategy {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(
            node,
            &[
                "previewListenerArn",
                "autoPromotion",
                "prePromotionAnalysis",
                "postPromotionAnalysis",
                "prePromotionWebhook",
                "postPromotionWebhook",
                "prePromotionChaos",
            ],
        )?;
        let preview = f.opt(cx, "previewListenerArn");
        let auto = f.or(cx, "autoPromotion", true);
        let pre = f.opt(cx, "prePromotionAnalysis");
        let post = f.opt(cx, "postPromotionAnalysis");
        let pre_hook = f.opt(cx, "prePromotionWebhook");
        let post_hook = f.opt(cx, "postPromotionWebhook");
        let chaos = f.opt(cx, "prePromotionChaos");
        Some(BlueGreenStrategy {
            preview_listener_arn: preview.ok()?,
            auto_promotion: auto?,
            pre_promotion_analysis: pre.ok()?,
            post_promotion_analysis: post.ok()?,
            pre_promotion_webhook: pre_hook.ok()?,
            post_promotion_webhook: post_hook.ok()?,
            pre_promotion_chaos: chaos.ok()?,
        })
    }
}

/// An analysis that runs for a fixed time in one phase of a blue-green run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhaseAnalysis {
    /// The AnalysisTemplates to run.
    pub templates: Vec<String>,
    /// How long the phase is judged (default 5m).
    #[serde(default = "default_phase_duration")]
    pub duration: Duration,
    /// How often the arms are compared (default 1m).
    #[serde(default = "default_interval")]
    pub interval: Duration,
}

fn default_phase_duration() -> Duration {
    Duration::from_secs(300)
}

impl Decode for PhaseAnalysis {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["templates", "duration", "interval"])?;
        let templates = f.req(cx, "templates");
        let duration = f.or(cx, "duration", default_phase_duration());
        let interval = f.or(cx, "interval", default_interval());
        Some(PhaseAnalysis {
            templates: templates?,
            duration: duration?,
            interval: interval?,
        })
    }
}

/// Background analysis of a canary run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutAnalysis {
    /// How often the arms are compared while the run progresses (default 1m).
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// The AnalysisTemplates to run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<String>,
    /// CloudWatch alarms (names, in the rollout's region) that gate the
    /// run: any of them in `ALARM` while the run moves or bakes fails it
    /// (traffic back to stable), naming the alarm and its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
}

pub(super) fn default_interval() -> Duration {
    Duration::from_secs(60)
}

impl Decode for RolloutAnalysis {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["interval", "templates", "alarms"])?;
        let interval = f.or(cx, "interval", default_interval());
        let alarms: Option<Vec<String>> = f.or(cx, "alarms", Vec::new());
        let templates = if alarms.as_ref().is_some_and(|a| !a.is_empty()) {
            f.or(cx, "templates", Vec::new())
        } else {
            f.req(cx, "templates")
        };
        Some(RolloutAnalysis {
            interval: interval?,
            templates: templates?,
            alarms: alarms?,
        })
    }
}

/// A gradual return to stable after a failed analysis, for a stable fleet
/// that cannot take all the traffic at once. `abort` always returns at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackPolicy {
    /// Decreasing `setWeight`s with timed pauses between them; the canary
    /// weight ends at 0 after the last step in any case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
    /// What a failed analysis, alarm or webhook does: `rollback` (default:
    /// traffic returns to stable) or `freeze` (for a change that cannot be
    /// undone, such as a schema migration: the weights stay, the run
    /// pauses and says why, and a person decides).
    #[serde(default, skip_serializing_if = "OnFailure::is_default")]
    pub on_failure: OnFailure,
}

impl Decode for RollbackPolicy {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["steps", "onFailure"])?;
        let steps = f.or(cx, "steps", Vec::new());
        let on_failure = f.or(cx, "onFailure", OnFailure::Rollback);
        Some(RollbackPolicy {
            steps: steps?,
            on_failure: on_failure?,
        })
    }
}

/// What a failure does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    /// All traffic back to stable (by `steps`, if given).
    #[default]
    Rollback,
    /// Hold the weights and pause for a person.
    Freeze,
}

impl OnFailure {
    fn is_default(&self) -> bool {
        *self == OnFailure::Rollback
    }
}

impl Decode for OnFailure {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let (text, _) = crate::decode::scalar(node, cx, "a failure policy")?;
        match text {
            "rollback" => Some(OnFailure::Rollback),
            "freeze" => Some(OnFailure::Freeze),
            other => {
                cx.error(
                    node.pos,
                    format!("unknown failure policy `{other}`: expected rollback or freeze"),
                );
                None
            }
        }
    }
}
