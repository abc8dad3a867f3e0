//! The real `rolloutd` binary against PostgreSQL (state) and a simulated
//! ALB and CloudWatch kept in a second PostgreSQL database (so it outlives
//! the processes the tests kill):
//! - killed with SIGKILL at many points of healthy runs and restarted, every
//!   run still ends `Succeeded` and no canary weight on the load balancer
//!   ever goes down;
//! - three replicas share 50 rollouts: every step's weight is written exactly
//!   once, and when the replica holding rollouts is killed, another takes
//!   them over within the lease time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rollout_core::Phase;
use rollout_sim::Rng;
use rollout_store::testing::fresh_postgres_database;
use rollout_store::Store;
use sqlx::any::AnyPoolOptions;
use sqlx::Row;

/// `count` rollouts of the same quick strategy, each on its own listener.
fn specs(count: usize) -> String {
    let mut out = String::from(
        "apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: quick}
spec:
  alb: {period: 1s, delay: 1s, errorRate: {maxIncrease: 50%}, latency: {maxIncrease: 20%}}
",
    );
    for i in 0..count {
        out.push_str(&format!(
            "---
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {{name: svc-{i}}}
spec:
  revision: \"r1\"
  trafficRouting:
    alb:
      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/{i:016x}
  stable: {{targetGroupArn: \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue-{i}/73e2d6bc24d8a067\"}}
  canary: {{targetGroupArn: \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green-{i}/0f2a6b1c9d8e7f60\"}}
  progressDeadline: 5m
  strategy:
    canary:
      steps: [{{setWeight: 10}}, {{pause: {{duration: 2s}}}}, {{setWeight: 30}}, {{pause: {{duration: 2s}}}}, {{setWeight: 60}}, {{pause: {{duration: 2s}}}}, {{setWeight: 100}}]
  analysis: {{interval: 2s, templates: [quick]}}
"
        ));
    }
    out
}

struct Setup {
    dir: PathBuf,
    state: String,
    world: String,
}

async fn setup(name: &str, rollouts: usize) -> Setup {
    let dir = std::env::temp_dir().join(format!("rolloutd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("specs")).expect("dir");
    std::fs::write(dir.join("specs/rollouts.yaml"), specs(rollouts)).expect("specs");
    Setup {
        dir,
        state: fresh_postgres_database("rolloutd_state").await,
        world: fresh_postgres_database("rolloutd_world").await,
    }
}

fn spawn(s: &Setup, replica: &str, ttl: &str) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.dir.join(format!("{replica}.log")))
        .expect("log");
    Command::new(env!("CARGO_BIN_EXE_rolloutd"))
        .arg("serve")
        .args(["--database-url", &s.state])
        .args(["--simulate-world", &s.world])
        .arg("--specs-dir")
        .arg(s.dir.join("specs"))
        .args(["--listen", "127.0.0.1:0"])
        .args([
            "--reconcile-interval",
            "500ms",
            "--lease-ttl",
            ttl,
            "--replica",
            replica,
        ])
        .env("ROLLOUTD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn rolloutd")
}

fn kill9(child: &mut Child) {
    let _ = child.kill(); // SIGKILL on Unix
    let _ = child.wait();
}

async fn phases(state: &Store) -> BTreeMap<String, Option<Phase>> {
    state
        .rollouts()
        .await
        .map(|all| {
            all.into_iter()
                .map(|r| {
                    (
                        r.rollout.metadata.name.to_string(),
                        r.status.map(|s| s.phase),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every weight write on the simulated load balancer: route -> canary weights in order.
async fn writes(world: &str) -> BTreeMap<String, Vec<i64>> {
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(world)
        .await
        .expect("world");
    let rows = sqlx::query("SELECT route, canary FROM sim_writes ORDER BY at")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in rows {
        let route: String = r.try_get(0).expect("route");
        out.entry(route)
            .or_default()
            .push(r.try_get(1).expect("canary"));
    }
    pool.close().await;
    out
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_many_points_every_run_still_succeeds() {
    let s = setup("crash", 5).await;
    let state = {
        // The first daemon migrates; wait for it before reading.
        let mut first = spawn(&s, "crashy", "3s");
        tokio::time::sleep(Duration::from_millis(800)).await;
        kill9(&mut first);
        Store::connect(&s.state).await.expect("state")
    };
    let mut rng = Rng::new(42);
    let started = Instant::now();
    let mut kills = 0;
    loop {
        let mut d = spawn(&s, "crashy", "3s");
        // Die anywhere from almost at once to well into a step.
        let life = 150 + (rng.uniform() * 2_500.0) as u64;
        tokio::time::sleep(Duration::from_millis(life)).await;
        kill9(&mut d);
        kills += 1;
        let p = phases(&state).await;
        let done = p.len() == 5 && p.values().all(|ph| ph.is_some_and(Phase::is_terminal));
        if done && kills >= 12 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "runs did not finish after {kills} kills: {p:?}\n{}",
            tail(&s.dir.join("crashy.log"))
        );
    }
    let p = phases(&state).await;
    assert!(
        p.values().all(|ph| *ph == Some(Phase::Succeeded)),
        "{p:?}\n{}",
        tail(&s.dir.join("crashy.log"))
    );
    let w = writes(&s.world).await;
    assert_eq!(w.len(), 5);
    for (route, weights) in &w {
        assert!(
            weights.windows(2).all(|p| p[1] >= p[0]),
            "{route}: the canary weight went down: {weights:?}"
        );
        let mut steps = weights.clone();
        steps.dedup();
        assert_eq!(steps, vec![10, 30, 60, 100], "{route}: {weights:?}");
    }
    eprintln!("{kills} SIGKILLs; every run Succeeded; weights never went down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_fifty_rollouts_and_fail_over() {
    let s = setup("replicas", 50).await;
    let mut a = spawn(&s, "replica-a", "3s");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut b = spawn(&s, "replica-b", "3s");
    let mut c = spawn(&s, "replica-c", "3s");
    let state = Store::connect(&s.state).await.expect("state");
    sqlx::any::install_default_drivers();
    let leases = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&s.state)
        .await
        .expect("pool");
    let held_by = |replica: &'static str| {
        let leases = leases.clone();
        async move {
            // A process holds leases as `--replica` plus a random suffix.
            sqlx::query("SELECT rollout FROM leases WHERE holder LIKE $1 AND expires_at > $2")
                .bind(format!("{replica}~%"))
                .bind(now_ms())
                .fetch_all(&leases)
                .await
                .map(|r| r.len())
                .unwrap_or(0)
        }
    };
    // Let the run get going, then kill whoever holds the most.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = [
        held_by("replica-a").await,
        held_by("replica-b").await,
        held_by("replica-c").await,
    ];
    let victim = (0..3).max_by_key(|&i| counts[i]).unwrap_or(0);
    let names = ["replica-a", "replica-b", "replica-c"];
    assert!(counts[victim] > 0, "nobody holds a lease: {counts:?}");
    let killed_at = Instant::now();
    match victim {
        0 => kill9(&mut a),
        1 => kill9(&mut b),
        _ => kill9(&mut c),
    }
    // Its leases run out (3s) and the others take them over.
    let orphaned = |_: ()| async {
        sqlx::query("SELECT COUNT(*) FROM rollouts r WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.rollout = r.name AND l.holder NOT LIKE $1 AND l.expires_at > $2)")
            .bind(format!("{}~%", names[victim]))
            .bind(now_ms())
            .fetch_one(&leases)
            .await
            .and_then(|r| r.try_get::<i64, _>(0))
            .unwrap_or(-1)
    };
    let mut took_over = None;
    while killed_at.elapsed() < Duration::from_secs(20) {
        if orphaned(()).await == 0 {
            took_over = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took_over = took_over.expect("the survivors never took every rollout over");
    // Lease time 3s, plus one reconcile attempt (a third of it) to notice.
    assert!(
        took_over <= Duration::from_millis(3_000 + 1_000 + 500),
        "took {took_over:?}"
    );

    let started = Instant::now();
    loop {
        let p = phases(&state).await;
        if p.len() == 50 && p.values().all(|ph| ph.is_some_and(Phase::is_terminal)) {
            assert!(p.values().all(|ph| *ph == Some(Phase::Succeeded)), "{p:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "not finished: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for child in [&mut a, &mut b, &mut c] {
        kill9(child);
    }
    let w = writes(&s.world).await;
    assert_eq!(w.len(), 50);
    for (route, weights) in &w {
        assert_eq!(
            weights,
            &vec![10, 30, 60, 100],
            "{route}: every step's weight exactly once"
        );
    }
    eprintln!("failover of {} rollouts took {took_over:?}", counts[victim]);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
