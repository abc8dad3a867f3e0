//! The documentation holds: every Rollout or AnalysisTemplate written in
//! `docs/`, `deploy/`, `config/` or the README (as a file or as a YAML block
//! in Markdown) passes `rolloutctl validate`; every relative link in the
//! Markdown resolves; every JSON and YAML file under `deploy/` parses.

use std::path::{Path, PathBuf};
use std::process::Command;

use rollout_spec::tree::{parse_stream, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every file under the documented directories, and the README.
fn files() -> Vec<PathBuf> {
    let root = repo();
    let mut out = vec![root.join("README.md")];
    for d in ["docs", "deploy", "config"] {
        walk(&root.join(d), &mut out);
    }
    out.sort();
    out
}

fn ext(p: &Path) -> &str {
    p.extension().and_then(|e| e.to_str()).unwrap_or("")
}

/// Whether a YAML text holds one of our kinds.
fn is_ours(text: &str) -> bool {
    let Ok(docs) = parse_stream(text) else {
        return false;
    };
    docs.iter().any(|d| match &d.root.value {
        Value::Map(entries) => entries.iter().any(|(k, v)| {
            matches!(&k.value, Value::Scalar { text, .. } if text == "kind")
                && matches!(&v.value, Value::Scalar { text, .. } if text == "Rollout" || text == "AnalysisTemplate")
        }),
        _ => false,
    })
}

/// The ```yaml blocks of a Markdown text.
fn yaml_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        let t = line.trim_start();
        match &mut cur {
            None if t.starts_with("```yaml") || t.starts_with("```yml") => {
                cur = Some(String::new())
            }
            Some(b) if t.starts_with("```") => {
                out.push(std::mem::take(b));
                cur = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

fn validate(path: &Path) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_rolloutctl"))
        .args(["validate", "-f"])
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn every_spec_in_the_docs_validates() {
    let tmp = std::env::temp_dir().join(format!("rolloutd-doc-specs-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for f in files() {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        match ext(&f) {
            "yaml" | "yml" if is_ours(&text) => {
                checked.push(f.display().to_string());
                if let Err(e) = validate(&f) {
                    failures.push(format!("{}: {e}", f.display()));
                }
            }
            "md" => {
                for (i, block) in yaml_blocks(&text).into_iter().enumerate() {
                    if !is_ours(&block) {
                        continue;
                    }
                    let name = format!(
                        "{}-{i}.yaml",
                        f.file_stem().and_then(|s| s.to_str()).unwrap_or("doc")
                    );
                    let p = tmp.join(name);
                    std::fs::write(&p, &block).expect("write");
                    checked.push(format!("{} block {i}", f.display()));
                    if let Err(e) = validate(&p) {
                        failures.push(format!("{} (YAML block {i}): {e}", f.display()));
                    }
                }
            }
            _ => {}
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The examples and the reference's embedded examples at least.
    assert!(checked.len() >= 5, "{checked:?}");
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    let mut seen = 0;
    for f in files().into_iter().filter(|f| ext(f) == "md") {
        let text = std::fs::read_to_string(&f).expect("markdown");
        let dir = f.parent().expect("dir");
        let mut in_code = false;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            if in_code {
                continue;
            }
            // Links inside `inline code` are not links.
            let prose: String = line
                .split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 0)
                .map(|(_, s)| s)
                .collect::<Vec<_>>()
                .join(" ");
            let mut rest = prose.as_str();
            while let Some(at) = rest.find("](") {
                rest = &rest[at + 2..];
                let Some(end) = rest.find(')') else { break };
                let target = &rest[..end];
                rest = &rest[end..];
                if target.is_empty()
                    || target.starts_with('#')
                    || target.contains("://")
                    || target.starts_with("mailto:")
                {
                    continue;
                }
                seen += 1;
                let path = target.split('#').next().unwrap_or(target);
                if !dir.join(path).exists() {
                    broken.push(format!("{}:{}: {target}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(seen > 20, "links found: {seen}");
}

#[test]
fn every_deploy_file_parses() {
    let mut parsed = 0;
    let mut deploy = Vec::new();
    walk(&repo().join("deploy"), &mut deploy);
    for f in deploy {
        let text = std::fs::read_to_string(&f).expect("read");
        match ext(&f) {
            "json" => {
                serde_json::from_str::<serde_json::Value>(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                parsed += 1;
            }
            "yaml" | "yml" => {
                let docs = parse_stream(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                assert!(!docs.is_empty(), "{}: no document", f.display());
                parsed += 1;
            }
            _ => {}
        }
    }
    assert!(parsed >= 7, "{parsed} files");
}

/// `promtool`, installed (Debian's `prometheus` package) when missing; a
/// machine where it cannot be had fails this test loudly.
fn promtool() -> PathBuf {
    let found = |p: &str| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !found("promtool") {
        let installed = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed && found("promtool"),
            "promtool is missing and `apt-get install -y prometheus` failed: install Debian's prometheus package"
        );
    }
    PathBuf::from("promtool")
}

#[test]
fn the_prometheus_rules_and_config_pass_promtool() {
    let dir = repo().join("deploy/prometheus");
    for (what, file) in [
        ("rules", "rolloutd-alerts.yml"),
        ("config", "prometheus.yml"),
    ] {
        let out = Command::new(promtool())
            .args(["check", what])
            .arg(dir.join(file))
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool check {what} {file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `rolloutd_…` names in `text` (a histogram's `_bucket`, `_sum` and
/// `_count` series named by their family).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("rolloutd_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(family.to_string());
        rest = &tail[end..];
    }
    out
}

/// Every metric the Grafana dashboard and the Prometheus rules query is
/// one the daemon exports (its name is registered in rolloutd's source).
#[test]
fn dashboards_and_rules_query_metrics_that_exist() {
    let mut source = Vec::new();
    walk(&repo().join("crates/rolloutd/src"), &mut source);
    let exported: String = source
        .iter()
        .filter(|p| ext(p) == "rs")
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect();
    let exported: std::collections::BTreeSet<String> = metric_names(&exported)
        .into_iter()
        .filter(|n| exported.contains(&format!("\"{n}\"")))
        .collect();
    let mut checked = 0;
    for dir in ["deploy/grafana", "deploy/prometheus"] {
        let mut files = Vec::new();
        walk(&repo().join(dir), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read");
            for name in metric_names(&text) {
                assert!(
                    exported.contains(&name),
                    "{} queries {name}, which rolloutd does not export",
                    f.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "{checked} names checked");
    assert!(exported.contains("rolloutd_run_effect_high"));
}
