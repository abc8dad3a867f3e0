//! The commands that talk to the daemon: `apply`, `get`, `status`, the
//! manual overrides and `delete`. The server is `--server` (env
//! `ROLLOUTD_SERVER`), the token env `ROLLOUTD_TOKEN`. Exit codes: 0 done,
//! 1 refused or invalid (the server's message on stderr), 3 the server could
//! not be reached.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::validate::{collect, Input};

/// How to reach the server.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
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
    /// A client of `server`.
    pub fn new(server: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client {
            base: server.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<(&str, &str)>) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
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
            let message = value["error"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            let details = value["details"].as_array().cloned().unwrap_or_default();
            return Err(Failure::Refused(code, message, details));
        }
        Ok(value)
    }
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
    let before: Option<Value> = if dry_run {
        client.call("GET", "/api/v1/rollouts", None).ok()
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
            let suffix = if dry_run { " (dry run)" } else { "" };
            for r in answer["results"].as_array().cloned().unwrap_or_default() {
                let kind = r["kind"].as_str().unwrap_or_default().to_lowercase();
                let name = r["name"].as_str().unwrap_or_default();
                let change = r["change"].as_str().unwrap_or_default();
                println!("{kind}/{name} {change}{suffix}");
                if dry_run && change == "configured" && kind == "rollout" {
                    show_diff(before.as_ref(), name, &body);
                }
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(422, message, details)) => {
            eprintln!("rolloutctl: {message}");
            for d in details {
                let line = d["line"].as_u64().unwrap_or(1) as u32;
                let (start, file) = starts
                    .iter()
                    .rev()
                    .find(|(s, _)| *s <= line)
                    .cloned()
                    .unwrap_or((1, "<request>".into()));
                let path = d["path"].as_str().unwrap_or_default();
                let msg = d["message"].as_str().unwrap_or_default();
                let text = if path.is_empty() {
                    msg.to_string()
                } else {
                    format!("{path}: {msg}")
                };
                println!(
                    "{file}:{}:{}: {text}",
                    line - start + 1,
                    d["column"].as_u64().unwrap_or(1)
                );
            }
            ExitCode::from(1)
        }
        Err(f) => f.report(),
    }
}

