//! The commands that talk to the daemon: `apply`, `get`, `status`, the
//! manual overrides and `delete`. The server is `--server` (env
//! `ROLLOUTD_SERVER`), the token from `--token-file` or env `ROLLOUTD_TOKEN`
//! (sent on every request), an `https://` server checked against
//! `--ca-file` or the system's roots. Exit codes: 0 done,
//! 1 refused or invalid (the server's message on stderr), 3 the server could
//! not be reached.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rollout_api::{
    print, println, ApplyResult, Deleted, ErrorBody, ErrorDetail, RolloutList, RolloutResource,
};
use rollout_core::{Phase, Time};
use rollout_spec::CanaryStep;
use serde_json::Value;

use crate::validate::{collect, Input};

/// How to reach the server.
pub struct Client {
    pub(crate) base: String,
    pub(crate) token: Option<String>,
    pub(crate) agent: ureq::Agent,
}

/// Why a request did not succeed.
pub enum Failure {
    /// Nothing answered.
    Unreachable(String),
    /// The server said no (4xx/5xx): status, message, details.
    Refused(u16, String, Vec<Value>),
}

impl Failure {
    /// Prints the failure and gives the contract's exit code.
    pub fn report(self) -> ExitCode {
        match self {
            Failure::Unreachable(m) => {
                eprintln!("rolloutctl: cannot reach the server: {m}");
                ExitCode::from(3)
            }
            Failure::Refused(code, message, details) => {
                eprintln!("rolloutctl: {message} (HTTP {code})");
                for d in details {
                    eprintln!("  {}", d["message"].as_str().unwrap_or_default());
                }
                ExitCode::from(1)
            }
        }
    }
}

impl Client {
    /// A client of `server` (`http://` or `https://`), sending `token` on
    /// every request. An `https://` server's certificate is checked against
    /// `ca_file` (PEM) when given, else the system's roots.
    pub fn new(
        server: &str,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let roots = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
                let certs = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
                if certs.is_empty() {
                    return Err(format!(
                        "--ca-file {}: no PEM certificate in the file",
                        path.display()
                    ));
                }
                certs
            }
            None => rustls_native_certs::load_native_certs()
                .certs
                .into_iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect(),
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .tls_config(tls)
            .build()
            .into();
        Ok(Client {
            base: server.trim_end_matches('/').to_string(),
            token,
            agent,
        })
    }

    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
    ) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, body) => {
                let mut r = self.agent.post(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                match body {
                    Some((ctype, text)) => r.header("Content-Type", ctype).send(text),
                    None => r.send_empty(),
                }
            }
        };
        let mut resp = result.map_err(|e| Failure::Unreachable(format!("{} ({e})", self.base)))?;
        let code = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| Failure::Unreachable(format!("reading the answer: {e}")))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if code >= 400 {
            return Err(match serde_json::from_value::<ErrorBody>(value.clone()) {
                Ok(e) => Failure::Refused(code, e.error, e.details),
                Err(_) => Failure::Refused(code, value.to_string(), Vec::new()),
            });
        }
        Ok(value)
    }
}

/// An answer read as the API's type for it (`rollout_api`).
pub(crate) fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Failure> {
    serde_json::from_value(value)
        .map_err(|e| Failure::Unreachable(format!("an answer this rolloutctl cannot read: {e}")))
}

