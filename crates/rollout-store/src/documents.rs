//! Rollouts and AnalysisTemplates: apply (create or update, with the
//! change reported), read, and delete (or hand back to the daemon to
//! return traffic first).

use super::*;

/// Every traffic target a rollout owns (its own first, then its
/// additional targets'): the ARN of its rule, or of its listener for the
/// default action, with how a person would name it.
pub fn traffic_targets(r: &Rollout) -> Vec<(String, String)> {
    r.spec
        .routings()
        .map(|routing| {
            let place = routing.alb.place().to_string();
            let described = match routing.alb.rule_arn {
                Some(_) => format!("listener rule {place}"),
                None => format!("the default action of listener {place}"),
            };
            (place, described)
        })
        .collect()
}

/// A new rollout identity.
pub(super) fn new_uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code()
                .is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
                || d.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}

impl Store {
    /// What writing `spec` under `name` in `table` would change (and counts
    /// the write it will take).
    pub(super) async fn change(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        table: &str,
        name: &str,
        spec: &str,
        dry_run: bool,
    ) -> Result<Change> {
        let old: Option<String> = sqlx::query(&format!("SELECT spec FROM {table} WHERE name = $1"))
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let change = match old {
            None => Change::Created,
            Some(o) if o == spec => Change::Unchanged,
            Some(_) => Change::Configured,
        };
        if change != Change::Unchanged && !dry_run {
            self.statements.write(1);
        }
        Ok(change)
    }

    /// Creates or updates the documents of `set`, all or nothing. With
    /// `dry_run`, reports what would change and changes nothing.
    pub async fn apply(
        &self,
        set: &SpecSet,
        source: &str,
        now: Time,
        dry_run: bool,
    ) -> Result<Vec<Applied>> {
        // A concurrent apply may create a name (or take a target) between
        // this one's reads and its writes: the unique index refuses the
        // second write, and the apply runs again, now seeing the row (an
        // update, or a clear refusal naming the owner).
        for _ in 0..3 {
            if let Some(out) = self.apply_once(set, source, now, dry_run).await? {
                return Ok(out);
            }
        }
        Err(StoreError::Conflict(
            "concurrent applies of the same rollouts kept colliding; apply again".into(),
        ))
    }

