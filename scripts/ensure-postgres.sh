#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 (user postgres,
# trust auth), which the store tests need. In order:
#   1. one is already running: nothing to do;
#   2. the machine's own cluster exists but is stopped: start it;
#   3. otherwise: a throwaway cluster under $ROLLOUTD_PG_DIR (initdb + pg_ctl).
# Fails loudly when none of these works; tests never skip for want of it.
set -euo pipefail

host=127.0.0.1
port=${ROLLOUTD_PG_PORT:-5432}
ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }

if ready; then
  exit 0
fi

if [ "$port" = 5432 ] && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  for version in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  done
  for _ in $(seq 1 30); do ready && exit 0; sleep 0.5; done
fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ]; then
  echo "ensure-postgres: no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)" >&2
  exit 1
fi
dir=${ROLLOUTD_PG_DIR:-/var/tmp/rolloutd-pg}
run_as=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home "$dir" postgres
  mkdir -p "$dir" && chown postgres "$dir"
  run_as=(runuser -u postgres --)
fi
if [ ! -f "$dir/data/PG_VERSION" ]; then
  "${run_as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null
fi
"${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-h $host -p $port -k $dir" start >/dev/null
for _ in $(seq 1 30); do ready && exit 0; sleep 0.5; done
echo "ensure-postgres: PostgreSQL did not come up on $host:$port (log: $dir/log)" >&2
exit 1
