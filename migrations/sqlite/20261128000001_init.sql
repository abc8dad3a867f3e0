-- rolloutd's state. Times are milliseconds since the Unix epoch (BIGINT), as
-- the decision core passes them; documents and status are JSON text.

CREATE TABLE analysis_templates (
    name       TEXT PRIMARY KEY,
    spec       TEXT   NOT NULL,
    source     TEXT   NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL
);

CREATE TABLE rollouts (
    name       TEXT PRIMARY KEY,
    spec       TEXT   NOT NULL,
    source     TEXT   NOT NULL DEFAULT '',
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One row per rollout; `version` is bumped by every write (optimistic
-- concurrency): a writer names the version it read and loses if it moved.
CREATE TABLE rollout_status (
    name       TEXT PRIMARY KEY REFERENCES rollouts (name) ON DELETE CASCADE,
    status     TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Append-only history; kept when a rollout is deleted.
CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout       TEXT   NOT NULL,
    at            BIGINT NOT NULL,
    run           BIGINT NOT NULL,
    revision      TEXT   NOT NULL,
    kind          TEXT   NOT NULL,
    message       TEXT   NOT NULL,
    actor         TEXT,
    weight_before BIGINT NOT NULL,
    weight_after  BIGINT NOT NULL
);
CREATE INDEX events_by_rollout ON events (rollout, id);

-- Manual overrides waiting for the next reconcile of their rollout.
CREATE TABLE commands (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout TEXT   NOT NULL,
    kind    TEXT   NOT NULL,
    actor   TEXT   NOT NULL,
    reason  TEXT,
    at      BIGINT NOT NULL
);
CREATE INDEX commands_by_rollout ON commands (rollout, id);

-- Which replica reconciles which rollout. `token` grows with every change of
-- holder: a fencing token that every status write must still match.
CREATE TABLE leases (
    rollout    TEXT PRIMARY KEY,
    holder     TEXT   NOT NULL,
    token      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX leases_by_holder ON leases (holder);
