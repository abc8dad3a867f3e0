-- Several traffic targets per rollout (issue 23): every listener rule (or
-- listener, for its default action) a rollout shifts, its own and those of
-- `spec.additionalTargets`, with the rollout that owns it. The primary key
-- holds the rule that no two rollouts own one target, across applies, the
-- specs directory and replicas; `rollouts.traffic_target` keeps the main
-- target as before.
CREATE TABLE traffic_targets (
    target TEXT PRIMARY KEY,
    rollout TEXT NOT NULL
);
CREATE INDEX traffic_targets_by_rollout ON traffic_targets (rollout);
INSERT INTO traffic_targets (target, rollout)
    SELECT traffic_target, name FROM rollouts WHERE traffic_target IS NOT NULL;
