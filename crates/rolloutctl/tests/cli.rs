//! `rolloutctl` against a running `rolloutd` (the real binaries; the daemon
//! on SQLite with a simulated load balancer, on a free port).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    server: String,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rolloutd() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_rolloutctl")).with_file_name("rolloutd");
    assert!(
        p.exists(),
        "{} is missing: build the workspace (cargo build --workspace)",
        p.display()
    );
    p
}

fn start(name: &str) -> Daemon {
    let dir = std::env::temp_dir().join(format!("rolloutctl-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut child = Command::new(rolloutd())
        .arg("serve")
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.join("state.db").display()))
        .arg("--simulate-world")
        .arg(format!("sqlite://{}", dir.join("world.db").display()))
        .args(["--listen", "127.0.0.1:0", "--reconcile-interval", "300ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rolloutd");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(rest) = line.split("listen=").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("rolloutd listening");
    Daemon {
        child,
        server: format!("http://{addr}"),
        dir,
    }
}

fn ctl(d: &Daemon, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rolloutctl"))
        .args(["--server", &d.server])
        .args(args)
        .env_remove("ROLLOUTD_TOKEN")
        .output()
        .expect("rolloutctl")
}

fn text(o: &Output) -> (Option<i32>, String, String) {
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const BASE: &str = include_str!("../../rollout-spec/tests/valid-base.yaml");

fn fast(revision: &str) -> String {
    BASE.replace("- pause: {duration: 5m}", "- pause: {duration: 1s}")
        .replace("interval: 1m", "interval: 1s")
        .replace("period: 60s", "period: 1s\n    delay: 1s")
        .replace("revision: \"r1\"", &format!("revision: \"{revision}\""))
}

#[test]
fn a_rollout_from_apply_to_the_end() {
    let d = start("flow");
    let file = d.dir.join("checkout.yaml");
    std::fs::write(&file, fast("r1")).expect("write");
    let f = file.to_string_lossy().to_string();

    let (code, out, err) = text(&ctl(&d, &["apply", "-f", &f]));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "analysistemplate/golden created\nrollout/checkout-api created\n"
    );
    let (_, out, _) = text(&ctl(&d, &["apply", "-f", &f]));
    assert_eq!(
        out,
        "analysistemplate/golden unchanged\nrollout/checkout-api unchanged\n"
    );

    let next = d.dir.join("next.yaml");
    std::fs::write(&next, fast("r2")).expect("write");
    let (code, out, _) = text(&ctl(
        &d,
        &["apply", "--dry-run", "-f", &next.to_string_lossy()],
    ));
    assert_eq!(code, Some(0));
    assert!(
        out.contains("rollout/checkout-api configured (dry run)"),
        "{out}"
    );
    assert!(
        out.contains("- \"revision\": \"r1\",") && out.contains("+ \"revision\": \"r2\","),
        "{out}"
    );

    // `status --watch` follows the run until it ends.
    let (code, out, err) = text(&ctl(&d, &["status", "checkout-api", "--watch"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Succeeded"), "{out}");
    assert!(out.contains("▶") || out.contains("✓"), "{out}");

    let (_, table, _) = text(&ctl(&d, &["get"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("PHASE"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("checkout-api")
            && lines[1].contains("Succeeded")
            && lines[1].contains("100/100"),
        "{table}"
    );
    let (_, json, _) = text(&ctl(&d, &["get", "checkout-api", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["status"]["phase"], "Succeeded");
    let (_, yaml, _) = text(&ctl(&d, &["get", "checkout-api", "-o", "yaml"]));
    assert!(yaml.contains("metadata:\n  name: checkout-api\n"), "{yaml}");

    let (code, _, err) = text(&ctl(&d, &["abort", "checkout-api", "--reason", "too late"]));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("has ended (Succeeded)") && err.contains("HTTP 409"),
        "{err}"
    );

    let (code, out, _) = text(&ctl(&d, &["delete", "checkout-api"]));
    assert_eq!(code, Some(0));
    assert!(out.contains("deleted"));
    let (code, _, err) = text(&ctl(&d, &["get", "checkout-api"]));
    assert_eq!(code, Some(1));
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn overrides_reach_the_run() {
    let d = start("overrides");
    let file = d.dir.join("slow.yaml");
    std::fs::write(&file, BASE).expect("write");
    assert_eq!(
        ctl(&d, &["apply", "-f", &file.to_string_lossy()])
            .status
            .code(),
        Some(0)
    );
    let t = Instant::now();
    loop {
        let (_, out, _) = text(&ctl(&d, &["get", "checkout-api", "-o", "json"]));
        if out.contains("\"phase\": \"Progressing\"") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out, _) = text(&ctl(&d, &["pause", "checkout-api", "--reason", "lunch"]));
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "rollout/checkout-api pause accepted\n")
    );
    let (code, out, _) = text(&ctl(&d, &["abort", "checkout-api", "--reason", "pager"]));
    assert_eq!(code, Some(0), "{out}");
    let t = Instant::now();
    loop {
        let (_, out, _) = text(&ctl(&d, &["status", "checkout-api"]));
        if out.contains("Aborted") {
            assert!(out.contains("aborted by api: pager"), "{out}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, _, _) = text(&ctl(&d, &["retry", "checkout-api"]));
    assert_eq!(code, Some(0));
}

#[test]
fn invalid_specs_come_back_with_their_file_line_and_column() {
    let d = start("invalid");
    let good = d.dir.join("a.yaml");
    let bad = d.dir.join("b.yaml");
    std::fs::write(&good, "# a template\napiVersion: rolloutd.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: other}\nspec:\n  alb: {errorRate: {maxIncrease: 10%}}\n").expect("write");
    std::fs::write(&bad, BASE.replace("- setWeight: 5", "- setWeight: 500")).expect("write");
    let (code, out, err) = text(&ctl(
        &d,
        &[
            "apply",
            "-f",
            &good.to_string_lossy(),
            &bad.to_string_lossy(),
        ],
    ));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        out,
        format!(
            "{}:18:22: spec.strategy.canary.steps[0].setWeight: weight 500 is outside 0–100\n",
            bad.display()
        )
    );
    // All or nothing: the good file was not applied either.
    let (_, table, _) = text(&ctl(&d, &["get"]));
    assert_eq!(table.lines().count(), 1, "{table}");
}

#[test]
fn an_unreachable_server_exits_3_and_usage_errors_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_rolloutctl"))
        .args(["--server", "http://127.0.0.1:9", "get"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"));
    let out = Command::new(env!("CARGO_BIN_EXE_rolloutctl"))
        .args(["get", "-o", "xml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_rolloutctl"))
        .args(["completions", "bash"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rolloutctl"));
}
