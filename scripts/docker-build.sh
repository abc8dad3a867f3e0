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

# --- runtime stage -----------------------------------------------------------
install -m 0755 "$target/release/rolloutd" "$target/release/rolloutctl" "$out/rootfs/usr/local/bin/"
echo "rootfs: $out/rootfs ($(du -sh "$out/rootfs" | cut -f1))"

# USER rolloutd (uid 10001) ; WORKDIR /var/lib/rolloutd ; ENV ; CMD ["serve"]
as_user=()
if [ "$(id -u)" = 0 ]; then
  chown -R 10001:10001 "$out/rootfs/var/lib/rolloutd"
  as_user=(setpriv --reuid=10001 --regid=10001 --clear-groups)
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${as_user[@]}" "$out/rootfs/usr/local/bin/rolloutctl" --version
(
  cd "$out/rootfs/var/lib/rolloutd"
  # The image listens on 0.0.0.0:8080; here a free local port.
  exec env -i PATH=/usr/bin:/bin HOME=/var/lib/rolloutd \
    ROLLOUTD_LISTEN="127.0.0.1:$port" \
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
