//! Leases: which replica reconciles which rollout, until when, with a
//! fencing token that grows with every change of holder.

use super::*;

impl Store {
    /// The SQL for "now" in milliseconds by the lease clock: the database's
    /// own, or the parameter `param` (the caller's time).
    pub(super) fn clock_sql(&self, param: &str) -> String {
        match (self.clock, self.backend) {
            (LeaseClock::Caller, _) => param.to_string(),
            (LeaseClock::Database, Backend::Postgres) => {
                "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)".into()
            }
            (LeaseClock::Database, Backend::Sqlite) => {
                "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)".into()
            }
        }
    }

    /// Takes (or keeps) the lease on `rollout` for `holder` for `ttl_ms`, if
    /// it is free, expired, or already `holder`'s. A new holder gets a
    /// larger token than any before it. Expiry is judged, and the new
    /// expiry computed, by the lease clock (the database's in production;
    /// `now` with [`LeaseClock::Caller`]).
    pub async fn acquire_lease(
        &self,
        rollout: &str,
        holder: &str,
        now: Time,
        ttl_ms: u64,
    ) -> Result<Option<Lease>> {
        self.statements.lease();
        let clock = self.clock_sql("$4");
        let row = sqlx::query(&format!(
            "INSERT INTO leases (rollout, holder, token, expires_at) VALUES ($1, $2, 1, {clock} + $3)
             ON CONFLICT (rollout) DO UPDATE SET
                 token = CASE WHEN leases.holder = excluded.holder THEN leases.token ELSE leases.token + 1 END,
                 holder = excluded.holder,
                 expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at <= {clock}
             RETURNING token, expires_at"
        ))
        .bind(rollout)
        .bind(holder)
        .bind(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
        .bind(now.millis())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Lease {
                rollout: rollout.to_string(),
                holder: holder.to_string(),
                token: r.try_get(0)?,
                expires_at: Time::from_millis(r.try_get(1)?),
            })
        })
        .transpose()
    }

    /// Whether `lease` is still held, with its token, for at least
    /// `margin_ms` more by the lease clock: asked right before every write
    /// to the load balancer, so a replica that was paused or partitioned
    /// past its lease writes nothing.
    pub async fn lease_valid(&self, lease: &Lease, now: Time, margin_ms: u64) -> Result<bool> {
        self.statements.read(1);
        let clock = self.clock_sql("$4");
        let row = sqlx::query(&format!(
            "SELECT 1 FROM leases WHERE rollout = $1 AND holder = $2 AND token = $3 AND expires_at > {clock} + $5"
        ))
        .bind(&lease.rollout)
        .bind(&lease.holder)
        .bind(lease.token)
        .bind(now.millis())
        .bind(i64::try_from(margin_ms).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Extends every unexpired lease of `holder` by `ttl_ms` from now (by the
    /// lease clock), in one statement; returns the rollouts it still holds.
    pub async fn renew_leases(&self, holder: &str, now: Time, ttl_ms: u64) -> Result<Vec<String>> {
        self.statements.lease();
        let clock = self.clock_sql("$3");
        let rows = sqlx::query(&format!(
            "UPDATE leases SET expires_at = {clock} + $1 WHERE holder = $2 AND expires_at > {clock} RETURNING rollout"
        ))
        .bind(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
        .bind(holder)
        .bind(now.millis())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// How many replicas hold unexpired leases now (by the lease clock).
    pub async fn live_holders(&self, now: Time) -> Result<usize> {
        self.statements.read(1);
        let clock = self.clock_sql("$1");
        let n: i64 = sqlx::query(&format!(
            "SELECT CAST(COUNT(DISTINCT holder) AS BIGINT) FROM leases WHERE expires_at > {clock}"
        ))
        .bind(now.millis())
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Hands back every lease of `holder` (at shutdown), so another replica
    /// takes over at once instead of after the lease time.
    pub async fn release_leases(&self, holder: &str) -> Result<u64> {
        self.statements.lease();
        Ok(
            sqlx::query("UPDATE leases SET expires_at = 0 WHERE holder = $1")
                .bind(holder)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
