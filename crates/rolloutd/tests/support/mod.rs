//! What the tests that run the real `rolloutd` binary against moto share:
//! starting it, talking to its API, reading its log.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod browser;

use rollout_awskit::alb::env_for;
use serde_json::Value;

/// A running `rolloutd serve`, killed when dropped.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its stderr.
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free local port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts `rolloutd serve` on SQLite in `dir` with `dir/specs` as its specs
/// directory, reaching AWS at `endpoint`, reconciling every second.
pub fn start_daemon(dir: &Path, endpoint: &str) -> Daemon {
    let db = format!("sqlite://{}", dir.join("state.db").display());
    start_with(
        dir,
        endpoint,
        &db,
        &["--specs-dir", &dir.join("specs").display().to_string()],
        "rolloutd.log",
    )
}

/// Starts `rolloutd serve` on `database_url` with `args` besides the
/// listen address and a 1 s reconcile interval; its log goes to
/// `dir/log_name`.
pub fn start_with(
    dir: &Path,
    endpoint: &str,
    database_url: &str,
    args: &[&str],
    log_name: &str,
) -> Daemon {
    let port = free_port();
    let log = dir.join(log_name);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rolloutd"));
    cmd.arg("serve")
        .arg("--database-url")
        .arg(database_url)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--reconcile-interval", "1s"])
        .args(args)
        .env("ROLLOUTD_LOG", "info,aws=warn,aws_smithy_runtime=warn")
        .env_remove("ROLLOUTD_SIMULATE_WORLD")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    for (k, v) in env_for(endpoint) {
        cmd.env(k, v);
    }
    launch(cmd, port, log)
}

/// Starts `rolloutd serve` on SQLite in `dir` against a simulated load
/// balancer (no AWS), listening on a free loopback port, with `args`.
pub fn start_simulated(dir: &Path, args: &[&str]) -> Daemon {
    start_simulated_logging(dir, args, "info")
}

/// [`start_simulated`] with the log filter `log` (`ROLLOUTD_LOG`).
pub fn start_simulated_logging(dir: &Path, args: &[&str], log_filter: &str) -> Daemon {
    let db = format!("sqlite://{}", dir.join("state.db").display());
    start_simulated_on(dir, &db, args, log_filter)
}

/// [`start_simulated_logging`] keeping its state in `database_url`.
pub fn start_simulated_on(
    dir: &Path,
    database_url: &str,
    args: &[&str],
    log_filter: &str,
) -> Daemon {
    start_simulated_at(dir, database_url, free_port(), args, log_filter)
}

/// [`start_simulated_on`] listening on `port` (a restart on the same
/// address).
pub fn start_simulated_at(
    dir: &Path,
    database_url: &str,
    port: u16,
    args: &[&str],
    log_filter: &str,
) -> Daemon {
    let log = dir.join("rolloutd.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rolloutd"));
    cmd.arg("serve")
        .arg("--database-url")
        .arg(database_url)
        .arg("--simulate-world")
        .arg(format!("sqlite://{}", dir.join("world.db").display()))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--reconcile-interval", "1s"])
        .args(args)
        .env("ROLLOUTD_LOG", log_filter)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    launch(cmd, port, log)
}