/// `rolloutctl apply -f PATH… [--dry-run]`.
pub fn apply(client: &Client, paths: &[PathBuf], dry_run: bool) -> ExitCode {
    let mut inputs: Vec<Input> = Vec::new();
    for p in paths {
        collect(p, &mut inputs);
    }
    // One body, all or nothing; remember where each file starts to map the
    // server's line numbers back.
    let mut body = String::new();
    let mut starts: Vec<(u32, String)> = Vec::new();
    let mut unreadable = false;
    for (name, text) in &inputs {
        match text {
            Ok(t) => {
                if !body.is_empty() {
                    body.push_str("\n---\n");
                }
                let line = body.lines().count() as u32 + 1;
                starts.push((line, name.clone()));
                body.push_str(t);
            }
            Err(e) => {
                eprintln!("{name}:1:1: {e}");
                unreadable = true;
            }
        }
    }
    if unreadable {
        return ExitCode::from(1);
    }
    let before: Option<RolloutList<'static>> = if dry_run {
        client
            .call("GET", "/api/v1/rollouts", None)
            .ok()
            .and_then(|v| typed(v).ok())
    } else {
        None
    };
    let path = if dry_run {
        "/api/v1/apply?dryRun=true"
    } else {
        "/api/v1/apply"
    };
    match client.call("POST", path, Some(("application/yaml", &body))) {
        Ok(answer) => {
            let answer: ApplyResult = match typed(answer) {
                Ok(a) => a,
                Err(f) => return f.report(),
            };
            let suffix = if dry_run { " (dry run)" } else { "" };
            for r in answer.results {
                let kind = r.kind.to_lowercase();
                println!("{kind}/{} {}{suffix}", r.name, r.change);
                if dry_run && r.change == "configured" && kind == "rollout" {
                    show_diff(before.as_ref(), &r.name, &body);
                }
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(422, message, details)) => {
            eprintln!("rolloutctl: {message}");
            for d in details {
                let Ok(d) = serde_json::from_value::<ErrorDetail>(d) else {
                    continue;
                };
                let line = u32::try_from(d.line).unwrap_or(1);
                let (start, file) = starts
                    .iter()
                    .rev()
                    .find(|(s, _)| *s <= line)
                    .cloned()
                    .unwrap_or((1, "<request>".into()));
                let text = if d.path.is_empty() {
                    d.message.clone()
                } else {
                    format!("{}: {}", d.path, d.message)
                };
                println!("{file}:{}:{}: {text}", line - start + 1, d.column);
            }
            ExitCode::from(1)
        }
        Err(f) => f.report(),
    }
}

/// Prints the lines of a rollout's spec that a dry run would change.
fn show_diff(before: Option<&RolloutList<'static>>, name: &str, body: &str) {
    let old = before
        .and_then(|b| b.items.iter().find(|i| i.metadata.name.as_str() == name))
        .map(|i| serde_json::to_string_pretty(&i.spec).unwrap_or_default());
    let new = rollout_spec::load([("<new>", body)], &[])
        .ok()
        .or_else(|| {
            // Templates may live on the server only; read the rollouts alone.
            let mut set = rollout_spec::SpecSet::default();
            let mut diags = Vec::new();
            rollout_spec::parse_source("<new>", body, &mut set, &mut diags);
            Some(set)
        })
        .and_then(|set| {
            set.rollouts
                .into_iter()
                .find(|r| r.value.metadata.name.as_str() == name)
                .map(|r| serde_json::to_string_pretty(&r.value.spec).unwrap_or_default())
        });
    if let (Some(old), Some(new)) = (old, new) {
        for line in diff_lines(&old, &new) {
            println!("  {line}");
        }
    }
}

/// A line diff (longest common subsequence): `- old`, `+ new`.
pub fn diff_lines(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i].trim_start()));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j].trim_start()));
            j += 1;
        }
    }
    out
}

fn age(since: Option<Time>) -> String {
    let Some(then) = since else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let s = Time::from_millis(now).since(then) / 1000;
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 172_800 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// The steps of a canary rollout (none for blue-green).
/// The steps of a canary run, or of an experiment (its weight, its
/// duration, back to 0).
fn steps<'r>(item: &'r RolloutResource<'_>) -> std::borrow::Cow<'r, [CanaryStep]> {
    item.spec.strategy.canary_steps().unwrap_or_default()
}

fn table_row(item: &RolloutResource<'_>) -> [String; 5] {
    let n = steps(item).len();
    let st = item.status.as_deref();
    let step = match (st.map(|s| s.current_step_index), n) {
        (Some(i), n) if n > 0 => format!("{}/{n}", (i as usize).min(n)),
        (Some(i), _) => i.to_string(),
        _ => "-".into(),
    };
    let observed = st
        .and_then(|s| s.observed_weights)
        .map_or("-".into(), |w| w.canary.to_string());
    [
        item.metadata.name.to_string(),
        st.map_or("Pending", |s| s.phase.as_str()).to_string(),
        step,
        format!("{}/{}", st.map_or(0, |s| s.canary_weight), observed),
        age(st.map(|s| s.started_at.unwrap_or(s.updated_at))),
    ]
}

/// `rolloutctl get [NAME] [-o table|json|yaml]`.
pub fn get(client: &Client, name: Option<&str>, output: &str) -> ExitCode {
    let path = match name {
        Some(n) => format!("/api/v1/rollouts/{n}"),
        None => "/api/v1/rollouts".into(),
    };
    let value = match client.call("GET", &path, None) {
        Ok(v) => v,
        Err(f) => return f.report(),
    };
    match output {
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ),
        "yaml" => print!("{}", crate::yaml::to_yaml(&value, 0)),
        _ => {
            let read = match name {
                Some(_) => typed(value).map(|i| vec![i]),
                None => typed::<RolloutList<'static>>(value).map(|l| l.items),
            };
            let items: Vec<RolloutResource<'static>> = match read {
                Ok(items) => items,
                Err(f) => return f.report(),
            };
            let mut rows = vec![[
                "NAME".to_string(),
                "PHASE".into(),
                "STEP".into(),
                "CANARY (DESIRED/SEEN)".into(),
                "AGE".into(),
            ]];
            rows.extend(items.iter().map(table_row));
            let widths: Vec<usize> = (0..5)
                .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
                .collect();
            for r in rows {
                let line: Vec<String> = r
                    .iter()
                    .zip(&widths)
                    .map(|(v, w)| format!("{v:<w$}"))
                    .collect();
                println!("{}", line.join("   ").trim_end());
            }
        }
    }
    ExitCode::SUCCESS
}