    /// One attempt of [`Store::apply`]; `None` when a concurrent apply
    /// collided with it (nothing was written).
    pub(super) async fn apply_once(
        &self,
        set: &SpecSet,
        source: &str,
        now: Time,
        dry_run: bool,
    ) -> Result<Option<Vec<Applied>>> {
        self.statements.read(set.len() as u64);
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::new();
        for t in &set.templates {
            out.push(
                self.apply_template(&mut tx, t, source, now, dry_run)
                    .await?,
            );
        }
        for r in &set.rollouts {
            match self.apply_rollout(&mut tx, r, source, now, dry_run).await {
                Ok(Some(applied)) => out.push(applied),
                Ok(None) => return Ok(None),
                Err(e @ StoreError::Owned { .. }) => {
                    tx.rollback().await?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(Some(out))
    }

    /// Creates or updates one AnalysisTemplate in `tx`.
    async fn apply_template(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        t: &rollout_spec::Located<AnalysisTemplate>,
        source: &str,
        now: Time,
        dry_run: bool,
    ) -> Result<Applied> {
        let name = t.value.metadata.name.to_string();
        let spec = serde_json::to_string(&t.value).map_err(|e| corrupt("template", &name, e))?;
        let change = self
            .change(tx, "analysis_templates", &name, &spec, dry_run)
            .await?;
        if change != Change::Unchanged {
            sqlx::query(
                "INSERT INTO analysis_templates (name, spec, source, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, source = excluded.source, updated_at = excluded.updated_at",
            )
            .bind(&name)
            .bind(&spec)
            .bind(source)
            .bind(now.millis())
            .execute(&mut **tx)
            .await?;
        }
        Ok(Applied {
            kind: "AnalysisTemplate",
            name,
            change,
        })
    }

    /// Creates or updates one Rollout in `tx`, refusing a traffic target
    /// another rollout owns; `None` when a concurrent apply collided with
    /// it (the caller tries again).
    async fn apply_rollout(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        r: &rollout_spec::Located<Rollout>,
        source: &str,
        now: Time,
        dry_run: bool,
    ) -> Result<Option<Applied>> {
        let name = r.value.metadata.name.to_string();
        let spec = serde_json::to_string(&r.value).map_err(|e| corrupt("rollout", &name, e))?;
        // One rollout per traffic target, across every apply, the specs
        // directory and every replica: checked here for a clear answer,
        // and held by the primary key of `traffic_targets` (and the unique
        // index on `rollouts.traffic_target`) against concurrent applies.
        let targets = traffic_targets(&r.value);
        // `rollouts.traffic_target`: the main one.
        let target = r.value.spec.traffic_routing.alb.place().to_string();
        for (key, described) in &targets {
            let owner: Option<String> = sqlx::query(
                "SELECT rollout FROM traffic_targets WHERE target = $1 AND rollout <> $2
                 UNION SELECT name FROM rollouts WHERE traffic_target = $1 AND name <> $2",
            )
            .bind(key)
            .bind(&name)
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
            if let Some(owner) = owner {
                return Err(StoreError::Owned {
                    rollout: name,
                    target: described.clone(),
                    owner,
                });
            }
        }
        let change = self.change(tx, "rollouts", &name, &spec, dry_run).await?;
        let written = match change {
            Change::Created => {
                sqlx::query(
                    "INSERT INTO rollouts (name, spec, source, generation, created_at, updated_at, uid, traffic_target) VALUES ($1, $2, $3, 1, $4, $4, $5, $6)",
                )
                .bind(&name)
                .bind(&spec)
                .bind(source)
                .bind(now.millis())
                .bind(new_uid())
                .bind(&target)
                .execute(&mut **tx)
                .await
            }
            Change::Configured => {
                sqlx::query(
                    "UPDATE rollouts SET spec = $2, source = $3, generation = generation + 1, updated_at = $4, traffic_target = $5 WHERE name = $1",
                )
                .bind(&name)
                .bind(&spec)
                .bind(source)
                .bind(now.millis())
                .bind(&target)
                .execute(&mut **tx)
                .await
            }
            // A rollout stored before ownership was recorded takes its
            // target now.
            Change::Unchanged => {
                sqlx::query(
                    "UPDATE rollouts SET traffic_target = $2 WHERE name = $1 AND (traffic_target IS NULL OR traffic_target <> $2)",
                )
                .bind(&name)
                .bind(&target)
                .execute(&mut **tx)
                .await
            }
        };
        let written = match written {
            Ok(_) => Self::own_targets(tx, &name, &targets).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            if is_unique_violation(&e) {
                // Another apply created this name or took this target
                // between our check and our write: try again.
                return Ok(None);
            }
            return Err(e.into());
        }
        Ok(Some(Applied {
            kind: "Rollout",
            name,
            change,
        }))
    }

    /// Records `targets` as the ones `name` owns (and no others).
    async fn own_targets(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        name: &str,
        targets: &[(String, String)],
    ) -> std::result::Result<(), sqlx::Error> {
        // Unchanged (the common case, and what concurrent applies of the
        // same spec find): no write, so they never collide on these rows.
        let mut held: Vec<String> =
            sqlx::query("SELECT target FROM traffic_targets WHERE rollout = $1")
                .bind(name)
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<std::result::Result<_, _>>()?;
        let mut wanted: Vec<String> = targets.iter().map(|(key, _)| key.clone()).collect();
        held.sort_unstable();
        wanted.sort_unstable();
        if held == wanted {
            return Ok(());
        }
        sqlx::query("DELETE FROM traffic_targets WHERE rollout = $1")
            .bind(name)
            .execute(&mut **tx)
            .await?;
        for (key, _) in targets {
            sqlx::query("INSERT INTO traffic_targets (target, rollout) VALUES ($1, $2)")
                .bind(key)
                .bind(name)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub(super) fn read_rollout(row: &AnyRow) -> Result<StoredRollout> {
        let uid: Option<String> = row.try_get("uid")?;
        let name: String = row.try_get("name")?;
        let spec: String = row.try_get("spec")?;
        let rollout: Rollout =
            serde_json::from_str(&spec).map_err(|e| corrupt("rollout", &name, e))?;
        let status: Option<String> = row.try_get("status")?;
        let status = status
            .map(|s| serde_json::from_str::<RolloutStatus>(&s))
            .transpose()
            .map_err(|e| corrupt("status", &name, e))?;
        Ok(StoredRollout {
            rollout,
            uid: uid.unwrap_or_default(),
            generation: row.try_get("generation")?,
            source: row.try_get("source")?,
            status,
            version: row.try_get::<Option<i64>, _>("version")?.unwrap_or(0),
            commands_queued: row.try_get::<i64, _>("queued")? != 0,
        })
    }

    /// Every rollout, by name.
    pub async fn rollouts(&self) -> Result<Vec<StoredRollout>> {
        self.statements.read(1);
        let rows = sqlx::query(&format!("{} ORDER BY r.name", Self::ROLLOUT_SELECT))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::read_rollout).collect()
    }

    /// The names of every rollout (without reading their documents).
    pub async fn rollout_names(&self) -> Result<Vec<String>> {
        self.statements.read(1);
        let rows = sqlx::query("SELECT name FROM rollouts ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// One rollout.
    pub async fn rollout(&self, name: &str) -> Result<Option<StoredRollout>> {
        self.statements.read(1);
        let row = sqlx::query(&format!("{} WHERE r.name = $1", Self::ROLLOUT_SELECT))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::read_rollout).transpose()
    }

    /// Every AnalysisTemplate's spec, by name.
    pub async fn templates(&self) -> Result<BTreeMap<String, AnalysisTemplateSpec>> {
        self.statements.read(1);
        let rows = sqlx::query("SELECT name, spec FROM analysis_templates")
            .fetch_all(&self.pool)
            .await?;
        let mut out = BTreeMap::new();
        for row in rows {
            let name: String = row.try_get(0)?;
            let spec: String = row.try_get(1)?;
            let t: AnalysisTemplate =
                serde_json::from_str(&spec).map_err(|e| corrupt("template", &name, e))?;
            out.insert(name, t.spec);
        }
        Ok(out)
    }

    /// `DELETE`, from the API or the specs directory: a rollout whose run
    /// holds canary traffic is not removed at once; a `Delete` command is
    /// queued, its reconcile returns all traffic to stable and then removes
    /// it. Otherwise (or with `orphan`, which leaves the weights as they
    /// are) it is removed now. The removal happens only if the status did
    /// not move since it was read here.
    pub async fn delete_or_hand_back(
        &self,
        name: &str,
        actor: &str,
        orphan: bool,
        now: Time,
    ) -> Result<Deleted> {
        for _ in 0..5 {
            let Some(stored) = self.rollout(name).await? else {
                return Ok(Deleted::NotFound);
            };
            let holds = stored
                .status
                .as_ref()
                .is_some_and(RolloutStatus::holds_canary_traffic);
            if holds && !orphan {
                let queued = stored.status.as_ref().is_some_and(|s| s.deleting.is_some());
                if !queued {
                    self.enqueue_command(name, CommandKind::Delete, actor, None, now)
                        .await?;
                }
                return Ok(Deleted::HandingBack);
            }
            if self
                .delete_rollout_at(name, &stored.uid, stored.version)
                .await?
            {
                return Ok(Deleted::Gone);
            }
            // The status moved (a reconcile wrote): look again.
        }
        Err(StoreError::Conflict(name.to_string()))
    }

    /// Removes the rollout identified by `uid` if its status version is
    /// still `version` (0: none written). Returns whether it did.
    pub async fn delete_rollout_at(&self, name: &str, uid: &str, version: i64) -> Result<bool> {
        self.statements.write(4);
        let mut tx = self.pool.begin().await?;
        let current: i64 = sqlx::query(
            "SELECT CAST(COALESCE((SELECT version FROM rollout_status WHERE name = $1), 0) AS BIGINT)
             WHERE EXISTS (SELECT 1 FROM rollouts WHERE name = $1 AND uid = $2)",
        )
        .bind(name)
        .bind(uid)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(-1);
        if current != version {
            tx.rollback().await?;
            return Ok(false);
        }
        Self::delete_rows(&mut tx, name).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stops managing a rollout at once, whatever its run holds: its
    /// document, status, queued commands and lease go; its events stay
    /// (under its identity, never shown for a rollout applied later under
    /// the same name). Returns whether it existed.
    pub async fn delete_rollout(&self, name: &str) -> Result<bool> {
        self.statements.write(4);
        let mut tx = self.pool.begin().await?;
        let gone = Self::delete_rows(&mut tx, name).await?;
        tx.commit().await?;
        Ok(gone)
    }

    pub(super) async fn delete_rows(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        name: &str,
    ) -> Result<bool> {
        for table in [
            "rollout_status",
            "commands",
            "leases",
            "runs",
            "traffic_targets",
        ] {
            let column = if table == "rollout_status" {
                "name"
            } else {
                "rollout"
            };
            sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1"))
                .bind(name)
                .execute(&mut **tx)
                .await?;
        }
        let gone = sqlx::query("DELETE FROM rollouts WHERE name = $1")
            .bind(name)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        Ok(gone > 0)
    }
}
