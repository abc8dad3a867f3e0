#!/usr/bin/env bash
# Read throughput of the API: GET /api/v1/rollouts/{name} with 1,000
# rollouts stored in PostgreSQL, while the daemon reconciles them every 10 s
# (simulated load balancer), under wrk on this machine.
# Usage: scripts/bench-api.sh [ROLLOUTS] [SECONDS]   (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
secs=${2:-20}
scripts/ensure-postgres.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/rolloutd-target}
cargo build -q --release --bin rolloutd --features rolloutd/simulated-world
work=$(mktemp -d)
db="rolloutd_apibench_$$"
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db"
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/specs"
cat > "$work/specs/template.yaml" <<'YAML'
apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: golden}
spec:
  alb: {period: 60s, delay: 60s, errorRate: {maxIncrease: 50%}}
YAML
for ((i = 0; i < n; i++)); do
  printf -- '---
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {name: svc-%d}
spec:
  revision: "r1"
  trafficRouting:
    alb:
      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/%016x
  stable: {targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue-%d/73e2d6bc24d8a067"}
  canary: {targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green-%d/0f2a6b1c9d8e7f60"}
  progressDeadline: 2h
  strategy:
    canary:
      steps: [{setWeight: 5}, {pause: {duration: 1h}}, {setWeight: 100}]
  analysis: {interval: 1m, templates: [golden]}
' "$i" "$i" "$i" "$i" >> "$work/specs/rollouts-$((i / 200)).yaml"
done
port=$((20000 + $$ % 20000))
ROLLOUTD_LOG=warn "$CARGO_TARGET_DIR/release/rolloutd" serve \
  --database-url "postgres://postgres@127.0.0.1:5432/$db" \
  --simulate-world "sqlite://$work/world.db" \
  --specs-dir "$work/specs" --listen "127.0.0.1:$port" 2> "$work/log" &
pid=$!
for _ in $(seq 1 120); do
  count=$(curl -fsS "http://127.0.0.1:$port/api/v1/rollouts" 2>/dev/null | grep -o '"phase":"Progressing"' | wc -l || true)
  [ "${count:-0}" -ge "$n" ] && break
  sleep 1
done
echo "$count of $n rollouts progressing; reading svc-$((n / 2)) for ${secs}s"
wrk -t2 -c32 -d"${secs}s" --latency "http://127.0.0.1:$port/api/v1/rollouts/svc-$((n / 2))"
