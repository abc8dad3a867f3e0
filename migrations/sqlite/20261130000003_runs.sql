-- Run history (issue 17). Each ended run's record (its outcome and report)
-- is written in the same transaction as the status that ended it, keyed by
-- the rollout's identity and the run's number, so a crash neither loses
-- nor doubles one. The store keeps the newest N per rollout (the daemon's
-- `runHistory`, default 100); a deleted rollout's runs go with it.
CREATE TABLE runs (
    rollout     TEXT   NOT NULL,
    rollout_uid TEXT   NOT NULL,
    run         BIGINT NOT NULL,
    ended_at    BIGINT NOT NULL,
    record      TEXT   NOT NULL,
    PRIMARY KEY (rollout_uid, run)
);
CREATE INDEX runs_by_rollout ON runs (rollout, run);
