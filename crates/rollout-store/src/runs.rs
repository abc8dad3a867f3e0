//! Run history: each ended run's record, written with the status that
//! ended it (see [`Store::write_status`]), the newest [`Store::run_history`]
//! kept per rollout.

use super::*;
use rollout_core::status::RunRecord;

/// How many ended runs a rollout keeps by default.
pub const DEFAULT_RUN_HISTORY: u32 = 100;

impl Store {
    /// The same store keeping the newest `n` ended runs per rollout (at
    /// least one).
    pub fn with_run_history(mut self, n: u32) -> Store {
        self.run_history = n.max(1);
        self
    }

    /// How many ended runs a rollout keeps.
    pub fn run_history(&self) -> u32 {
        self.run_history
    }

    /// Records `ended` in the transaction of the status write that ended
    /// them (a record already there, from a write repeated after a crash,
    /// is kept as it was), then drops the rollout's runs older than the
    /// newest [`Store::run_history`].
    pub(super) async fn record_runs(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        name: &str,
        uid: &str,
        ended: &[RunRecord],
    ) -> Result<()> {
        let Some(newest) = ended.iter().map(|r| r.run).max() else {
            return Ok(());
        };
        for r in ended {
            let json = serde_json::to_string(r).map_err(|e| corrupt("run", name, e))?;
            sqlx::query(
                "INSERT INTO runs (rollout, rollout_uid, run, ended_at, record) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (rollout_uid, run) DO NOTHING",
            )
            .bind(name)
            .bind(uid)
            .bind(i64::from(r.run))
            .bind(r.ended_at.millis())
            .bind(json)
            .execute(&mut **tx)
            .await?;
        }
        let oldest_kept = i64::from(newest) - i64::from(self.run_history) + 1;
        sqlx::query("DELETE FROM runs WHERE rollout_uid = $1 AND run < $2")
            .bind(uid)
            .bind(oldest_kept)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The ended runs kept for the rollout `name` (its current identity),
    /// newest first.
    pub async fn runs(&self, name: &str) -> Result<Vec<RunRecord>> {
        self.statements.read(1);
        let rows = sqlx::query(
            "SELECT u.run, u.record FROM runs u JOIN rollouts r ON r.name = u.rollout AND r.uid = u.rollout_uid
             WHERE u.rollout = $1 ORDER BY u.run DESC LIMIT $2",
        )
        .bind(name)
        .bind(i64::from(self.run_history))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let record: String = row.try_get(1)?;
                serde_json::from_str(&record).map_err(|e| corrupt("run", name, e))
            })
            .collect()
    }
}
