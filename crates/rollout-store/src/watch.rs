//! What a watcher of the store (the API's server-sent events) reads: a
//! cheap fingerprint of every rollout, to see which changed, and the event
//! log after a given id.

use super::*;
use crate::queue::event_at;

/// What identifies a rollout's stored state: any write changes one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The rollout's name.
    pub name: String,
    /// Its identity (a name deleted and applied again is a new rollout).
    pub uid: String,
    /// Bumped by every change of the spec.
    pub generation: i64,
    /// Bumped by every status write (0 before the first).
    pub version: i64,
}

/// An event with its id and the rollout it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchedEvent {
    /// The rollout's name.
    pub rollout: String,
    /// The event and its id.
    pub logged: LoggedEvent,
}

impl Store {
    /// Every rollout's fingerprint (or the one named `name`'s), by name:
    /// one small row each, no documents read.
    pub async fn fingerprints(&self, name: Option<&str>) -> Result<Vec<Fingerprint>> {
        self.statements.read(1);
        let select = "SELECT r.name, r.uid, r.generation, COALESCE(s.version, 0)
             FROM rollouts r LEFT JOIN rollout_status s ON s.name = r.name";
        let rows = match name {
            Some(name) => {
                sqlx::query(&format!("{select} WHERE r.name = $1"))
                    .bind(name)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(&format!("{select} ORDER BY r.name"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(Fingerprint {
                    name: r.try_get(0)?,
                    uid: r.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
                    generation: r.try_get(2)?,
                    version: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// The id of the newest event (0 when there is none).
    pub async fn last_event_id(&self) -> Result<i64> {
        self.statements.read(1);
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Up to `limit` events written after event `after`, oldest first: of
    /// every rollout, or of the rollout now named `name` only (not of an
    /// earlier rollout of that name).
    pub async fn events_after(
        &self,
        after: i64,
        name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<WatchedEvent>> {
        self.statements.read(1);
        let columns = "SELECT e.id, e.rollout, e.at, e.run, e.revision, e.kind, e.message, e.actor, e.weight_before, e.weight_after FROM events e";
        let rows = match name {
            Some(name) => {
                sqlx::query(&format!(
                    "{columns} WHERE e.id > $1 AND e.rollout = $2
                       AND e.rollout_uid = (SELECT uid FROM rollouts WHERE name = $2)
                     ORDER BY e.id LIMIT $3"
                ))
                .bind(after)
                .bind(name)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!("{columns} WHERE e.id > $1 ORDER BY e.id LIMIT $2"))
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|r| {
                let rollout: String = r.try_get(1)?;
                let event = event_at(r, 2, &rollout)?;
                Ok(WatchedEvent {
                    logged: LoggedEvent {
                        id: r.try_get(0)?,
                        event,
                    },
                    rollout,
                })
            })
            .collect()
    }
}
