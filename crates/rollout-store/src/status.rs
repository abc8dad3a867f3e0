//! Status writes: optimistic (the version read) and fenced (the lease
//! held, with its token, checked in the same statement), with the events
//! and handled commands of the decision in one transaction.

use super::*;

/// The fenced, versioned status write: an insert when none was read
/// (`expected` 0; only for the rollout identity read), an update of the
/// version read otherwise; `suffix` ends it (` RETURNING version` on
/// PostgreSQL). The fence: the writer still holds the rollout's lease with
/// its token, unexpired by `clock` (the database's, in production).
/// Parameters: `$1` status, `$2` now, `$3` rollout, `$4` expected version,
/// `$5` holder, `$6` token, `$7` the rollout's identity.
pub(super) fn status_statement(expected: i64, clock: &str, suffix: &str) -> String {
    let fenced = format!(
        "EXISTS (SELECT 1 FROM leases WHERE rollout = $3 AND holder = $5 AND token = $6 AND expires_at > {clock})"
    );
    if expected == 0 {
        format!(
            "INSERT INTO rollout_status (name, status, version, updated_at)
             SELECT $3, $1, 1, $2 WHERE $4 = 0 AND {fenced}
               AND EXISTS (SELECT 1 FROM rollouts WHERE name = $3 AND uid = $7)
             ON CONFLICT (name) DO NOTHING{suffix}"
        )
    } else {
        format!(
            "UPDATE rollout_status SET status = $1, version = version + 1, updated_at = $2
             WHERE name = $3 AND version = $4 AND {fenced}
               AND EXISTS (SELECT 1 FROM rollouts WHERE name = $3 AND uid = $7){suffix}"
        )
    }
}

/// Binds an event's columns after `rollout` (and its identity), in the
/// events table's order.
pub(super) fn bind_event<'q>(q: AnyQuery<'q>, e: &Event) -> AnyQuery<'q> {
    q.bind(e.at.millis())
        .bind(i64::from(e.run))
        .bind(e.revision.clone())
        .bind(kind_name(e.kind))
        .bind(e.message.clone())
        .bind(e.actor.clone())
        .bind(i64::from(e.weight_before))
        .bind(i64::from(e.weight_after))
}

/// `$b, $b+1, …` (`n` placeholders).
pub(super) fn placeholders(b: usize, n: usize) -> String {
    (b..b + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn kind_name(kind: EventKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}"),
    }
}

impl Store {
    /// Records a rollout's new status with its events, if and only if the
    /// stored version is still `write.expected` and `lease` is still held with
    /// its token (by the lease clock). With `applied_commands`, the queued
    /// commands up to the status's `last_command_id` are removed in the same
    /// transaction. Returns the new version; [`StoreError::Conflict`]
    /// otherwise, and then nothing was written.
    pub async fn write_status(
        &self,
        name: &str,
        write: StatusWrite<'_>,
        lease: &Lease,
        now: Time,
    ) -> Result<i64> {
        let json = serde_json::to_string(write.status).map_err(|e| corrupt("status", name, e))?;
        self.statements.write(
            1 + write.events.len().div_ceil(EVENTS_PER_STATEMENT) as u64
                + u64::from(write.applied_commands)
                + if write.ended_runs.is_empty() {
                    0
                } else {
                    write.ended_runs.len() as u64 + 1
                },
        );
        // A run ended (rare: once a run) takes the transaction, which records it.
        if self.backend == Backend::Postgres
            && write.events.len() <= EVENTS_PER_STATEMENT
            && write.ended_runs.is_empty()
        {
            return self
                .write_status_at_once(name, &json, write, lease, now)
                .await;
        }
        let StatusWrite {
            expected,
            status,
            events,
            applied_commands,
            uid,
            ended_runs,
        } = write;
        let mut tx = self.pool.begin().await?;
        let sql = status_statement(expected, &self.clock_sql("$2"), "");
        let written = sqlx::query(&sql)
            .bind(&json)
            .bind(now.millis())
            .bind(name)
            .bind(expected)
            .bind(&lease.holder)
            .bind(lease.token)
            .bind(uid)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if written != 1 {
            tx.rollback().await?;
            return Err(StoreError::Conflict(name.to_string()));
        }
        // The events in statements of at most EVENTS_PER_STATEMENT rows.
        for chunk in events.chunks(EVENTS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO events (rollout, rollout_uid, at, run, revision, kind, message, actor, weight_before, weight_after) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = 3 + i * 8;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("($1, $2, {})", placeholders(b, 8)));
            }
            let mut q = sqlx::query(&sql).bind(name).bind(uid);
            for e in chunk {
                q = bind_event(q, e);
            }
            q.execute(&mut *tx).await?;
        }
        if applied_commands {
            let applied = i64::try_from(status.last_command_id).unwrap_or(i64::MAX);
            sqlx::query("DELETE FROM commands WHERE rollout = $1 AND id <= $2")
                .bind(name)
                .bind(applied)
                .execute(&mut *tx)
                .await?;
        }
        self.record_runs(&mut tx, name, uid, ended_runs).await?;
        tx.commit().await?;
        Ok(expected + 1)
    }

    /// [`Store::write_status`] on PostgreSQL: one statement (its own
    /// transaction), so a write costs one round trip instead of four
    /// (BEGIN, status, events, COMMIT). The status update is fenced and
    /// versioned as on SQLite; the events and the command removal happen
    /// only when it did. Used for up to [`EVENTS_PER_STATEMENT`] events.
    pub(super) async fn write_status_at_once(
        &self,
        name: &str,
        json: &str,
        write: StatusWrite<'_>,
        lease: &Lease,
        now: Time,
    ) -> Result<i64> {
        let StatusWrite {
            expected,
            status,
            events,
            applied_commands,
            uid,
            ..
        } = write;
        let mut sql = format!(
            "WITH s AS ({})",
            status_statement(expected, &self.clock_sql("$2"), " RETURNING version")
        );
        // $8: the last applied command; events from $9 on, 8 parameters each.
        if applied_commands {
            sql.push_str(
                ", c AS (DELETE FROM commands WHERE rollout = $3 AND id <= $8 AND EXISTS (SELECT 1 FROM s))",
            );
        }
        if !events.is_empty() {
            sql.push_str(
                ", e AS (INSERT INTO events (rollout, rollout_uid, at, run, revision, kind, message, actor, weight_before, weight_after) SELECT $3, $7, v.at, v.run, v.revision, v.kind, v.message, v.actor, v.weight_before, v.weight_after FROM (VALUES ",
            );
            for i in 0..events.len() {
                let b = 9 + i * 8;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}::BIGINT, ${}::BIGINT, ${}::TEXT, ${}::TEXT, ${}::TEXT, ${}::TEXT, ${}::BIGINT, ${}::BIGINT, {i})",
                    b,
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7
                ));
            }
            sql.push_str(
                ") AS v(at, run, revision, kind, message, actor, weight_before, weight_after, ord) WHERE EXISTS (SELECT 1 FROM s) ORDER BY v.ord)",
            );
        }
        sql.push_str(" SELECT version FROM s");
        let mut q = sqlx::query(&sql)
            .bind(json)
            .bind(now.millis())
            .bind(name)
            .bind(expected)
            .bind(&lease.holder)
            .bind(lease.token)
            .bind(uid)
            .bind(i64::try_from(status.last_command_id).unwrap_or(i64::MAX));
        for e in events {
            q = bind_event(q, e);
        }
        match q.fetch_optional(&self.pool).await? {
            Some(row) => Ok(row.try_get(0)?),
            None => Err(StoreError::Conflict(name.to_string())),
        }
    }
}
