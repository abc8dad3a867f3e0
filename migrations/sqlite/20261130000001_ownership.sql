-- Ownership and identity (issue 13); see the PostgreSQL migration.
ALTER TABLE rollouts ADD COLUMN uid TEXT;
ALTER TABLE rollouts ADD COLUMN traffic_target TEXT;
UPDATE rollouts SET uid = lower(hex(randomblob(16)));
UPDATE rollouts SET traffic_target = COALESCE(
        json_extract(spec, '$.spec.trafficRouting.alb.ruleArn'),
        json_extract(spec, '$.spec.trafficRouting.alb.listenerArn'))
WHERE NOT EXISTS (
    SELECT 1 FROM rollouts o
    WHERE o.name < rollouts.name
      AND COALESCE(json_extract(o.spec, '$.spec.trafficRouting.alb.ruleArn'),
                   json_extract(o.spec, '$.spec.trafficRouting.alb.listenerArn'))
        = COALESCE(json_extract(rollouts.spec, '$.spec.trafficRouting.alb.ruleArn'),
                   json_extract(rollouts.spec, '$.spec.trafficRouting.alb.listenerArn')));
CREATE UNIQUE INDEX rollouts_by_traffic_target ON rollouts (traffic_target);

ALTER TABLE events ADD COLUMN rollout_uid TEXT;
UPDATE events SET rollout_uid = (SELECT uid FROM rollouts r WHERE r.name = events.rollout);
CREATE INDEX events_by_rollout_uid ON events (rollout_uid, id);
