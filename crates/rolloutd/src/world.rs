//! A simulated ALB and CloudWatch kept in database tables: simulated, no
//! AWS calls. It implements the same ports as the AWS adapters, so the
//! daemon runs through its one path; it lives in a database so that it
//! outlives a killed daemon and is shared by several replicas, which is what
//! the crash and failover tests need, and so that a test can read every
//! weight ever written (`sim_writes`).
//!
//! Tables (created on first use):
//! - `sim_routes`: the forward action of each listener or rule (keyed by its
//!   ARN): raw weights of stable, canary and other target groups. A route
//!   not yet seen starts with stable carrying all traffic.
//! - `sim_writes`: every weight change, with its time.
//! - `sim_targets`: per target group, healthy/total targets and how it
//!   behaves (5xx rate, mean latency); absent means 3 of 3 healthy, 0.2%
//!   errors, 50 ms.
//!
//! Traffic is `rps` requests a second per route, split each second by the
//! weights the route held at that second; per-second counts are drawn from a
//! generator seeded by route and second, so every replica (and every restart)
//! sees the same numbers.

use rollout_analysis::IntervalMetrics;
use rollout_core::ports::{FaultInjector, MetricQuery, MetricSource, TrafficRouter};
use rollout_core::{
    AlarmState, ForwardWeights, ObservationError, Observed, TargetHealth, Time, Weights,
};
use rollout_sim::memory::{route_key, Target};
use rollout_sim::{synth, ArmBehaviour};
use rollout_spec::RolloutSpec;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

/// The simulated world.
#[derive(Debug, Clone)]
pub struct World {
    pool: AnyPool,
    rps: f64,
    clock: fn() -> Time,
}

const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS sim_routes (route TEXT PRIMARY KEY, stable BIGINT NOT NULL, canary BIGINT NOT NULL, other BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sim_writes (route TEXT NOT NULL, at BIGINT NOT NULL, stable BIGINT NOT NULL, canary BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sim_alarms (name TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sim_targets (tg TEXT PRIMARY KEY, healthy BIGINT NOT NULL, total BIGINT NOT NULL, error_rate DOUBLE PRECISION NOT NULL, latency DOUBLE PRECISION NOT NULL)",
];

fn transient(e: &sqlx::Error) -> ObservationError {
    ObservationError {
        fatal: false,
        message: format!("simulated load balancer: {e}"),
    }
}

impl World {
    /// Opens (and creates) the simulated world in the database at `url`.
    pub async fn open(url: &str, rps: f64, clock: fn() -> Time) -> Result<World, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let url = if url.starts_with("sqlite:") && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
        } else {
            url.to_string()
        };
        let max = if url.starts_with("sqlite:") { 1 } else { 4 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(&url)
            .await?;
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await?;
        }
        Ok(World { pool, rps, clock })
    }

    async fn weights(&self, route: &str) -> Result<ForwardWeights, sqlx::Error> {
        let row = sqlx::query("SELECT stable, canary, other FROM sim_routes WHERE route = $1")
            .bind(route)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(ForwardWeights {
                stable: u32::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                canary: u32::try_from(r.try_get::<i64, _>(1)?).unwrap_or(0),
                other: u32::try_from(r.try_get::<i64, _>(2)?).unwrap_or(0),
            }),
            None => {
                sqlx::query(
                    "INSERT INTO sim_routes (route, stable, canary, other) VALUES ($1, 1, 0, 0) ON CONFLICT (route) DO NOTHING",
                )
                .bind(route)
                .execute(&self.pool)
                .await?;
                Ok(ForwardWeights {
                    stable: 1,
                    canary: 0,
                    other: 0,
                })
            }
        }
    }

    async fn target(&self, tg: &str) -> Result<(u32, u32, f64, f64), sqlx::Error> {
        let row = sqlx::query(
            "SELECT healthy, total, error_rate, latency FROM sim_targets WHERE tg = $1",
        )
        .bind(tg)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => (
                u32::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                u32::try_from(r.try_get::<i64, _>(1)?).unwrap_or(0),
                r.try_get(2)?,
                r.try_get(3)?,
            ),
            None => {
                let t = Target::default();
                (
                    t.healthy,
                    t.total,
                    t.behaviour.error_rate,
                    t.behaviour.latency,
                )
            }
        })
    }

    /// The canary share (percent) of a route at each write, oldest first,
    /// for `spec`'s canary.
    async fn history(
        &self,
        route: &str,
        spec: &RolloutSpec,
    ) -> Result<Vec<(i64, f64)>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT at, stable, canary FROM sim_writes WHERE route = $1 ORDER BY at")
                .bind(route)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let (s, c): (i64, i64) = (r.try_get(1)?, r.try_get(2)?);
                let (s, c) = if swapped(spec) { (c, s) } else { (s, c) };
                let share = if s + c > 0 {
                    c as f64 * 100.0 / (s + c) as f64
                } else {
                    0.0
                };
                Ok((r.try_get(0)?, share))
            })
            .collect()
    }

    async fn window(&self, q: &MetricQuery<'_>) -> Result<IntervalMetrics, sqlx::Error> {
        let route = route_key(q.spec);
        let history = self.history(&route, q.spec).await?;
        let (_, _, se, sl) = self.target(q.spec.stable.target_group_arn.as_str()).await?;
        let (_, _, ce, cl) = self.target(q.spec.canary.target_group_arn.as_str()).await?;
        let behaviour = |error_rate, latency| ArmBehaviour {
            error_rate,
            latency,
        };
        Ok(synth::window(
            &route,
            &history,
            self.rps,
            (behaviour(se, sl), behaviour(ce, cl)),
            q.window,
            (self.clock)(),
        ))
    }
}

