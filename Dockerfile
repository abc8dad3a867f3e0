# rolloutd: a multi-stage build. The first stage needs only crates.io; the
# runtime image is Debian slim with the two binaries, a non-root user and a
# health check.
#
# Not built in this repository's CI (no Docker engine there); issue 8 adds a
# tested build script.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY migrations ./migrations
RUN cargo build --release --locked --bin rolloutd --bin rolloutctl

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/rolloutd --create-home rolloutd
COPY --from=build /src/target/release/rolloutd /src/target/release/rolloutctl /usr/local/bin/
USER rolloutd
WORKDIR /var/lib/rolloutd
ENV ROLLOUTD_LISTEN=0.0.0.0:8080 \
    ROLLOUTD_DATABASE_URL=sqlite:///var/lib/rolloutd/rolloutd.db
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/rolloutd"]
CMD ["serve"]
