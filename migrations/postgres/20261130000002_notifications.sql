-- Notifications (issue 16). The outbox is the event log itself: events are
-- written in the same transaction as the status they belong to, so one is
-- never lost or invented by a crash. A cursor per rollout identity and
-- notifier says how far delivery got (the id of the last event delivered);
-- delivery advances it after the receiver answered 2xx, so an event is
-- delivered at least once, in order, and a failed one holds back those
-- after it (retried with backoff from `next_at`).
CREATE TABLE notify_cursors (
    rollout_uid       TEXT   NOT NULL,
    notifier          TEXT   NOT NULL,
    rollout           TEXT   NOT NULL,
    delivered_through BIGINT NOT NULL,
    delivered         BIGINT NOT NULL DEFAULT 0,
    attempts          BIGINT NOT NULL DEFAULT 0,
    next_at           BIGINT NOT NULL DEFAULT 0,
    last_error        TEXT,
    PRIMARY KEY (rollout_uid, notifier)
);