/// Whether `spec`'s roles are the reverse of the columns: the table keeps a
/// route's weights as `stable`/`canary` columns in the order the document
/// names the target groups (for ping-pong `targetGroups`, the first and the
/// second), so a rollout whose roles swapped reads and writes them crosswise.
fn swapped(spec: &RolloutSpec) -> bool {
    spec.target_groups
        .as_ref()
        .is_some_and(|[a, _]| *a != spec.stable.target_group_arn)
}

/// The columns' weights as `spec`'s roles.
fn in_roles(w: ForwardWeights, spec: &RolloutSpec) -> ForwardWeights {
    if swapped(spec) {
        ForwardWeights {
            stable: w.canary,
            canary: w.stable,
            other: w.other,
        }
    } else {
        w
    }
}

/// The simulated world has no Fault Injection Service (chaos steps are
/// tested against moto's).
impl FaultInjector for World {}

impl TrafficRouter for World {
    async fn forward_weights(
        &self,
        spec: &RolloutSpec,
        _urgency: rollout_core::Urgency,
    ) -> Observed<ForwardWeights> {
        match self.weights(&route_key(spec)).await {
            Ok(w) => Observed::Ok(in_roles(w, spec)),
            Err(e) => Observed::Err(transient(&e)),
        }
    }

    async fn set_weights(
        &self,
        spec: &RolloutSpec,
        weights: Weights,
        seen: ForwardWeights,
        _urgency: rollout_core::Urgency,
    ) -> Result<(), ObservationError> {
        let route = route_key(spec);
        let now = (self.clock)();
        // As the ALB router: never over someone else's write, never
        // changing target groups the rollout does not name.
        let held = self.weights(&route).await.map_err(|e| transient(&e))?;
        in_roles(held, spec).may_write(&seen, &route)?;
        // Stored in the columns' order (see `swapped`).
        let (weights, seen) = if swapped(spec) {
            (
                Weights {
                    stable: weights.canary,
                    canary: weights.stable,
                    other: weights.other,
                },
                ForwardWeights {
                    stable: seen.canary,
                    canary: seen.stable,
                    other: seen.other,
                },
            )
        } else {
            (weights, seen)
        };
        let mut tx = self.pool.begin().await.map_err(|e| transient(&e))?;
        sqlx::query(
            "UPDATE sim_routes SET stable = $2, canary = $3
             WHERE route = $1 AND stable = $4 AND canary = $5 AND other = 0",
        )
        .bind(&route)
        .bind(i64::from(weights.stable))
        .bind(i64::from(weights.canary))
        .bind(i64::from(seen.stable))
        .bind(i64::from(seen.canary))
        .execute(&mut *tx)
        .await
        .map_err(|e| transient(&e))?;
        sqlx::query("INSERT INTO sim_writes (route, at, stable, canary) VALUES ($1, $2, $3, $4)")
            .bind(&route)
            .bind(now.millis())
            .bind(i64::from(weights.stable))
            .bind(i64::from(weights.canary))
            .execute(&mut *tx)
            .await
            .map_err(|e| transient(&e))?;
        tx.commit().await.map_err(|e| transient(&e))
    }

    async fn canary_health(&self, spec: &RolloutSpec) -> Observed<TargetHealth> {
        match self.target(spec.canary.target_group_arn.as_str()).await {
            Ok((healthy, total, _, _)) => Observed::Ok(TargetHealth { healthy, total }),
            Err(e) => Observed::Err(transient(&e)),
        }
    }
}

impl MetricSource for World {
    async fn intervals(
        &self,
        queries: &[MetricQuery<'_>],
    ) -> Vec<Result<IntervalMetrics, ObservationError>> {
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            out.push(self.window(q).await.map_err(|e| ObservationError {
                fatal: false,
                message: format!("simulated CloudWatch: {e}"),
            }));
        }
        out
    }

    async fn alarms(&self, _place: &str, names: &[String]) -> Observed<Vec<AlarmState>> {
        let mut out = Vec::new();
        for name in names {
            let row = sqlx::query("SELECT state, reason FROM sim_alarms WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await;
            match row {
                Ok(Some(r)) => out.push(AlarmState {
                    name: name.clone(),
                    state: r.try_get(0).unwrap_or_default(),
                    reason: r.try_get(1).unwrap_or_default(),
                }),
                Ok(None) => {}
                Err(e) => return Observed::Err(transient(&e)),
            }
        }
        Observed::Ok(out)
    }
}
