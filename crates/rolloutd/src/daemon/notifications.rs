//! Delivering notifications (see `crate::notify`): a task of the daemon
//! that delivers, for each rollout whose lease this replica holds, the
//! events its notifiers have not had yet, in order.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use rollout_core::ports::{FaultInjector, MetricSource, TrafficRouter};
use rollout_core::sync::lock;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::Daemon;
use crate::notify::{backoff_ms, body, wanted, BATCH, NOTIFIED};

/// Every held rollout is looked at this often too (deliveries left over by
/// a crash or a failover, a notifier added to the config).
const FULL_PASS: StdDuration = StdDuration::from_secs(30);

impl<R: TrafficRouter + FaultInjector, M: MetricSource> Daemon<R, M> {
    /// Runs until `stop`: delivers for the rollouts with new events (rung
    /// by their reconciles), those whose retry is due, and every held
    /// rollout every [`FULL_PASS`].
    pub(super) fn spawn_notifications(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if !self.notifications.is_on() {
                return;
            }
            let mut full_at = tokio::time::Instant::now();
            loop {
                let mut names = self.notifications.due(self.clock.now());
                if tokio::time::Instant::now() >= full_at {
                    names.extend(lock(&self.leases).keys().cloned());
                    full_at = tokio::time::Instant::now() + FULL_PASS;
                }
                for name in names {
                    if self.held(&name).is_some() {
                        self.deliver(&name).await;
                    }
                }
                tokio::select! {
                    _ = self.notifications.bell.notified() => {}
                    _ = tokio::time::sleep(StdDuration::from_millis(500)) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    }

    /// Delivers the rollout's waiting events to each of its notifiers, in
    /// order, stopping at a notifier's first failure (retried later).
    async fn deliver(&self, name: &str) {
        let stored = match self.store.rollout(name).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                warn!(rollout = name, error = %e, "notifications: cannot read the rollout; retrying");
                self.notifications
                    .retry(name, self.clock.now().plus_ms(1_000));
                return;
            }
        };
        let run = stored.status.as_ref().map_or(1, |s| s.run);
        for notifier in self.notifications.of(&stored.rollout.spec) {
            let Some(cfg) = self.notifications.notifiers.by_name.get(&notifier) else {
                warn!(rollout = name, notifier, "the rollout names a notifier this daemon's config does not define; nothing is sent to it");
                continue;
            };
            loop {
                let now = self.clock.now();
                let (cursor, events) = match self
                    .store
                    .pending_notifications(name, &stored.uid, run, &notifier, &NOTIFIED, BATCH)
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        warn!(rollout = name, notifier, error = %e, "notifications: cannot read the outbox; retrying");
                        self.notifications.retry(name, now.plus_ms(1_000));
                        return;
                    }
                };
                if events.is_empty() {
                    break;
                }
                if cursor.next_at > now.millis() {
                    self.notifications
                        .retry(name, rollout_core::Time::from_millis(cursor.next_at));
                    break;
                }
                let to = Recipient {
                    rollout: name,
                    uid: &stored.uid,
                    notifier: &notifier,
                    cfg,
                };
                match self.deliver_batch(&to, cursor.attempts, &events).await {
                    Ok(true) if events.len() == BATCH as usize => {}
                    Ok(_) => break,
                    Err(()) => return,
                }
            }
        }
    }

    /// Delivers `events` to one notifier in order. Events not worth a
    /// notification are passed over, the cursor moving past them with the
    /// next delivery (or once, at the end). `Ok(true)`: all went through;
    /// `Ok(false)`: one failed (retried later, the rest held back);
    /// `Err(())`: the store could not record it (all retried later).
    async fn deliver_batch(
        &self,
        to: &Recipient<'_>,
        attempts: i64,
        events: &[rollout_store::LoggedEvent],
    ) -> Result<bool, ()> {
        let public_url = self.notifications.public_url.as_deref();
        let mut passed_over = None;
        for e in events {
            if !wanted(e) {
                passed_over = Some(e.id);
                continue;
            }
            let text = body(to.cfg.format, to.rollout, e, public_url);
            let recorded = match self.notifications.send(to.cfg, text).await {
                Ok(()) => {
                    self.count(to.notifier, "delivered");
                    debug!(
                        rollout = to.rollout,
                        notifier = to.notifier,
                        event = e.id,
                        "notification delivered"
                    );
                    passed_over = None;
                    self.store
                        .notification_delivered(to.uid, to.notifier, e.id, true)
                        .await
                }
                Err(why) => {
                    self.count(to.notifier, "failed");
                    let at = self.clock.now().plus_ms(backoff_ms(attempts + 1));
                    warn!(rollout = to.rollout, notifier = to.notifier, event = e.id, error = %why, "notification not delivered; retrying");
                    self.notifications.retry(to.rollout, at);
                    let failed = self
                        .store
                        .notification_failed(to.uid, to.notifier, at.millis(), &why)
                        .await;
                    return self.recorded(to.rollout, failed).map(|()| false);
                }
            };
            self.recorded(to.rollout, recorded)?;
        }
        if let Some(id) = passed_over {
            let moved = self
                .store
                .notification_delivered(to.uid, to.notifier, id, false)
                .await;
            self.recorded(to.rollout, moved)?;
        }
        Ok(true)
    }

    fn count(&self, notifier: &str, outcome: &str) {
        self.counters
            .notifications
            .with_label_values(&[notifier, outcome])
            .inc();
    }

    /// A delivery's record in the store; when it failed, everything is
    /// tried again in a second (an event may then be sent twice).
    fn recorded(&self, rollout: &str, r: Result<(), rollout_store::StoreError>) -> Result<(), ()> {
        r.map_err(|e| {
            warn!(rollout, error = %e, "notifications: cannot record a delivery; it is sent again");
            self.notifications
                .retry(rollout, self.clock.now().plus_ms(1_000));
        })
    }
}

/// Where a batch of notifications goes.
struct Recipient<'a> {
    rollout: &'a str,
    uid: &'a str,
    notifier: &'a str,
    cfg: &'a crate::notify::Notifier,
}
