//! Stages 2 and 3: a new revision supersedes the run; commands (abort,
//! promote, pause, resume, retry, delete) are applied.

use super::*;

impl Reconcile<'_> {
    pub(super) fn check_revision(&mut self) {
        let new = self.ctx.rollout.spec.revision.clone();
        if new == self.st.revision {
            return;
        }
        let old = self.st.revision.clone();
        let moving = match self.st.phase {
            Phase::Progressing | Phase::Paused => true,
            Phase::Pending => self.st.returning_from.is_some(),
            _ => self.st.started_at.is_some() && !self.settled() && self.st.canary_weight > 0,
        };
        let outcome = if self.st.phase.is_terminal() {
            self.st.phase.as_str().to_string()
        } else {
            "Superseded".to_string()
        };
        if outcome == "Superseded" {
            self.event(
                EventKind::Superseded,
                format!("revision {new} supersedes revision {old}; the old run ends"),
                None,
            );
        }
        self.new_run(&new, &outcome, moving.then_some(old));
    }

    /// Ends the current run (recording it) and starts a new one, Pending.
    pub(super) fn new_run(
        &mut self,
        revision: &str,
        outcome: &str,
        returning_from: Option<String>,
    ) {
        let checks = crate::report::checks_of(&self.st, self.ctx.templates);
        let under_chaos = crate::report::under_chaos(&self.st, self.ctx.templates);
        let canary_requests = crate::report::canary_requests(&self.st);
        let st = &mut self.st;
        let record = RunRecord {
            run: st.run,
            revision: st.revision.clone(),
            outcome: outcome.to_string(),
            started_at: st.started_at,
            ended_at: st.ended_at.unwrap_or(self.now),
            message: st.message.clone(),
            canary_requests,
            checks,
            under_chaos,
        };
        // The status keeps a summary; the report goes to the store's run
        // history with the status write.
        st.history.push(RunRecord {
            checks: Default::default(),
            under_chaos: Default::default(),
            ..record.clone()
        });
        self.ended.push(record);
        let st = &mut self.st;
        if st.history.len() > HISTORY_LIMIT {
            let excess = st.history.len() - HISTORY_LIMIT;
            st.history.drain(..excess);
        }
        st.run = st.run.saturating_add(1);
        st.revision = revision.to_string();
        st.phase = Phase::Pending;
        st.current_step_index = 0;
        st.started_at = None;
        st.ended_at = None;
        st.step_started_at = None;
        st.last_progress_at = None;
        st.pause = None;
        st.step_promoted = false;
        st.blue_green = None;
        st.rollback_step = None;
        st.analysis = Default::default();
        st.bake_started_at = None;
        st.webhook = None;
        st.returning_from = returning_from;
        st.message = "waiting to start".into();
        if self.st.returning_from.is_some() {
            self.set_desired(0);
        }
    }

    pub(super) fn apply_commands(&mut self, commands: &[Command]) {
        let mut pending: Vec<&Command> = commands
            .iter()
            .filter(|c| c.id > self.st.last_command_id)
            .collect();
        pending.sort_by_key(|c| c.id);
        if pending.len() > MAX_COMMANDS_PER_DECISION {
            pending.truncate(MAX_COMMANDS_PER_DECISION);
            self.requeue = Some(MORE_COMMANDS_REQUEUE_MS);
        }
        // Commands refused for the same reason make one event, however many
        // were queued (5,000 aborts must not make 5,000 events at once).
        let mut ignored: Vec<(String, String, u32)> = Vec::new();
        for c in pending {
            self.st.last_command_id = c.id;
            let why = c
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            if let Err(refusal) = check(&self.st, c.kind).map_err(|r| r.to_string()) {
                let what = format!("{} by {}", c.kind.verb(), c.actor);
                match ignored
                    .iter_mut()
                    .find(|(w, r, _)| *w == what && *r == refusal)
                {
                    Some(entry) => entry.2 += 1,
                    None => ignored.push((what, refusal, 1)),
                }
                continue;
            }
            self.carry_out(c, &why);
        }
        for (what, refusal, n) in ignored {
            let times = if n > 1 {
                format!(" ({n} times)")
            } else {
                String::new()
            };
            self.event(
                EventKind::CommandIgnored,
                format!("{what} ignored{times}: {refusal}"),
                None,
            );
        }
    }

    /// Carries out one accepted command (`why` is ": reason" or empty).
    fn carry_out(&mut self, c: &Command, why: &str) {
        let who = Some(c.actor.as_str());
        match c.kind {
            CommandKind::Delete => self.start_deletion(&c.actor, why),
            CommandKind::Abort => {
                let message = format!("aborted by {}{why}", c.actor);
                self.finish(Phase::Aborted, EventKind::Aborted, message, who);
            }
            CommandKind::Pause => {
                let reason = PauseReason::Manual {
                    actor: c.actor.clone(),
                    reason: c.reason.clone(),
                    since: self.now,
                };
                self.pause(reason, format!("paused by {}{why}", c.actor), who);
            }
            CommandKind::Resume => self.resume(c, why),
            CommandKind::Promote { full } => self.promote(full, &c.actor, why),
            CommandKind::Retry => {
                let outcome = self.st.phase.as_str().to_string();
                let revision = self.st.revision.clone();
                let returning =
                    (!self.settled() && self.st.canary_weight > 0).then(|| revision.clone());
                self.event(
                    EventKind::Retried,
                    format!(
                        "retry by {}{why}: run {} starts again from step 0",
                        c.actor,
                        self.st.run + 1
                    ),
                    who,
                );
                self.new_run(&revision, &outcome, returning);
            }
        }
    }

    /// A person resumed: a timed pause does not count the time paused by
    /// hand, and inconclusive counts start over.
    fn resume(&mut self, c: &Command, why: &str) {
        let who = Some(c.actor.as_str());
        if let Some(PauseReason::Manual { since, .. }) = self.st.pause {
            // A timed pause does not run while paused by hand.
            if let Some(started) = self.st.step_started_at {
                self.st.step_started_at = Some(started.plus_ms(self.now.since(since)));
            }
        }
        for t in self.st.analysis.templates.values_mut() {
            t.inconclusive_in_a_row = 0;
        }
        self.st.pause = None;
        self.st.phase = if self.st.started_at.is_some() {
            Phase::Progressing
        } else {
            Phase::Pending
        };
        self.st.last_progress_at = Some(self.now);
        self.event(
            EventKind::Resumed,
            format!("resumed by {}{why}", c.actor),
            who,
        );
    }

    /// `DELETE` of a rollout whose run holds traffic: the run ends (all
    /// traffic back to stable at once) and the rollout is removed once the
    /// load balancer shows stable carrying all of it.
    pub(super) fn start_deletion(&mut self, actor: &str, why: &str) {
        self.st.deleting = Some(crate::status::Deletion {
            actor: actor.to_string(),
            since: self.now,
        });
        let message = format!(
            "deleted by {actor}{why}: all traffic returns to stable, then the rollout is removed"
        );
        if !self.st.phase.is_terminal() {
            self.st.phase = Phase::Aborted;
            self.st.ended_at = Some(self.now);
        }
        self.st.pause = None;
        self.st.analysis.origin = None;
        self.st.rollback_step = None;
        self.st.returning_from = None;
        self.st.message = message.clone();
        self.event(EventKind::Deleting, message, Some(actor));
        if self.st.phase != Phase::Succeeded {
            self.set_desired(0);
        }
    }

    pub(super) fn promote(&mut self, full: bool, actor: &str, why: &str) {
        let who = Some(actor);
        let what = if full { "promoted to 100%" } else { "promoted" };
        self.st.phase = Phase::Progressing;
        self.st.last_progress_at = Some(self.now);
        for t in self.st.analysis.templates.values_mut() {
            t.inconclusive_in_a_row = 0;
        }
        let was_paused = self.st.pause.take();
        if self.ctx.rollout.spec.strategy.blue_green.is_some() {
            if let Some(bg) = &mut self.st.blue_green {
                match bg.stage {
                    BlueGreenStage::Preview => bg.preview_passed = true,
                    BlueGreenStage::PostPromotion | BlueGreenStage::Switching => {}
                }
            }
            self.st.step_promoted = true;
            self.event(EventKind::Promoted, format!("{what} by {actor}{why}"), who);
            return;
        }
        let steps = self.steps();
        let idx = self.st.current_step_index as usize;
        if full {
            let last = steps
                .iter()
                .rposition(|s| matches!(s, CanaryStep::SetWeight(_)))
                .unwrap_or(0);
            self.st.current_step_index = u32::try_from(last).unwrap_or(0);
            self.st.step_started_at = Some(self.now);
            self.st.step_promoted = true;
        } else if matches!(steps.get(idx), Some(CanaryStep::Pause(_)))
            && was_paused != Some(PauseReason::Inconclusive)
        {
            self.advance(idx + 1);
        } else {
            self.st.step_promoted = true;
        }
        self.event(EventKind::Promoted, format!("{what} by {actor}{why}"), who);
    }
}
