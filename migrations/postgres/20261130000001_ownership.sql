-- Ownership and identity (issue 13).
-- `uid`: a rollout's identity; a name deleted and applied again is a new
-- rollout, and events carry the identity they belong to.
-- `traffic_target`: the listener rule (or the listener, for its default
-- action) a rollout shifts; unique, so no two rollouts ever own one, across
-- applies, the specs directory and replicas.
ALTER TABLE rollouts ADD COLUMN uid TEXT;
ALTER TABLE rollouts ADD COLUMN traffic_target TEXT;
UPDATE rollouts SET uid = md5(name || random()::text || clock_timestamp()::text);
ALTER TABLE rollouts ALTER COLUMN uid SET NOT NULL;
-- Existing rollouts take their target; where two already share one, the
-- first by name keeps it and the other is refused at its next apply.
UPDATE rollouts r SET traffic_target = t.target
FROM (
    SELECT name, target, row_number() OVER (PARTITION BY target ORDER BY name) AS n
    FROM (
        SELECT name, COALESCE(spec::jsonb #>> '{spec,trafficRouting,alb,ruleArn}',
                              spec::jsonb #>> '{spec,trafficRouting,alb,listenerArn}') AS target
        FROM rollouts
    ) x
) t
WHERE t.name = r.name AND t.n = 1;
CREATE UNIQUE INDEX rollouts_by_traffic_target ON rollouts (traffic_target);

ALTER TABLE events ADD COLUMN rollout_uid TEXT;
UPDATE events e SET rollout_uid = r.uid FROM rollouts r WHERE r.name = e.rollout;
CREATE INDEX events_by_rollout_uid ON events (rollout_uid, id);