/// Spawns `cmd` and waits until it answers `/readyz` on `port`.
fn launch(mut cmd: Command, port: u16, log: PathBuf) -> Daemon {
    let child = cmd.spawn().expect("rolloutd");
    let d = Daemon {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
    };
    let t = Instant::now();
    while get(&d, "/readyz").0 != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "rolloutd did not become ready: {}",
            std::fs::read_to_string(&d.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    match r {
        Ok(mut r) => {
            let code = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (code, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// `GET path`: the status code (0 when unreachable) and the JSON body.
pub fn get(d: &Daemon, path: &str) -> (u16, Value) {
    answer(agent().get(format!("{}{path}", d.base)).call())
}

/// `POST path` with `body`.
pub fn post(d: &Daemon, path: &str, body: &str) -> (u16, Value) {
    answer(agent().post(format!("{}{path}", d.base)).send(body))
}

/// `POST path` with `body` and `Authorization: Bearer token`.
pub fn post_with_token(d: &Daemon, path: &str, body: &str, token: &str) -> (u16, Value) {
    answer(
        agent()
            .post(format!("{}{path}", d.base))
            .header("Authorization", format!("Bearer {token}"))
            .send(body),
    )
}

/// `DELETE path`.
pub fn delete(d: &Daemon, path: &str) -> (u16, Value) {
    answer(agent().delete(format!("{}{path}", d.base)).call())
}

/// `/metrics` as text.
pub fn metrics_text(d: &Daemon) -> String {
    agent()
        .get(format!("{}/metrics", d.base))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default()
}

/// The last 40 lines of a log.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A fresh work directory with an empty `specs/`.
pub fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rolloutd-aws-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("specs")).expect("dir");
    dir
}

/// A rollout's phase ("" when unknown).
pub fn phase(d: &Daemon, name: &str) -> String {
    get(d, &format!("/api/v1/rollouts/{name}")).1["status"]["phase"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Polls `what` every 200 ms until it holds; panics with `why` and the
/// daemon's log after `limit`.
pub async fn until(d: &Daemon, limit: Duration, why: &str, mut what: impl FnMut() -> bool) {
    let t = Instant::now();
    while !what() {
        assert!(
            t.elapsed() < limit,
            "{why}: not within {limit:?}\n{}",
            tail(&d.log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A token file `dir/token` holding `token`; its path.
pub fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).expect("token file");
    path
}

/// Lets this test process open `n` files (it opens thousands of sockets).
pub fn allow_open_files(n: u32) {
    let _ = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={n}:{n}"),
        ])
        .status();
}

/// A Rollout document on a listener (or one of its rules) with the given
/// target groups and canary `steps` (a YAML flow list), plus `extra` lines
/// under `spec` (e.g. an `analysis:` line), each already indented.
pub fn rollout_doc(
    name: &str,
    routing: &str,
    stable: &str,
    canary: &str,
    steps: &str,
    extra: &str,
) -> String {
    format!(
        "---
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  revision: \"r1\"
  trafficRouting: {{alb: {{{routing}}}}}
  stable: {{targetGroupArn: {stable}}}
  canary: {{targetGroupArn: {canary}}}
  strategy: {{canary: {{steps: {steps}}}}}
{extra}"
    )
}

/// Holds at 5% until promoted.
pub const HOLD_AT_5: &str = "[{setWeight: 5}, {pause: {}}, {setWeight: 100}]";

/// A template judging the 5xx rate on 1 s periods (moto serves no
/// percentiles).
pub const ERRORS_TEMPLATE: &str = "apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: errors}
spec:
  alb:
    period: 1s
    delay: 2s
    errorRate: {maxIncrease: 50%}
";

/// Targets answering 1% 5xx in 50 ms.
pub const GOOD: rollout_awskit::alb::Behaviour = rollout_awskit::alb::Behaviour {
    error_rate: 0.01,
    latency: 0.05,
    declines: 0.0,
};

/// Targets answering 10% 5xx.
pub const BAD: rollout_awskit::alb::Behaviour = rollout_awskit::alb::Behaviour {
    error_rate: 0.10,
    ..GOOD
};

/// One service's traffic at 2,000 requests a second through its
/// listener's default action, stable answering as [`GOOD`].
pub fn traffic(
    svc: &rollout_awskit::alb::Service,
    canary: rollout_awskit::alb::Behaviour,
) -> rollout_awskit::alb::Traffic {
    rollout_awskit::alb::Traffic {
        service: svc.clone(),
        via_rule: false,
        rps: 2_000.0,
        stable: GOOD,
        canary,
    }
}

/// Follows the server-sent events of `base` + `path` (with `token`) in a
/// thread: each `(event, data)` as it arrives, until the stream ends.
pub fn watch(
    base: &str,
    path: &str,
    token: Option<&str>,
) -> std::sync::mpsc::Receiver<(String, Value)> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let url = format!("{base}{path}");
    let token = token.map(str::to_string);
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.get(&url);
        if let Some(t) = &token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let Ok(r) = req.call() else { return };
        if r.status() != 200 {
            let _ = tx.send(("status".into(), Value::from(r.status().as_u16())));
            return;
        }
        let reader = std::io::BufReader::new(r.into_body().into_reader());
        let (mut kind, mut data) = (String::new(), String::new());
        for line in reader.lines().map_while(Result::ok) {
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                let v = serde_json::from_str(&data).unwrap_or(Value::Null);
                if tx.send((std::mem::take(&mut kind), v)).is_err() {
                    return;
                }
                data.clear();
            }
        }
    });
    rx
}

/// The next event of `rx` for which `what` holds, within `limit`; panics
/// with `why` and what was seen otherwise.
pub fn next_event(
    rx: &std::sync::mpsc::Receiver<(String, Value)>,
    limit: Duration,
    why: &str,
    what: impl Fn(&str, &Value) -> bool,
) -> Value {
    let t = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = limit.saturating_sub(t.elapsed());
        match rx.recv_timeout(left) {
            Ok((kind, data)) if what(&kind, &data) => return data,
            Ok((kind, data)) => seen.push(format!(
                "{kind}: {}",
                data.to_string().chars().take(160).collect::<String>()
            )),
            Err(_) => panic!("{why}: not within {limit:?}; seen:\n{}", seen.join("\n")),
        }
    }
}

/// A running `rolloutd demo`, killed when dropped; what it printed so far
/// in `out`.
pub struct Demo {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its standard output, as printed so far.
    pub out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// What it printed so far.
    pub fn printed(&self) -> String {
        self.out.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

/// Starts `rolloutd demo` as a new user would (no config, no simulated
/// world flag) on a free port; its state in `database_url`, or the demo's
/// own fresh file when `None`.
pub fn start_demo(database_url: Option<&str>) -> Demo {
    use std::io::BufRead;
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rolloutd"));
    cmd.arg("demo")
        .env("ROLLOUTD_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("ROLLOUTD_CONFIG")
        .env_remove("ROLLOUTD_SIMULATE_WORLD")
        .env("ROLLOUTD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match database_url {
        Some(url) => cmd.env("ROLLOUTD_DATABASE_URL", url),
        None => cmd.env_remove("ROLLOUTD_DATABASE_URL"),
    };
    let mut child = cmd.spawn().expect("rolloutd demo");
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stdout = child.stdout.take().expect("stdout");
    let sink = std::sync::Arc::clone(&out);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(mut o) = sink.lock() {
                o.push_str(&line);
                o.push('\n');
            }
        }
    });
    Demo {
        child,
        base: format!("http://127.0.0.1:{port}"),
        out,
    }
}

/// Sends SIGTERM and waits up to `limit` for the process to exit: its
/// status and how long it took.
pub fn sigterm(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let t = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    while t.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return (status, t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the process did not exit within {limit:?} of SIGTERM");
}
