//! Notifications: every run's start, steps, failing verdicts, pauses that
//! wait for a person, its end and drift, to the notifiers a rollout names
//! (`spec.notify`) or the config names for all (`defaultNotifiers`).
//!
//! The outbox is the event log: events are written in the same transaction
//! as the status they belong to, so a crash, a restart or a failover never
//! loses or invents one. A cursor per rollout identity and notifier
//! (`rollout_store::NotifyCursor`) says how far delivery got; it moves past
//! an event only after the receiver answered 2xx, so each event arrives at
//! least once (twice only when rolloutd stopped between the answer and the
//! cursor's move), in order, and a failed one holds back the ones after it
//! until a retry (2 s, 4 s, … at most 5 min apart) gets through. The
//! replica holding a rollout's lease delivers its notifications.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use rollout_core::sync::lock;
use rollout_core::{EventKind, Time};
use rollout_spec::decode::{Ctx, Decode};
use rollout_spec::tree::Node;
use rollout_store::LoggedEvent;
use serde_json::json;

/// The event kinds notified (`AnalysisJudged` only when the verdict failed).
pub const NOTIFIED: [EventKind; 11] = [
    EventKind::RunStarted,
    EventKind::StepAdvanced,
    EventKind::AnalysisJudged,
    EventKind::Paused,
    EventKind::Succeeded,
    EventKind::RolledBack,
    EventKind::Aborted,
    EventKind::Failed,
    EventKind::WeightDrift,
    EventKind::Superseded,
    EventKind::BakeStarted,
];

/// How long one delivery may take.
const TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// The longest wait between two attempts at one event.
const MAX_BACKOFF_MS: u64 = 300_000;
/// Events read per notifier per pass.
pub const BATCH: u32 = 50;

/// The body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON object: `rollout`, `revision`, `run`, `event`, `phase`,
    /// `message`, the evidence.
    Json,
    /// A Slack incoming-webhook message, for people.
    Slack,
}

/// One notifier of the daemon's config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Notifier {
    /// Where to POST.
    pub url: Option<String>,
    /// A file holding the URL (a Slack webhook URL is a secret).
    pub url_file: Option<PathBuf>,
    /// The body's shape.
    pub format: Format,
    /// A file holding the key of the `X-Rolloutd-Signature` HMAC.
    pub secret_file: Option<PathBuf>,
}

/// The notifiers of the config file: `notifiers` and `defaultNotifiers`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notifiers {
    /// By name.
    pub by_name: BTreeMap<String, Notifier>,
    /// Notified of every rollout, besides its own `spec.notify`.
    pub defaults: Vec<String>,
}

impl Decode for Notifier {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(node, &["url", "urlFile", "format", "secretFile"])?;
        let url: Option<String> = f.opt(cx, "url").ok()?;
        let url_file: Option<String> = f.opt(cx, "urlFile").ok()?;
        let format: String = f.or(cx, "format", "json".to_string())?;
        let secret_file: Option<String> = f.opt(cx, "secretFile").ok()?;
        let format = match format.as_str() {
            "json" => Format::Json,
            "slack" => Format::Slack,
            other => {
                cx.error(
                    f.pos_of("format"),
                    format!("unknown format `{other}`: expected json or slack"),
                );
                return None;
            }
        };
        match (&url, &url_file) {
            (Some(_), Some(_)) | (None, None) => {
                cx.error(f.pos(), "give `url` or `urlFile` (one of them)");
                return None;
            }
            (Some(u), None) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                cx.error(
                    f.pos_of("url"),
                    "a notifier URL starts with http:// or https://",
                );
                return None;
            }
            _ => {}
        }
        Some(Notifier {
            url,
            url_file: url_file.map(PathBuf::from),
            format,
            secret_file: secret_file.map(PathBuf::from),
        })
    }
}

/// Reads `notifiers` (a mapping of names to notifiers) and
/// `defaultNotifiers` from the config file's top level `root` (the other
/// keys are the flags', read apart).
pub fn decode_notifiers(root: &Node, cx: &mut Ctx) -> Option<Notifiers> {
    use rollout_spec::tree::Value;
    let field = |key: &str| crate::config::top_level(root, key);
    let mut by_name = BTreeMap::new();
    if let Some(node) = field("notifiers") {
        let Value::Map(entries) = &node.value else {
            cx.at_key("notifiers", |cx| {
                cx.error(node.pos, "`notifiers` maps names to notifiers")
            });
            return None;
        };
        let mut bad = false;
        cx.at_key("notifiers", |cx| {
            for (k, v) in entries {
                let Value::Scalar { text, .. } = &k.value else {
                    cx.error(k.pos, "a notifier's name is a string");
                    bad = true;
                    continue;
                };
                match cx.at_key(text, |cx| cx.decode::<Notifier>(v)) {
                    Some(n) => {
                        by_name.insert(text.clone(), n);
                    }
                    None => bad = true,
                }
            }
        });
        if bad {
            return None;
        }
    }
    let mut defaults: Vec<String> = Vec::new();
    if let Some(node) = field("defaultNotifiers") {
        defaults = cx.at_key("defaultNotifiers", |cx| cx.decode::<Vec<String>>(node))?;
        for (i, d) in defaults.iter().enumerate() {
            if !by_name.contains_key(d) {
                cx.at_key("defaultNotifiers", |cx| {
                    cx.at_index(i, |cx| {
                        cx.error(node.pos, format!("`{d}` is not one of the notifiers"))
                    })
                });
                return None;
            }
        }
    }
    Some(Notifiers { by_name, defaults })
}