/// Prints the lines of a rollout's spec that a dry run would change.
fn show_diff(before: Option<&Value>, name: &str, body: &str) {
    let old = before
        .and_then(|b| b["items"].as_array())
        .and_then(|items| items.iter().find(|i| i["metadata"]["name"] == name))
        .map(|i| serde_json::to_string_pretty(&i["spec"]).unwrap_or_default());
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

fn age(since: Option<&str>) -> String {
    let Some(then) = since.and_then(|s| s.parse::<rollout_core::Time>().ok()) else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let s = rollout_core::Time::from_millis(now).since(then) / 1000;
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

fn table_row(item: &Value) -> [String; 5] {
    let st = &item["status"];
    let steps = item["spec"]["strategy"]["canary"]["steps"]
        .as_array()
        .map_or(0, Vec::len);
    let step = match (st["currentStepIndex"].as_u64(), steps) {
        (Some(i), n) if n > 0 => format!("{}/{n}", i.min(n as u64)),
        (Some(i), _) => i.to_string(),
        _ => "-".into(),
    };
    let observed = st["observedWeights"]["canary"]
        .as_u64()
        .map_or("-".into(), |c| c.to_string());
    [
        item["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        st["phase"].as_str().unwrap_or("Pending").to_string(),
        step,
        format!("{}/{}", st["canaryWeight"].as_u64().unwrap_or(0), observed),
        age(st["startedAt"].as_str().or(st["updatedAt"].as_str())),
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
        "yaml" => print!("{}", to_yaml(&value, 0)),
        _ => {
            let items: Vec<Value> = match name {
                Some(_) => vec![value],
                None => value["items"].as_array().cloned().unwrap_or_default(),
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

/// JSON as YAML (block style; strings quoted when they need it).
pub fn to_yaml(v: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let scalar = |v: &Value| match v {
        Value::Null => "null".to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./@ ".contains(c))
                && !s.starts_with(' ')
                && !s.ends_with(' ')
                && s.parse::<f64>().is_err()
                && !matches!(
                    s.as_str(),
                    "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~"
                );
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        other => other.to_string(),
    };
    let mut out = String::new();
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, val) in map {
                match val {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n{}", to_yaml(val, indent + 2)))
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n{}", to_yaml(val, indent + 2)))
                    }
                    Value::Object(_) => out.push_str(&format!("{pad}{k}: {{}}\n")),
                    Value::Array(_) => out.push_str(&format!("{pad}{k}: []\n")),
                    s => out.push_str(&format!("{pad}{k}: {}\n", scalar(s))),
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        let inner = to_yaml(item, indent + 2);
                        out.push_str(&format!("{pad}- {}", inner.trim_start()));
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}-\n{}", to_yaml(item, indent + 2)))
                    }
                    s => out.push_str(&format!("{pad}- {}\n", scalar(s))),
                }
            }
        }
        Value::Object(_) => out.push_str(&format!("{pad}{{}}\n")),
        Value::Array(_) => out.push_str(&format!("{pad}[]\n")),
        s => out.push_str(&format!("{pad}{}\n", scalar(s))),
    }
    out
}

fn view(item: &Value) -> String {
    let st = &item["status"];
    let mut out = String::new();
    let name = item["metadata"]["name"].as_str().unwrap_or_default();
    out.push_str(&format!(
        "{name}  revision {}  run {}  {}\n",
        st["revision"].as_str().unwrap_or("-"),
        st["run"].as_u64().unwrap_or(0),
        st["phase"].as_str().unwrap_or("Pending")
    ));
    out.push_str(&format!("  {}\n\n", st["message"].as_str().unwrap_or("")));
    let weight = st["canaryWeight"].as_u64().unwrap_or(0) as usize;
    let bar = format!("{}{}", "█".repeat(weight / 4), "·".repeat(25 - weight / 4));
    let seen = st["observedWeights"]["canary"]
        .as_u64()
        .map_or("-".into(), |c| c.to_string());
    out.push_str(&format!(
        "  canary {bar} {weight}% (seen on the load balancer: {seen}%)\n\n"
    ));
    if let Some(steps) = item["spec"]["strategy"]["canary"]["steps"].as_array() {
        let current = st["currentStepIndex"].as_u64().unwrap_or(0) as usize;
        for (i, s) in steps.iter().enumerate() {
            let mark = if i == current {
                "▶"
            } else if i < current {
                "✓"
            } else {
                " "
            };
            let what = if let Some(w) = s["setWeight"].as_u64() {
                format!("setWeight {w}")
            } else {
                match s["pause"]["duration"].as_str() {
                    Some(d) => format!("pause {d}"),
                    None => "pause until promoted".into(),
                }
            };
            out.push_str(&format!("  {mark} {}. {what}\n", i + 1));
        }
        out.push('\n');
    }
    if let Some(templates) = st["analysis"]["templates"].as_object() {
        for (t, a) in templates {
            for m in a["last"]["result"]["metrics"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let fmt = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.5}"));
                out.push_str(&format!(
                    "  {t} {:<10} {:<13} stable {}  canary {}  {}\n",
                    m["metric"].as_str().unwrap_or_default(),
                    m["verdict"].as_str().unwrap_or_default(),
                    fmt(&m["stable"]),
                    fmt(&m["canary"]),
                    m["reason"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    out
}

/// `rolloutctl status NAME [--watch]`.
pub fn status(client: &Client, name: &str, watch: bool) -> ExitCode {
    use std::io::IsTerminal;
    loop {
        let item = match client.call("GET", &format!("/api/v1/rollouts/{name}"), None) {
            Ok(v) => v,
            Err(f) => return f.report(),
        };
        if watch && std::io::stdout().is_terminal() {
            print!("\x1b[2J\x1b[H");
        }
        print!("{}", view(&item));
        let phase = item["status"]["phase"].as_str().unwrap_or("Pending");
        let ended = matches!(phase, "Succeeded" | "RolledBack" | "Aborted" | "Failed");
        if !watch || ended {
            return ExitCode::SUCCESS;
        }
        println!();
        std::thread::sleep(Duration::from_secs(2));
    }
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
    let body = match client.call("DELETE", &format!("/api/v1/rollouts/{name}{query}"), None) {
        Ok(b) => b,
        Err(f) => return f.report(),
    };
    let message = body["message"].as_str().unwrap_or("deleted");
    if body["pending"] != Value::Bool(true) {
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
                    eprintln!(
                        "rolloutctl: rollout/{name} is still returning its traffic after 5 minutes: {}",
                        r["status"]["message"].as_str().unwrap_or_default()
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

    #[test]
    fn yaml_output() {
        let v = serde_json::json!({"a": {"b": [1, "two words", "x:y"]}, "c": true, "d": "5"});
        assert_eq!(
            to_yaml(&v, 0),
            "a:\n  b:\n    - 1\n    - two words\n    - \"x:y\"\nc: true\nd: \"5\"\n"
        );
        // What it prints is YAML that reads back.
        let back = rollout_spec::tree::parse_stream(&to_yaml(&v, 0)).expect("valid YAML");
        assert_eq!(back.len(), 1);
    }
}