pub(crate) fn view(item: &RolloutResource<'_>) -> String {
    let mut out = String::new();
    let name = item.metadata.name.as_str();
    // Not reconciled yet: no run, nothing seen.
    let st = item.status.as_deref();
    out.push_str(&format!(
        "{name}  revision {}  run {}  {}\n",
        st.map_or("-", |s| s.revision.as_str()),
        st.map_or(0, |s| s.run),
        st.map_or("Pending", |s| s.phase.as_str())
    ));
    out.push_str(&format!("  {}\n\n", st.map_or("", |s| s.message.as_str())));
    let weight = usize::from(st.map_or(0, |s| s.canary_weight).min(100));
    let bar = format!("{}{}", "█".repeat(weight / 4), "·".repeat(25 - weight / 4));
    let seen = st
        .and_then(|s| s.observed_weights)
        .map_or("-".into(), |w| w.canary.to_string());
    out.push_str(&format!(
        "  canary {bar} {weight}% (seen on the load balancer: {seen}%)\n\n"
    ));
    // Several load balancers in lockstep: each one's weights.
    for t in st.iter().flat_map(|s| &s.targets) {
        let seen = t.observed_weights.map_or("not read yet".into(), |w| {
            format!("stable {} / canary {}", w.stable, w.canary)
        });
        let holds = if t.holds_run_weights {
            "holds the run's weights"
        } else {
            "not yet at the run's weights"
        };
        out.push_str(&format!(
            "  target {:<8} {seen}  {holds}  {}\n",
            t.name, t.place
        ));
    }
    if st.is_some_and(|s| !s.targets.is_empty()) {
        out.push('\n');
    }
    let steps = steps(item);
    if !steps.is_empty() {
        let current = st.map_or(0, |s| s.current_step_index) as usize;
        for (i, s) in steps.iter().enumerate() {
            let mark = if i == current {
                "▶"
            } else if i < current {
                "✓"
            } else {
                " "
            };
            let what = match s {
                CanaryStep::SetWeight(w) => format!("setWeight {w}"),
                CanaryStep::Pause(p) => match p.duration {
                    Some(d) => format!("pause {d}"),
                    None => "pause until promoted".into(),
                },
                CanaryStep::Webhook(h) => format!("webhook {}", h.name),
                CanaryStep::Chaos(c) => format!(
                    "chaos: experiment template {} (at most {})",
                    c.experiment_template_id, c.duration
                ),
            };
            out.push_str(&format!("  {mark} {}. {what}\n", i + 1));
        }
        out.push('\n');
    }
    if let Some(c) = st.and_then(|s| s.chaos.as_ref()) {
        out.push_str(&format!(
            "  chaos: experiment {} of template {}: {}{} (asked for at {}){}\n\n",
            c.experiment_id.as_deref().unwrap_or("(not started yet)"),
            c.template_id,
            c.state.as_deref().unwrap_or("starting"),
            c.reason
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(|r| format!(", {r}"))
                .unwrap_or_default(),
            c.requested_at,
            if c.stop { "; being stopped" } else { "" }
        ));
    }
    let fmt = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.5}"));
    for (t, a) in st.iter().flat_map(|s| &s.analysis.templates) {
        for m in a.last.iter().flat_map(|l| &l.result.metrics) {
            out.push_str(&format!(
                "  {t} {:<10} {:<13} stable {}  canary {}  {}\n",
                m.metric,
                m.verdict.as_str(),
                fmt(m.stable),
                fmt(m.canary),
                m.reason
            ));
        }
    }
    out
}

