#!/usr/bin/env bash
# The Dockerfile's steps, runnable where no Docker engine is (and tested by
# crates/rolloutd/tests/docker_build.rs, which also keeps the two in step):
#
#   build stage:   the files the Dockerfile COPYs, and nothing else, in a
#                  fresh directory; the same `cargo build` line.
#   runtime stage: a root filesystem with the binaries where the image puts
#                  them; then the image is exercised as it runs: user 10001,
#                  the image's ENV and CMD (`serve`), its HEALTHCHECK command.
#
# Usage: scripts/docker-build.sh [OUT_DIR]     (default: target/docker)
# Needs: cargo (crates.io reachable), curl; setpriv when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
out=$(realpath -m "${1:-target/docker}")
rm -rf "$out/src" "$out/rootfs"
mkdir -p "$out/src" "$out/rootfs/usr/local/bin" "$out/rootfs/var/lib/rolloutd"

# --- build stage -------------------------------------------------------------
# COPY Cargo.toml Cargo.lock ./ ; COPY crates ; COPY migrations ; COPY docs/examples
# (-p keeps the files' times, so a kept target directory stays fresh.)
cp -p Cargo.toml Cargo.lock "$out/src/"
cp -rp crates migrations "$out/src/"
mkdir -p "$out/src/docs" && cp -rp docs/examples "$out/src/docs/"
target=${CARGO_TARGET_DIR:-$out/target}
(cd "$out/src" && CARGO_TARGET_DIR="$target" \
  cargo build --release --locked --bin rolloutd --bin rolloutctl)
# The Dockerfile's strip step, with target/release where the build put it.
(cd "$out/src" && ln -sfn "$target" target && \
  mkdir -p out && for b in rolloutd rolloutctl; do objcopy --only-keep-debug target/release/$b out/$b.debug && objcopy --strip-all --add-gnu-debuglink=out/$b.debug target/release/$b out/$b; done)

# --- runtime stage -----------------------------------------------------------
install -m 0755 "$out/src/out/rolloutd" "$out/src/out/rolloutctl" "$out/rootfs/usr/local/bin/"
echo "rootfs: $out/rootfs ($(du -sh "$out/rootfs" | cut -f1))"
# Shipped without symbols or line tables; those are kept apart.
# (.debug_gdb_scripts is an allocated section Rust adds, not debug info.)
if readelf -S -W "$out/rootfs/usr/local/bin/rolloutd" | grep -qE '\.debug_(info|line|str|abbrev)|\.symtab'; then
  echo "the image's rolloutd is not stripped" >&2
  exit 1
fi
echo "stripped: rolloutd $(du -h "$out/rootfs/usr/local/bin/rolloutd" | cut -f1), symbols apart: $(du -h "$out/src/out/rolloutd.debug" | cut -f1)"

# USER rolloutd (uid 10001) ; WORKDIR /var/lib/rolloutd ; ENV ; CMD ["serve"]
as_user=()
if [ "$(id -u)" = 0 ]; then
  chown -R 10001:10001 "$out/rootfs/var/lib/rolloutd"
  as_user=(setpriv --reuid=10001 --regid=10001 --clear-groups)
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${as_user[@]}" "$out/rootfs/usr/local/bin/rolloutctl" --version

# The image listens on 0.0.0.0 (here on a free port): without its token
# secret it refuses to start.
mkdir -p "$out/secrets"
if env -i PATH=/usr/bin:/bin HOME=/var/lib/rolloutd ROLLOUTD_LISTEN="0.0.0.0:$port" \
    ROLLOUTD_DATABASE_URL="sqlite://$out/rootfs/var/lib/rolloutd/refused.db" \
    "$out/rootfs/usr/local/bin/rolloutd" serve > "$out/refused.log" 2>&1; then
  echo "serve started on 0.0.0.0 without an API token" >&2
  exit 1
fi
grep -q -- "--api-token-file" "$out/refused.log"
echo "refused without a token: $(tail -1 "$out/refused.log" | cut -c1-80)…"
# ENV ROLLOUTD_API_TOKEN_FILE=/run/secrets/rolloutd-api-token: the mounted secret.
head -c 32 /dev/urandom | base64 > "$out/secrets/rolloutd-api-token"
if [ "$(id -u)" = 0 ]; then chown -R 10001:10001 "$out/secrets"; fi
(
  cd "$out/rootfs/var/lib/rolloutd"
  exec env -i PATH=/usr/bin:/bin HOME=/var/lib/rolloutd \
    ROLLOUTD_LISTEN="0.0.0.0:$port" \
    ROLLOUTD_API_TOKEN_FILE="$out/secrets/rolloutd-api-token" \
    ROLLOUTD_DATABASE_URL="sqlite://$out/rootfs/var/lib/rolloutd/rolloutd.db" \
    AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
    "${as_user[@]}" "$out/rootfs/usr/local/bin/rolloutd" serve
) > "$out/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT

# HEALTHCHECK CMD curl -fsS http://127.0.0.1:8080/healthz
healthy=no
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/healthz" > /dev/null 2>&1; then healthy=yes; break; fi
  sleep 0.1
done
if [ "$healthy" != yes ]; then
  echo "the health check failed; serve's log:" >&2
  cat "$out/serve.log" >&2
  exit 1
fi
echo "healthy: curl -fsS http://127.0.0.1:$port/healthz"
owner=$(stat -c %u "$out/rootfs/var/lib/rolloutd/rolloutd.db")
echo "state written as uid $owner"

# docker stop: SIGTERM, then a clean exit.
kill -TERM $pid
for _ in $(seq 1 100); do
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
if kill -0 $pid 2>/dev/null; then
  echo "serve did not stop on SIGTERM" >&2
  exit 1
fi
wait $pid
trap - EXIT
echo "stopped cleanly on SIGTERM"
