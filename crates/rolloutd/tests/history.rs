//! Run history (issue 17): each ended run's report is kept in the store
//! and survives a restart, on SQLite and on PostgreSQL. The real binary,
//! a simulated load balancer, runs chained by ping-pong target groups.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{get, post, until, work_dir};

const SPEC: &str = "apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: quick}
spec:
  alb: {period: 1s, delay: 1s, errorRate: {maxIncrease: 50%}}
---
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {name: shop}
spec:
  revision: \"REVISION\"
  trafficRouting:
    alb:
      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2
  targetGroups:
    - arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue/73e2d6bc24d8a067
    - arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green/0f2a6b1c9d8e7f60
  strategy:
    canary:
      steps: [{setWeight: 50}, {pause: {duration: 3s}}, {setWeight: 100}]
  analysis: {interval: 1s, templates: [quick]}
";

fn runs(d: &support::Daemon) -> Vec<Value> {
    get(d, "/api/v1/rollouts/shop/runs").1["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn history_survives_a_restart(name: &str, database_url: Option<String>) {
    let dir = work_dir(name);
    let db = database_url.unwrap_or_else(|| format!("sqlite://{}", dir.join("state.db").display()));
    let start = || support::start_simulated_on(&dir, &db, &[], "info");
    let d = start();
    for revision in ["r1", "r2"] {
        let (code, body) = post(&d, "/api/v1/apply", &SPEC.replace("REVISION", revision));
        assert_eq!(code, 200, "{body}");
        until(&d, Duration::from_secs(90), "the run succeeds", || {
            let s = get(&d, "/api/v1/rollouts/shop").1["status"].clone();
            s["revision"] == revision && s["phase"] == "Succeeded"
        })
        .await;
    }
    let (code, body) = post(&d, "/api/v1/apply", &SPEC.replace("REVISION", "r3"));
    assert_eq!(code, 200, "{body}");
    until(&d, Duration::from_secs(30), "run 3 begins", || {
        runs(&d).first().is_some_and(|r| r["run"] == 3)
    })
    .await;
    let before = runs(&d);
    // SIGKILL, and a new process on the same database.
    drop(d);
    let d = start();
    let after = runs(&d);
    let numbers: Vec<i64> = after.iter().filter_map(|r| r["run"].as_i64()).collect();
    assert_eq!(numbers, [3, 2, 1], "{after:?}");
    for (run, revision) in [(1, "r1"), (2, "r2")] {
        let r = &after[3 - run];
        assert_eq!(r["revision"], revision);
        assert_eq!(r["outcome"], "Succeeded", "{r}");
        let check = &r["checks"]["quick"]["errorRate"];
        assert!(check["stable"].is_number(), "a report was kept: {r}");
        assert!(r["canaryRequests"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
        assert_eq!(r, &before[3 - run], "the same report before and after");
        let (code, one) = get(&d, &format!("/api/v1/rollouts/shop/runs/{run}"));
        assert_eq!((code, &one), (200, r));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_history_survives_a_restart_on_sqlite() {
    history_survives_a_restart("history-sqlite", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_history_survives_a_restart_on_postgres() {
    let url = rollout_store::testing::fresh_postgres_database("rolloutd_history").await;
    history_survives_a_restart("history-postgres", Some(url)).await;
}
