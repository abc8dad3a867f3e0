//! The manual commands waiting for a rollout, and its event log.

use super::*;

impl Store {
    /// Queues a manual command; returns its id.
    pub async fn enqueue_command(
        &self,
        name: &str,
        kind: CommandKind,
        actor: &str,
        reason: Option<&str>,
        now: Time,
    ) -> Result<u64> {
        self.statements.write(1);
        let kind = serde_json::to_string(&kind).map_err(|e| corrupt("command", name, e))?;
        let row = sqlx::query(
            "INSERT INTO commands (rollout, kind, actor, reason, at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(name)
        .bind(kind)
        .bind(actor)
        .bind(reason.map(str::to_string))
        .bind(now.millis())
        .fetch_one(&self.pool)
        .await?;
        let id: i64 = row.try_get(0)?;
        Ok(u64::try_from(id).unwrap_or(0))
    }

    /// The commands queued for a rollout, oldest first; at most as many as
    /// one decision applies (`rollout_core::decide::MAX_COMMANDS_PER_DECISION`),
    /// the rest are read by the next reconcile.
    pub async fn commands(&self, name: &str) -> Result<Vec<Command>> {
        self.statements.read(1);
        let rows = sqlx::query(
            "SELECT id, kind, actor, reason, at FROM commands WHERE rollout = $1 ORDER BY id LIMIT $2",
        )
        .bind(name)
        .bind(rollout_core::decide::MAX_COMMANDS_PER_DECISION as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(1)?;
                Ok(Command {
                    id: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                    kind: serde_json::from_str(&kind).map_err(|e| corrupt("command", name, e))?,
                    actor: r.try_get(2)?,
                    reason: r.try_get(3)?,
                    at: Time::from_millis(r.try_get(4)?),
                })
            })
            .collect()
    }

    /// A rollout's events, oldest first: those of the rollout that now has
    /// this name (a deleted rollout's events stay in the table under its
    /// own identity).
    pub async fn events(&self, name: &str) -> Result<Vec<Event>> {
        self.statements.read(1);
        let rows = sqlx::query(
            "SELECT at, run, revision, kind, message, actor, weight_before, weight_after
             FROM events WHERE rollout = $1
               AND rollout_uid = (SELECT uid FROM rollouts WHERE name = $1) ORDER BY id",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| event_at(r, 0, name)).collect()
    }
}

/// The event in columns `first..first + 8` of `r` (at, run, revision,
/// kind, message, actor, weight_before, weight_after); `name` names the
/// rollout in an error.
pub(super) fn event_at(r: &AnyRow, first: usize, name: &str) -> Result<Event> {
    let kind: String = r.try_get(first + 3)?;
    let to_u8 = |v: i64| u8::try_from(v).unwrap_or(u8::MAX);
    Ok(Event {
        at: Time::from_millis(r.try_get(first)?),
        run: u32::try_from(r.try_get::<i64, _>(first + 1)?).unwrap_or(u32::MAX),
        revision: r.try_get(first + 2)?,
        kind: serde_json::from_value(serde_json::Value::String(kind))
            .map_err(|e| corrupt("event", name, e))?,
        message: r.try_get(first + 4)?,
        actor: r.try_get(first + 5)?,
        weight_before: to_u8(r.try_get(first + 6)?),
        weight_after: to_u8(r.try_get(first + 7)?),
    })
}