/// `rolloutctl target NAME`: where the next revision goes. That is the
/// canary target group, unless it serves all traffic (the last run of a
/// rollout with fixed `stable`/`canary` succeeded): deploying there would
/// replace production with no canary, so this refuses and says what to do.
/// With ping-pong `targetGroups` the roles have swapped by then, and the
/// canary group is the idle one. With `additionalTargets`, each target's
/// canary group follows, one a line.
pub fn target(client: &Client, name: &str) -> ExitCode {
    let item: RolloutResource<'static> = match client
        .call("GET", &format!("/api/v1/rollouts/{name}"), None)
        .and_then(typed)
    {
        Ok(v) => v,
        Err(f) => return f.report(),
    };
    let st = item.status.as_deref();
    let canary = st
        .map(|s| s.canary_target_group_arn.clone())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| item.spec.canary.target_group_arn.to_string());
    let serves_all = st.is_some_and(|s| {
        s.phase == Phase::Succeeded && s.observed_weights.is_none_or(|w| w.canary == 100)
    });
    if serves_all {
        eprintln!(
            "rolloutctl: rollout/{name}: the canary target group {canary} serves all traffic (revision {} succeeded); deploying there would replace production with no canary. Swap stable and canary in the spec first (or name both in spec.targetGroups: rolloutd then swaps them itself after each success).",
            st.map_or("-", |s| s.revision.as_str())
        );
        return ExitCode::from(1);
    }
    println!("{canary}");
    // A rollout over several load balancers: each one's canary group too,
    // in the spec's order (one a line, as the first).
    for t in &item.spec.additional_targets {
        println!("{}", t.canary.target_group_arn);
    }
    ExitCode::SUCCESS
}

/// `rolloutctl abort|promote|pause|resume|retry NAME`.
pub fn command(
    client: &Client,
    verb: &str,
    name: &str,
    reason: Option<&str>,
    full: bool,
) -> ExitCode {
    let mut body = serde_json::Map::new();
    if let Some(r) = reason {
        body.insert("reason".into(), Value::String(r.into()));
    }
    if full {
        body.insert("full".into(), Value::Bool(true));
    }
    let text = Value::Object(body).to_string();
    match client.call(
        "POST",
        &format!("/api/v1/rollouts/{name}/{verb}"),
        Some(("application/json", &text)),
    ) {
        Ok(_) => {
            println!("rollout/{name} {verb} accepted");
            ExitCode::SUCCESS
        }
        Err(f) => f.report(),
    }
}

/// `rolloutctl delete NAME [--orphan] [--no-wait]`: a rollout whose run
/// holds canary traffic first returns it to stable; unless `no_wait`, this
/// waits (up to five minutes) until the server has removed it.
pub fn delete(client: &Client, name: &str, orphan: bool, no_wait: bool) -> ExitCode {
    let query = if orphan { "?orphan=true" } else { "" };
    let body: Deleted = match client
        .call("DELETE", &format!("/api/v1/rollouts/{name}{query}"), None)
        .and_then(typed)
    {
        Ok(b) => b,
        Err(f) => return f.report(),
    };
    let message = &body.message;
    if !body.pending {
        println!("rollout/{name} deleted: {message}");
        return ExitCode::SUCCESS;
    }
    println!("rollout/{name}: {message}");
    if no_wait {
        return ExitCode::SUCCESS;
    }
    let started = std::time::Instant::now();
    loop {
        match client.call("GET", &format!("/api/v1/rollouts/{name}"), None) {
            Err(Failure::Refused(404, ..)) => {
                println!("rollout/{name} deleted: stable carries all traffic");
                return ExitCode::SUCCESS;
            }
            Err(f) => return f.report(),
            Ok(r) => {
                if started.elapsed() > Duration::from_secs(300) {
                    let message = typed::<RolloutResource<'static>>(r)
                        .ok()
                        .and_then(|r| r.status.map(|s| s.message.clone()))
                        .unwrap_or_default();
                    eprintln!(
                        "rolloutctl: rollout/{name} is still returning its traffic after 5 minutes: {message}"
                    );
                    return ExitCode::from(1);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_show_changed_lines() {
        let d = diff_lines("a\nrevision: 1\nc\n", "a\nrevision: 2\nc\n");
        assert_eq!(d, vec!["- revision: 1", "+ revision: 2"]);
        assert!(diff_lines("x\n", "x\n").is_empty());
    }
}
