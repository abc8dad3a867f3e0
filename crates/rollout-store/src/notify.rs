//! Notification cursors: how far the delivery of a rollout's events to
//! each notifier got. The events table is the outbox (see the migration
//! `20261130000002_notifications`).

use super::*;
use crate::status::kind_name;

/// The delivery state of one rollout's events to one notifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyCursor {
    /// The notifier's name (the daemon's config).
    pub notifier: String,
    /// The id of the last event delivered.
    pub delivered_through: i64,
    /// Events delivered so far.
    pub delivered: i64,
    /// Failed attempts at the next event.
    pub attempts: i64,
    /// The next attempt is not made before this (epoch milliseconds).
    pub next_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Events of notified kinds waiting for delivery.
    pub pending: i64,
}

/// An event with its id in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Its id (increasing in the order written).
    pub id: i64,
    /// The event.
    pub event: Event,
}

fn kinds_list(kinds: &[EventKind]) -> String {
    kinds
        .iter()
        .map(|k| format!("'{}'", kind_name(*k).replace('\'', "")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cursor_of(
    r: &sqlx::any::AnyRow,
    pending: i64,
) -> std::result::Result<NotifyCursor, sqlx::Error> {
    Ok(NotifyCursor {
        notifier: r.try_get(0)?,
        delivered_through: r.try_get(1)?,
        delivered: r.try_get(2)?,
        attempts: r.try_get(3)?,
        next_at: r.try_get(4)?,
        last_error: r.try_get(5)?,
        pending,
    })
}

impl Store {
    /// The cursor of `uid`'s events for `notifier`, made when missing: a
    /// new cursor starts at the current run (`run`), so a rollout that
    /// starts being notified hears about the run under way from its start,
    /// not about its history. Then up to `limit` events of `kinds` after it,
    /// in order.
    pub async fn pending_notifications(
        &self,
        name: &str,
        uid: &str,
        run: u32,
        notifier: &str,
        kinds: &[EventKind],
        limit: u32,
    ) -> Result<(NotifyCursor, Vec<LoggedEvent>)> {
        self.statements.read(2);
        self.statements.write(1);
        sqlx::query(
            "INSERT INTO notify_cursors (rollout_uid, notifier, rollout, delivered_through)
             SELECT $1, $2, $3, COALESCE((SELECT MAX(id) FROM events WHERE rollout_uid = $1 AND run < $4), 0)
             ON CONFLICT (rollout_uid, notifier) DO NOTHING",
        )
        .bind(uid)
        .bind(notifier)
        .bind(name)
        .bind(i64::from(run))
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(
            "SELECT notifier, delivered_through, delivered, attempts, next_at, last_error
             FROM notify_cursors WHERE rollout_uid = $1 AND notifier = $2",
        )
        .bind(uid)
        .bind(notifier)
        .fetch_one(&self.pool)
        .await?;
        let cursor = cursor_of(&row, 0)?;
        let sql = format!(
            "SELECT id, at, run, revision, kind, message, actor, weight_before, weight_after
             FROM events WHERE rollout_uid = $1 AND id > $2 AND kind IN ({})
             ORDER BY id LIMIT $3",
            kinds_list(kinds)
        );
        let rows = sqlx::query(&sql)
            .bind(uid)
            .bind(cursor.delivered_through)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let events = rows
            .iter()
            .map(|r| {
                Ok(LoggedEvent {
                    id: r.try_get(0)?,
                    event: crate::queue::event_at(r, 1, name)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((cursor, events))
    }

    /// Event `id` was delivered to `notifier` (or passed over, when not
    /// `counted`): the cursor moves past it (never back) and the failure
    /// count starts over.
    pub async fn notification_delivered(
        &self,
        uid: &str,
        notifier: &str,
        id: i64,
        counted: bool,
    ) -> Result<()> {
        self.statements.write(1);
        sqlx::query(
            "UPDATE notify_cursors
             SET delivered_through = CASE WHEN delivered_through < $3 THEN $3 ELSE delivered_through END,
                 delivered = delivered + $4, attempts = 0, next_at = 0, last_error = NULL
             WHERE rollout_uid = $1 AND notifier = $2",
        )
        .bind(uid)
        .bind(notifier)
        .bind(id)
        .bind(i64::from(counted))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The next event could not be delivered to `notifier`: try again at
    /// `next_at` (epoch milliseconds).
    pub async fn notification_failed(
        &self,
        uid: &str,
        notifier: &str,
        next_at: i64,
        error: &str,
    ) -> Result<()> {
        self.statements.write(1);
        sqlx::query(
            "UPDATE notify_cursors SET attempts = attempts + 1, next_at = $3, last_error = $4
             WHERE rollout_uid = $1 AND notifier = $2",
        )
        .bind(uid)
        .bind(notifier)
        .bind(next_at)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every notifier's delivery state for the rollout `name` (its current
    /// identity), with the events of `kinds` still waiting.
    pub async fn notification_cursors(
        &self,
        name: &str,
        kinds: &[EventKind],
    ) -> Result<Vec<NotifyCursor>> {
        self.statements.read(1);
        let sql = format!(
            "SELECT c.notifier, c.delivered_through, c.delivered, c.attempts, c.next_at, c.last_error,
                    (SELECT COUNT(*) FROM events e WHERE e.rollout_uid = c.rollout_uid
                       AND e.id > c.delivered_through AND e.kind IN ({}))
             FROM notify_cursors c
             WHERE c.rollout_uid = (SELECT uid FROM rollouts WHERE name = $1)
             ORDER BY c.notifier",
            kinds_list(kinds)
        );
        let rows = sqlx::query(&sql).bind(name).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(cursor_of(r, r.try_get(6)?)?))
            .collect()
    }
}