/// Whether an event of the kinds in [`NOTIFIED`] is worth a notification
/// (the core decides: [`rollout_core::Event::notable`]).
pub fn wanted(e: &LoggedEvent) -> bool {
    e.event.notable()
}

/// The body of the notification of `e` for rollout `name`. JSON carries
/// `rollout`, `revision`, `run`, `event`, `phase`, `message` (with the
/// evidence: a verdict's or a rollback's message holds both arms' values),
/// `eventId` (deliveries are at least once: a receiver dedups by it),
/// `at`, the canary weight before and after, who asked, and a link to the
/// status when `public_url` is set. Slack gets one readable line.
pub fn body(format: Format, name: &str, e: &LoggedEvent, public_url: Option<&str>) -> String {
    let ev = &e.event;
    let kind = serde_json::to_value(ev.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let link = public_url.map(|u| format!("{}/api/v1/rollouts/{name}", u.trim_end_matches('/')));
    match format {
        Format::Json => json!({
            "rollout": name,
            "revision": ev.revision,
            "run": ev.run,
            "event": kind,
            "phase": ev.phase_after(),
            "message": ev.message,
            "eventId": e.id,
            "at": ev.at,
            "canaryWeightBefore": ev.weight_before,
            "canaryWeightAfter": ev.weight_after,
            "actor": ev.actor,
            "url": link,
        })
        .to_string(),
        Format::Slack => {
            let mark = match ev.kind {
                EventKind::Succeeded => ":white_check_mark:",
                EventKind::RolledBack | EventKind::Failed => ":rotating_light:",
                EventKind::Aborted | EventKind::WeightDrift => ":warning:",
                EventKind::AnalysisJudged => ":x:",
                EventKind::Paused => ":double_vertical_bar:",
                _ => ":arrow_forward:",
            };
            let by = ev
                .actor
                .as_deref()
                .map(|a| format!(" (by {a})"))
                .unwrap_or_default();
            let link = link.map(|l| format!(" <{l}|status>")).unwrap_or_default();
            let text = format!(
                "{mark} *{name}* revision `{}` (run {}): *{kind}* at canary {}%{by}: {}{link}",
                ev.revision, ev.run, ev.weight_after, ev.message
            );
            json!({ "text": text }).to_string()
        }
    }
}

/// How long to wait after `attempts` failed attempts at one event.
pub fn backoff_ms(attempts: i64) -> u64 {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    (1_000u64 << exp).min(MAX_BACKOFF_MS)
}

/// The delivery side's state: the notifiers, which rollouts have new
/// events, and when failed deliveries are due again.
pub struct Delivery {
    /// The config file's notifiers.
    pub notifiers: Notifiers,
    /// The base URL of the API for links (`--public-url`).
    pub public_url: Option<String>,
    pub(crate) hooks: crate::hooks::Hooks,
    woken: std::sync::Mutex<BTreeSet<String>>,
    retry_at: std::sync::Mutex<HashMap<String, Time>>,
    /// Rung when a rollout has new events.
    pub(crate) bell: tokio::sync::Notify,
}

impl Delivery {
    /// Delivery to `notifiers`, through `hooks` (the daemon's one HTTP
    /// client).
    pub fn new(
        notifiers: Notifiers,
        public_url: Option<String>,
        hooks: crate::hooks::Hooks,
    ) -> Arc<Delivery> {
        Arc::new(Delivery {
            notifiers,
            public_url,
            hooks,
            woken: Default::default(),
            retry_at: Default::default(),
            bell: tokio::sync::Notify::new(),
        })
    }

    /// Whether any notifier is configured (else nothing is ever delivered).
    pub fn is_on(&self) -> bool {
        !self.notifiers.by_name.is_empty()
    }

    /// `name` has new events.
    pub fn wake(&self, name: &str) {
        if self.is_on() {
            lock(&self.woken).insert(name.to_string());
            self.bell.notify_one();
        }
    }

    /// A failed delivery of `name` is due again at `at`.
    pub fn retry(&self, name: &str, at: Time) {
        let mut r = lock(&self.retry_at);
        let e = r.entry(name.to_string()).or_insert(at);
        *e = (*e).min(at);
    }

    /// The rollouts to deliver for now: those woken, and those whose retry
    /// is due.
    pub fn due(&self, now: Time) -> BTreeSet<String> {
        let mut out = std::mem::take(&mut *lock(&self.woken));
        let mut r = lock(&self.retry_at);
        r.retain(|name, at| {
            if *at <= now {
                out.insert(name.clone());
                false
            } else {
                true
            }
        });
        out
    }

    /// The notifiers of a rollout: its own, then the defaults, once each.
    pub fn of(&self, spec: &rollout_spec::RolloutSpec) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in spec
            .notify
            .iter()
            .map(|n| n.as_str().to_string())
            .chain(self.notifiers.defaults.iter().cloned())
        {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }

    /// POSTs one notification; Ok when the receiver answered 2xx.
    pub async fn send(&self, notifier: &Notifier, body: String) -> Result<(), String> {
        let url = match (&notifier.url, &notifier.url_file) {
            (Some(u), _) => u.clone(),
            (None, Some(path)) => crate::hooks::read_secret(&path.to_string_lossy(), "URL")?,
            (None, None) => return Err("the notifier has no URL".into()),
        };
        let mut headers = Vec::new();
        if let Some(path) = &notifier.secret_file {
            let key = crate::hooks::read_secret(&path.to_string_lossy(), "secret")?;
            headers.push((
                "X-Rolloutd-Signature".to_string(),
                crate::hooks::signature(key.as_bytes(), body.as_bytes()),
            ));
        }
        match self.hooks.post(url, body, headers, TIMEOUT).await {
            Ok((status, _)) if (200..300).contains(&status) => Ok(()),
            Ok((status, text)) => Err(format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            )),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_core::Event;

    fn logged(kind: EventKind, message: &str) -> LoggedEvent {
        LoggedEvent {
            id: 7,
            event: Event {
                at: Time::from_millis(1_795_845_600_000),
                run: 3,
                revision: "v3".into(),
                kind,
                message: message.into(),
                actor: None,
                weight_before: 10,
                weight_after: 0,
            },
        }
    }

    #[test]
    fn a_json_notification_carries_what_a_receiver_needs() {
        let e = logged(
            EventKind::RolledBack,
            "analysis `errors` failed 1 interval(s): error rate: canary 0.1 vs stable 0.01",
        );
        let v: serde_json::Value = serde_json::from_str(&body(
            Format::Json,
            "checkout",
            &e,
            Some("https://r.example/"),
        ))
        .expect("json");
        assert_eq!(v["rollout"], "checkout");
        assert_eq!(v["revision"], "v3");
        assert_eq!(v["run"], 3);
        assert_eq!(v["event"], "RolledBack");
        assert_eq!(v["phase"], "RolledBack");
        assert_eq!(v["eventId"], 7);
        assert!(v["message"]
            .as_str()
            .unwrap_or("")
            .contains("canary 0.1 vs stable 0.01"));
        assert_eq!(v["url"], "https://r.example/api/v1/rollouts/checkout");
    }

    #[test]
    fn a_slack_notification_reads_as_a_sentence() {
        let e = logged(
            EventKind::RolledBack,
            "alarm `api-5xx` is in ALARM: Threshold Crossed",
        );
        let v: serde_json::Value =
            serde_json::from_str(&body(Format::Slack, "checkout", &e, None)).expect("json");
        assert_eq!(
            v["text"],
            ":rotating_light: *checkout* revision `v3` (run 3): *RolledBack* at canary 0%: alarm `api-5xx` is in ALARM: Threshold Crossed"
        );
    }

    #[test]
    fn only_failing_verdicts_are_notified() {
        assert!(!wanted(&logged(
            EventKind::AnalysisJudged,
            "t at canary 5%: pass (ok)"
        )));
        assert!(wanted(&logged(
            EventKind::AnalysisJudged,
            "t at canary 5%: fail (error rate: canary 0.1 vs stable 0.01)"
        )));
        assert!(wanted(&logged(EventKind::StepAdvanced, "step 1 of 3 done")));
    }

    #[test]
    fn retries_back_off_to_five_minutes() {
        assert_eq!(backoff_ms(0), 1_000);
        assert_eq!(backoff_ms(1), 2_000);
        assert_eq!(backoff_ms(3), 8_000);
        assert_eq!(backoff_ms(40), MAX_BACKOFF_MS);
    }
}
