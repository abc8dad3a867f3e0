//! PostgreSQL stops in the middle of runs and comes back: while it is down
//! no weight changes on the load balancer (the intent cannot be recorded),
//! status reads answer with the last state read, marked stale, and every run
//! completes after it returns, without restarting the daemon.
//!
//! The test owns a throwaway cluster (`initdb` and `pg_ctl` from
//! `/usr/lib/postgresql/*/bin`, as the `postgres` user when run as root) for
//! rolloutd's state; the simulated load balancer lives on the regular server
//! so the test can watch it throughout.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rollout_core::Phase;
use rollout_store::testing::fresh_postgres_database;
use rollout_store::Store;
use sqlx::any::AnyPoolOptions;
use sqlx::Row;

fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("pg_ctl under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as `postgres` when we are root (initdb refuses root).
fn pg(tool: &str, args: &[&str]) {
    assert!(pg_ok(tool, args), "{tool} {args:?} failed");
}

fn pg_ok(tool: &str, args: &[&str]) -> bool {
    let bin = pg_bin().join(tool);
    let status = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&bin)
            .args(args)
            .stdout(Stdio::null())
            .status()
    } else {
        Command::new(&bin).args(args).stdout(Stdio::null()).status()
    }
    .unwrap_or_else(|e| panic!("{tool}: {e}"));
    status.success()
}

/// A port for the throwaway cluster that no outgoing connection can hold:
/// above the kernel's ephemeral range (a port inside it, as this test once
/// derived from its pid, can be the local end of another test's client
/// socket, and PostgreSQL then cannot bind it), and free right now.
fn cluster_port() -> u16 {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let high: u32 = range
        .split_whitespace()
        .nth(1)
        .and_then(|h| h.parse().ok())
        .unwrap_or(60_999);
    let first = (high + 1).max(1_024);
    let span = 65_535u32.saturating_sub(first).max(1);
    let start = std::process::id() % span;
    (0..span)
        .map(|i| (first + (start + i) % span) as u16)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port above the ephemeral range")
}

struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn create(dir: &Path, port: u16) -> Cluster {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the cluster directory to postgres");
        }
        let data = dir.join("data");
        pg(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
            ],
        );
        let c = Cluster {
            dir: dir.to_path_buf(),
            port,
        };
        c.start();
        c
    }

    fn start(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!("-h 127.0.0.1 -p {} -k {}", self.port, self.dir.display());
        let args = [
            "-D",
            &data.to_string_lossy(),
            "-l",
            &log.to_string_lossy(),
            "-w",
            "-o",
            &opts,
            "start",
        ];
        if !pg_ok("pg_ctl", &args) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("pg_ctl {args:?} failed; the server's log:\n{text}");
        }
    }

    fn stop(&self) {
        let data = self.dir.join("data");
        pg(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let bin = pg_bin().join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        let _ = cmd
            .args(["-D", &data.to_string_lossy(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const SPEC: &str = "apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: quick}
spec:
  alb: {period: 1s, delay: 1s, errorRate: {maxIncrease: 50%}}
---
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {name: outage}
spec:
  revision: \"r1\"
  trafficRouting:
    alb:
      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2
  stable: {targetGroupArn: \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue/73e2d6bc24d8a067\"}
  canary: {targetGroupArn: \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green/0f2a6b1c9d8e7f60\"}
  strategy:
    canary:
      steps: [{setWeight: 10}, {pause: {duration: 2s}}, {setWeight: 30}, {pause: {duration: 2s}}, {setWeight: 60}, {pause: {duration: 2s}}, {setWeight: 100}]
  analysis: {interval: 2s, templates: [quick]}
";

async fn write_count(world: &sqlx::AnyPool) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM sim_writes")
        .fetch_one(world)
        .await
        .and_then(|r| r.try_get::<i64, _>(0))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_weight_changes_while_postgres_is_down_and_runs_finish_after() {
    let base = std::env::temp_dir().join(format!("rolloutd-outage-{}", std::process::id()));
    let cluster = Cluster::create(&base.join("pg"), cluster_port());
    std::fs::create_dir_all(base.join("specs")).expect("dir");
    std::fs::write(base.join("specs/outage.yaml"), SPEC).expect("spec");
    let world_url = fresh_postgres_database("rolloutd_world").await;
    let log = std::fs::File::create(base.join("rolloutd.log")).expect("log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_rolloutd"))
        .arg("serve")
        .args(["--database-url", &cluster.url()])
        .args(["--simulate-world", &world_url])
        .arg("--specs-dir")
        .arg(base.join("specs"))
        .args(["--listen", "127.0.0.1:0"])
        .args([
            "--reconcile-interval",
            "500ms",
            "--lease-ttl",
            "3s",
            "--replica",
            "solo",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("rolloutd");

    sqlx::any::install_default_drivers();
    let waiting = Instant::now();
    let world = loop {
        // A daemon that could not start fails the test, never hangs it.
        let log = || std::fs::read_to_string(base.join("rolloutd.log")).unwrap_or_default();
        if let Ok(Some(exit)) = daemon.try_wait() {
            panic!(
                "rolloutd exited ({exit}) before making its world:\n{}",
                log()
            );
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "rolloutd made no world in 60 s:\n{}",
            log()
        );
        if let Ok(p) = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&world_url)
            .await
        {
            if sqlx::query("SELECT 1 FROM sim_writes LIMIT 1")
                .fetch_optional(&p)
                .await
                .is_ok()
            {
                break p;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Wait until the run is under way.
    let started = Instant::now();
    while write_count(&world).await < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the run never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Read the status through the API while the database is up...
    let listen = {
        let t = Instant::now();
        loop {
            let log = std::fs::read_to_string(base.join("rolloutd.log")).unwrap_or_default();
            if let Some(addr) = log
                .split("listen=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
            {
                break addr.to_string();
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no listen address in the log"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let listen_ready = listen.clone();
    let read = move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(format!("http://{listen}/api/v1/rollouts/outage"))
            .call()
            .expect("GET");
        let code = r.status().as_u16();
        let warning = r
            .headers()
            .get("warning")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
        (code, warning, body)
    };
    let fresh = tokio::task::spawn_blocking(read.clone())
        .await
        .expect("read");
    assert_eq!(fresh.0, 200);
    assert!(fresh.2.get("stale").is_none());
    // The dashboard's stream, open across the outage.
    let stream = support::watch(&format!("http://{listen_ready}"), "/api/v1/watch", None);
    support::next_event(&stream, Duration::from_secs(10), "a snapshot", |k, _| {
        k == "snapshot"
    });
    cluster.stop();
    let said = support::next_event(
        &stream,
        Duration::from_secs(10),
        "the stream says its data is stale",
        |k, _| k == "stale",
    );
    let why = said["staleReason"].as_str().unwrap_or_default().to_string();
    assert!(
        why.contains("database is unavailable") && !why.contains("127.0.0.1"),
        "{said}"
    );
    let before = write_count(&world).await;
    // ...and while it is down: the last state read, marked stale.
    let stale = tokio::task::spawn_blocking(read).await.expect("read");
    assert_eq!(stale.0, 200, "{}", stale.2);
    assert_eq!(stale.2["stale"], true);
    assert!(stale.2["staleReason"]
        .as_str()
        .is_some_and(|r| r.contains("database is unavailable")));
    assert!(stale.1.is_some_and(|w| w.contains("data may be stale")));
    assert_eq!(stale.2["metadata"]["name"], "outage");
    // Nothing of what the database said reaches the client (no host,
    // port or user: a stable message), and /readyz says what is wrong.
    let reason = stale.2["staleReason"].as_str().unwrap_or_default();
    assert!(
        !reason.contains("127.0.0.1") && !reason.contains("postgres"),
        "{reason}"
    );
    let ready = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(format!("http://{listen_ready}/readyz"))
            .call()
            .expect("GET /readyz");
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    })
    .await
    .expect("readyz");
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert!(ready.1.contains("cannot be reached"), "{}", ready.1);
    // Down for 8 s: longer than every pause and than the lease.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = write_count(&world).await;
    assert_eq!(
        during, before,
        "weights changed while the state database was down"
    );
    assert!(
        daemon.try_wait().expect("wait").is_none(),
        "the daemon must ride out the outage"
    );
    cluster.start();
    support::next_event(
        &stream,
        Duration::from_secs(30),
        "the stream says it is fresh again",
        |k, _| k == "fresh",
    );
    let again = support::next_event(
        &stream,
        Duration::from_secs(10),
        "a new snapshot",
        |k, _| k == "snapshot",
    );
    assert_eq!(again["items"][0]["metadata"]["name"], "outage", "{again}");

    let state = Store::connect(&cluster.url()).await.expect("state");
    let back = Instant::now();
    loop {
        let phase = state
            .rollout("outage")
            .await
            .ok()
            .flatten()
            .and_then(|r| r.status)
            .map(|s| s.phase);
        if phase == Some(Phase::Succeeded) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "not finished after the database returned: {phase:?}\n{}",
            std::fs::read_to_string(base.join("rolloutd.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let weights: Vec<i64> = sqlx::query("SELECT canary FROM sim_writes ORDER BY at")
        .fetch_all(&world)
        .await
        .expect("writes")
        .iter()
        .map(|r| r.try_get(0).expect("canary"))
        .collect();
    assert_eq!(weights, vec![10, 30, 60, 100]);
    eprintln!("down 8 s with {before} weight write(s) done; none while down; finished {:?} after it returned", back.elapsed());
}
