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
    start_with(name, &[], "http")
}

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rolloutctl-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// Starts the daemon with `args`, its files in `rolloutctl-cli-…-NAME`
/// (made before, when `args` name files there); `scheme` is the server's.
fn start_with(name: &str, args: &[&str], scheme: &str) -> Daemon {
    let dir = std::env::temp_dir().join(format!("rolloutctl-cli-{}-{name}", std::process::id()));
    if !dir.exists() {
        std::fs::create_dir_all(&dir).expect("dir");
    }
    let mut child = Command::new(rolloutd())
        .arg("serve")
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.join("state.db").display()))
        .arg("--simulate-world")
        .arg(format!("sqlite://{}", dir.join("world.db").display()))
        .args(["--listen", "127.0.0.1:0", "--reconcile-interval", "300ms"])
        .args(args)
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
        server: format!("{scheme}://{addr}"),
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

/// `rolloutctl status NAME --watch`, killed (and the test failed with
/// what it printed) when the run has not ended within 60 s: a run that
/// paused must not hang the suite.
fn watch(d: &Daemon, name: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolloutctl"))
        .args(["--server", &d.server, "status", name, "--watch"])
        .env_remove("ROLLOUTD_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rolloutctl");
    let t = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!(
                "status --watch did not end within 60 s:\n{}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("output")
}

fn text(o: &Output) -> (Option<i32>, String, String) {
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const BASE: &str = include_str!("../../rollout-spec/tests/valid-base.yaml");

/// The base rollout, fast: 1 s pauses and intervals. 5% of the simulated
/// route's traffic is about 50 requests a second, exactly the default
/// `minRequests`: half the intervals would be inconclusive by chance and a
/// run could pause for it, so the template asks for 10.
fn fast(revision: &str) -> String {
    BASE.replace("- pause: {duration: 5m}", "- pause: {duration: 1s}")
        .replace("interval: 1m", "interval: 1s")
        .replace(
            "period: 60s",
            "period: 1s\n    delay: 1s\n    minRequests: 10",
        )
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

    // While the run goes: `target` names the canary target group (where
    // CI deploys the revision), as the status does.
    let (code, target, err) = text(&ctl(&d, &["target", "checkout-api"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        target
            .trim()
            .ends_with("targetgroup/shop-green/0f2a6b1c9d8e7f60"),
        "{target}"
    );

    // `status --watch` follows the run until it ends.
    let (code, out, err) = text(&watch(&d, "checkout-api"));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Succeeded"), "{out}");
    assert!(out.contains("▶") || out.contains("✓"), "{out}");

    // Once the canary group serves all traffic, deploying there would
    // replace production with no canary: `target` refuses and says why.
    let (code, _, err) = text(&ctl(&d, &["target", "checkout-api"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("serves all traffic") && err.contains("Swap stable and canary"),
        "{err}"
    );
    let (_, json, _) = text(&ctl(&d, &["get", "checkout-api", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert!(
        v["status"]["stableTargetGroupArn"]
            .as_str()
            .is_some_and(|a| a.contains("shop-blue")),
        "{json}"
    );
    assert!(
        v["status"]["canaryTargetGroupArn"]
            .as_str()
            .is_some_and(|a| a.contains("shop-green")),
        "{json}"
    );

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

    // What the run did, for people and for a pull request.
    let (code, table, err) = text(&ctl(&d, &["report", "checkout-api"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        table.contains("Succeeded") && table.contains("95% INTERVAL"),
        "{table}"
    );
    assert!(
        table.contains("golden") && table.contains("latency"),
        "{table}"
    );
    let (code, md, _) = text(&ctl(&d, &["report", "checkout-api", "-o", "markdown"]));
    assert_eq!(code, Some(0));
    assert!(
        md.starts_with("### rollout `checkout-api`, run ")
            && md.contains(
                "| template | check | stable | canary | effect | 95% interval | verdict |"
            ),
        "{md}"
    );
    let (code, json, _) = text(&ctl(&d, &["report", "checkout-api", "-o", "json"]));
    assert_eq!(code, Some(0));
    let r: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(r["outcome"], "Succeeded", "{json}");
    let run = r["run"].as_u64().expect("run").to_string();
    let (code, again, _) = text(&ctl(
        &d,
        &["report", "checkout-api", "--run", &run, "-o", "json"],
    ));
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&again).expect("json"),
        r
    );
    let (code, _, err) = text(&ctl(&d, &["report", "checkout-api", "--run", "99"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("has no run 99"), "{err}");

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

/// What `get -o yaml` prints applies back unchanged, strings YAML would
/// read as something else (`True`, `null`, `0x1F`, `.inf`, a date, a lone
/// quote) included.
#[test]
fn get_as_yaml_applies_back_unchanged() {
    let d = start("yaml-back");
    let file = d.dir.join("tricky.yaml");
    let tricky = BASE.replace("revision: \"r1\"", "revision: \"True\"").replacen(
        "  name: checkout-api\n",
        "  name: checkout-api\n  annotations: {a: \"0x1F\", b: \".inf\", c: \"null\", d: \"'\", e: \"Null\", f: \"2026-11-30\", g: \"~\", h: \"1_000\", \"on\": \"x: y\"}\n  labels: {team: \"NO\"}\n",
        1,
    );
    assert!(tricky.contains("annotations"), "{tricky}");
    std::fs::write(&file, &tricky).expect("write");
    let (code, _, err) = text(&ctl(&d, &["apply", "-f", &file.to_string_lossy()]));
    assert_eq!(code, Some(0), "{err}");
    let (code, yaml, err) = text(&ctl(&d, &["get", "checkout-api", "-o", "yaml"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        yaml.starts_with("apiVersion: rolloutd.dev/v1alpha1\n")
            && yaml.contains("\nkind: Rollout\n"),
        "{yaml}"
    );
    let mut back = Command::new(env!("CARGO_BIN_EXE_rolloutctl"))
        .args(["--server", &d.server, "apply", "--dry-run", "-f", "-"])
        .env_remove("ROLLOUTD_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rolloutctl");
    use std::io::Write;
    back.stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write");
    let (code, out, err) = text(&back.wait_with_output().expect("rolloutctl"));
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "rollout/checkout-api unchanged (dry run)\n"),
        "{err}\n{yaml}"
    );
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

/// An internal CA (`ca.crt`) and a server certificate it signed for
/// 127.0.0.1 (`tls.crt`, `tls.key`), made with the `openssl` command.
fn openssl_cert(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command (Debian package openssl) makes the test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "tls.crt",
    ]);
}

/// A daemon that serves HTTPS and wants a token for reads and another for
/// changes: rolloutctl reaches it with `--ca-file` and a token from
/// `--token-file` or `ROLLOUTD_TOKEN`, on every request.
#[test]
fn a_secured_daemon_is_reached_with_a_token_and_a_ca_file() {
    let dir = work_dir("secured");
    openssl_cert(&dir);
    std::fs::write(dir.join("token"), "write-token-1\n").expect("token");
    std::fs::write(dir.join("read-token"), "read-token-1\n").expect("token");
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let d = start_with(
        "secured",
        &[
            "--api-token-file",
            &path("token"),
            "--api-read-token-file",
            &path("read-token"),
            "--tls-cert-file",
            &path("tls.crt"),
            "--tls-key-file",
            &path("tls.key"),
        ],
        "https",
    );
    let ca = path("ca.crt");
    let run = |args: &[&str], env_token: Option<&str>, stdin: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rolloutctl"));
        cmd.args(["--server", &d.server])
            .args(args)
            .env_remove("ROLLOUTD_TOKEN")
            .env_remove("ROLLOUTD_TOKEN_FILE")
            .env_remove("ROLLOUTD_CA_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = env_token {
            cmd.env("ROLLOUTD_TOKEN", t);
        }
        let mut child = cmd.spawn().expect("rolloutctl");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write stdin");
        } else {
            drop(child.stdin.take());
        }
        text(&child.wait_with_output().expect("rolloutctl"))
    };

    // Without the CA, the server's certificate is not trusted: unreachable.
    let (code, _, err) = run(&["get"], Some("read-token-1"), None);
    assert_eq!(code, Some(3), "{err}");
    // With it but without a token: refused.
    let (code, _, err) = run(&["--ca-file", &ca, "get"], None, None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    // The read token reads, and cannot change anything.
    let (code, out, err) = run(&["--ca-file", &ca, "get"], Some("read-token-1"), None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    let (code, _, err) = run(
        &[
            "--ca-file",
            &ca,
            "--token-file",
            &path("read-token"),
            "apply",
            "-f",
            "-",
        ],
        None,
        Some(&fast("r1")),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("HTTP 403"), "{err}");

    // The CI example's command lines (deploy/ci/github-actions.yaml), as
    // written there, with its token file and the specs on stdin.
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ci/github-actions.yaml"),
    )
    .expect("the CI example");
    let lines: Vec<Vec<String>> = example
        .lines()
        .filter_map(|l| l.trim().strip_prefix("run: ./rolloutctl "))
        .map(|l| {
            l.split_whitespace()
                .map(|w| {
                    w.trim_matches('"')
                        .replace("$RUNNER_TEMP/token", &path("token"))
                        .replace("rollouts/", &path("rollouts"))
                })
                .collect()
        })
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    std::fs::create_dir_all(dir.join("rollouts")).expect("dir");
    std::fs::write(dir.join("rollouts/checkout.yaml"), fast("r1")).expect("spec");
    for line in &lines {
        let mut args: Vec<&str> = vec!["--ca-file", &ca];
        args.extend(line.iter().map(String::as_str));
        let (code, out, err) = run(&args, None, None);
        assert_eq!(code, Some(0), "rolloutctl {line:?}: {err}");
        println!("rolloutctl {}:\n{out}", line.join(" "));
    }
    // Applied: the read token follows it.
    let (code, out, err) = run(
        &["--ca-file", &ca, "status", "checkout-api"],
        Some("read-token-1"),
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("checkout-api"), "{out}");
}

/// `deploy/ci/release.sh` as written: a CI pipeline ships v2, v3 and v4 of
/// a rollout with ping-pong target groups, editing nothing but the
/// revision; each goes into the group rolloutd names, and the exit code
/// says how the run ended.
#[test]
fn the_release_script_ships_revisions_with_no_hand_edit() {
    let d = start("release");
    let spec = d.dir.join("checkout.yaml");
    let pair = fast("v1").replace(
        "  stable:\n    targetGroupArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-blue/73e2d6bc24d8a067\n  canary:\n    targetGroupArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-green/0f2a6b1c9d8e7f60\n",
        "  targetGroups:\n    - arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-blue/73e2d6bc24d8a067\n    - arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-green/0f2a6b1c9d8e7f60\n",
    );
    assert!(pair.contains("targetGroups"), "{pair}");
    std::fs::write(&spec, &pair).expect("spec");
    let f = spec.to_string_lossy().to_string();
    assert_eq!(ctl(&d, &["apply", "-f", &f]).status.code(), Some(0));
    let (code, _, err) = text(&watch(&d, "checkout-api"));
    assert_eq!(code, Some(0), "v1: {err}");

    let deployed = d.dir.join("deployed.txt");
    let deploy = d.dir.join("deploy.sh");
    std::fs::write(
        &deploy,
        format!("#!/bin/sh\necho \"$1 $2\" >> {}\n", deployed.display()),
    )
    .expect("deploy script");
    let _ = Command::new("chmod").arg("+x").arg(&deploy).status();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ci/release.sh");
    let release = |revision: &str| {
        Command::new("bash")
            .arg(&script)
            .args(["checkout-api", &f, revision])
            .env("ROLLOUTCTL", env!("CARGO_BIN_EXE_rolloutctl"))
            .env("ROLLOUTCTL_FLAGS", format!("--server {}", d.server))
            .env("DEPLOY_COMMAND", &deploy)
            .env_remove("ROLLOUTD_TOKEN")
            .output()
            .expect("release.sh")
    };
    let group = |line: &str| {
        if line.contains("shop-blue") {
            "blue"
        } else if line.contains("shop-green") {
            "green"
        } else {
            "?"
        }
    };
    // v1 went into green (blue served all traffic): green serves now.
    for (revision, into) in [("v2", "blue"), ("v3", "green")] {
        let (code, out, err) = text(&release(revision));
        assert_eq!(code, Some(0), "{revision}: {out}\n{err}");
        assert!(out.contains("Succeeded"), "{out}");
        let last = std::fs::read_to_string(&deployed).expect("deployed");
        let last = last.lines().last().unwrap_or("");
        assert_eq!(
            (group(last), last.ends_with(revision)),
            (into, true),
            "{last}"
        );
    }
    // v4 is aborted mid-run: the script exits 1 and says why; the roles
    // stay (the next revision goes into blue again).
    let aborter = {
        let server = d.server.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                let out = Command::new(env!("CARGO_BIN_EXE_rolloutctl"))
                    .args(["--server", &server, "get", "checkout-api", "-o", "json"])
                    .output()
                    .expect("rolloutctl");
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                if v["status"]["revision"] == "v4" && v["status"]["phase"] == "Progressing" {
                    let _ = Command::new(env!("CARGO_BIN_EXE_rolloutctl"))
                        .args([
                            "--server",
                            &server,
                            "abort",
                            "checkout-api",
                            "--reason",
                            "pager",
                        ])
                        .output();
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (code, out, err) = text(&release("v4"));
    aborter.join().expect("aborter");
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("revision v4 ended Aborted"), "{err}");
    let (code, target, _) = text(&ctl(&d, &["target", "checkout-api"]));
    assert_eq!((code, group(&target)), (Some(0), "blue"), "{target}");
    // Nothing in the spec changed but its revision.
    let now = std::fs::read_to_string(&spec).expect("spec");
    assert_eq!(now, pair.replace("revision: \"v1\"", "revision: \"v4\""));
}

/// A Rollout over two load balancers (`docs/examples/two-regions.yaml`,
/// fast) in the simulated world: it runs to the end, and `status NAME`
/// shows each target and what it holds.
#[test]
fn status_shows_each_target_of_a_rollout_over_two_load_balancers() {
    let d = start("targets");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/two-regions.yaml"),
    )
    .expect("the example");
    let fast = example
        .replace("pause: {duration: 5m}", "pause: {duration: 1s}")
        .replace("interval: 1m", "interval: 1s")
        .replace("period: 60s", "period: 1s")
        .replace("delay: 60s", "delay: 1s")
        .replace("statistic: p99", "statistic: Average")
        .replace("minRequests: 50", "minRequests: 10");
    let file = d.dir.join("two-regions.yaml");
    std::fs::write(&file, fast).expect("write");
    let (code, out, err) = text(&ctl(&d, &["apply", "-f", &file.to_string_lossy()]));
    assert_eq!(code, Some(0), "{out}{err}");
    // Where CI deploys the revision: each target's canary group, one a line.
    let (code, out, err) = text(&ctl(&d, &["target", "search-api"]));
    assert_eq!(code, Some(0), "{err}");
    let groups: Vec<&str> = out.lines().collect();
    assert_eq!(groups.len(), 2, "{out}");
    assert!(
        groups[0].contains(":us-east-1:")
            && groups[0].ends_with("targetgroup/search-green/0f2a6b1c9d8e7f60"),
        "{out}"
    );
    assert!(
        groups[1].contains(":eu-west-1:")
            && groups[1].ends_with("targetgroup/search-green/2b3c4d5e6f7a8b9c"),
        "{out}"
    );
    let (code, out, err) = text(&watch(&d, "search-api"));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Succeeded"), "{out}");
    let (code, view, err) = text(&ctl(&d, &["status", "search-api"]));
    assert_eq!(code, Some(0), "{err}");
    let line = |name: &str| {
        view.lines()
            .find(|l| l.trim_start().starts_with(&format!("target {name} ")))
            .unwrap_or_else(|| panic!("no line for target {name}:\n{view}"))
            .to_string()
    };
    for (name, region) in [("main", "us-east-1"), ("eu", "eu-west-1")] {
        let l = line(name);
        assert!(
            l.contains("stable 0 / canary 100")
                && l.contains("holds the run's weights")
                && l.contains(&format!(":{region}:")),
            "{l}"
        );
    }
    eprintln!("{view}");
}
