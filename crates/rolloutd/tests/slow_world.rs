//! One rollout whose load balancer never answers must not hold up the others:
//! a reconcile waiting for AWS gives its slot back. The daemon runs with one
//! slot, so before that rule one hanging call stopped every rollout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollout_core::ports::{FaultInjector, TrafficRouter};
use rollout_core::{ForwardWeights, ObservationError, Observed, Phase, TargetHealth, Weights};
use rollout_sim::memory::MemoryWorld;
use rollout_spec::RolloutSpec;
use rollout_store::Store;
use rolloutd::config::Config;
use rolloutd::daemon::{now, Daemon};

/// The in-memory load balancer, except that reading the listener of
/// `hanging` takes ten minutes (or, with `writes`, writing it: a write
/// queued behind the API budget).
struct OneHangs {
    world: Arc<MemoryWorld>,
    hanging: String,
    writes: bool,
}

impl OneHangs {
    async fn maybe_hang(&self, spec: &RolloutSpec) {
        if !self.writes && spec.traffic_routing.alb.listener_arn.as_str() == self.hanging {
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
    }
}

impl FaultInjector for OneHangs {}

impl TrafficRouter for OneHangs {
    async fn forward_weights(
        &self,
        spec: &RolloutSpec,
        urgency: rollout_core::Urgency,
    ) -> Observed<ForwardWeights> {
        self.maybe_hang(spec).await;
        self.world.forward_weights(spec, urgency).await
    }

    async fn set_weights(
        &self,
        spec: &RolloutSpec,
        weights: Weights,
        seen: ForwardWeights,
        urgency: rollout_core::Urgency,
    ) -> Result<(), ObservationError> {
        if self.writes && spec.traffic_routing.alb.listener_arn.as_str() == self.hanging {
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        self.world.set_weights(spec, weights, seen, urgency).await
    }

    async fn canary_health(&self, spec: &RolloutSpec) -> Observed<TargetHealth> {
        self.maybe_hang(spec).await;
        self.world.canary_health(spec).await
    }
}

fn listener(i: u32) -> String {
    format!("arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/{i:016x}")
}

fn rollout(name: &str, i: u32) -> String {
    format!(
        "---
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  revision: \"r1\"
  trafficRouting:
    alb: {{listenerArn: \"{listener}\"}}
  stable: {{targetGroupArn: \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue-{i}/73e2d6bc24d8a067\"}}
  canary: {{targetGroupArn: \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green-{i}/0f2a6b1c9d8e7f60\"}}
  strategy:
    canary:
      steps: [{{setWeight: 50}}, {{pause: {{duration: 1s}}}}, {{setWeight: 100}}]
",
        listener = listener(i)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_load_balancer_call_does_not_hold_up_other_rollouts() {
    one_hangs(false).await;
}

/// A write that waits (for the API budget, or a slow AWS) holds no slot
/// either: before, the reconciles of runs waiting to start held every slot
/// and due steps of other rollouts waited for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_weight_write_does_not_hold_up_other_rollouts() {
    one_hangs(true).await;
}

async fn one_hangs(writes: bool) {
    let dir = std::env::temp_dir().join(format!(
        "rolloutd-slow-world-{}-{writes}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("sqlite://{}", dir.join("state.db").display());
    let store = Store::connect(&url).await.expect("store");
    store.migrate().await.expect("migrate");
    let docs = [rollout("stuck", 1), rollout("free", 2)].concat();
    let set = rollout_spec::load([("specs.yaml", docs.as_str())], &[]).expect("valid specs");
    store
        .apply(&set, "test", now(), false)
        .await
        .expect("apply");

    let world = Arc::new(MemoryWorld::new(1000.0, now));
    let router = OneHangs {
        world: Arc::clone(&world),
        hanging: listener(1),
        writes,
    };
    let config = Config {
        reconcile_interval: rollout_spec::Duration::from_secs(1),
        lease_ttl: rollout_spec::Duration::from_secs(15),
        replica: "test".into(),
        concurrency: 1,
        ..Config::for_test(&url)
    };
    let daemon = Daemon::new(
        store.clone(),
        router,
        world,
        config,
        Arc::new(rolloutd::metrics::Metrics::new()),
    );
    // Never stopped: the hanging reconcile would make a graceful stop wait
    // for it; the runtime ends with the test.
    tokio::spawn(daemon.run(std::future::pending::<()>()));

    let started = Instant::now();
    let phase = |name: &'static str| {
        let store = store.clone();
        async move {
            store
                .rollout(name)
                .await
                .expect("read")
                .and_then(|r| r.status)
                .map(|s| s.phase)
        }
    };
    loop {
        if phase("free").await == Some(Phase::Succeeded) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "`free` did not finish while `stuck` waited for its load balancer: {:?}",
            phase("free").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `stuck` never saw its load balancer, so it never moved traffic.
    assert_ne!(phase("stuck").await, Some(Phase::Succeeded));
    let _ = std::fs::remove_dir_all(&dir);
}
