# rolloutd: a multi-stage build. The first stage needs only crates.io; the
# runtime image is Debian slim with the two binaries, a non-root user and a
# health check.
#
#   docker build -t rolloutd .
#   docker run --rm -p 8080:8080 rolloutd demo --listen 0.0.0.0:8080 --insecure-no-auth
#   docker run -p 8080:8080 -v $PWD/token:/run/secrets/rolloutd-api-token:ro rolloutd
#
# `serve` listens on 0.0.0.0 and so needs the API token: the image reads it
# from /run/secrets/rolloutd-api-token (a Docker or Compose secret, or a
# mounted file), or from ROLLOUTD_API_TOKEN; without one it refuses to start.
#
# scripts/docker-build.sh runs these same steps without a Docker engine (from
# only the files copied here, as user 10001, with the image's environment and
# health check); a test runs it and keeps it in step with this file.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY migrations ./migrations
COPY docs/examples ./docs/examples
RUN cargo build --release --locked --bin rolloutd --bin rolloutctl
# The image gets stripped binaries (27 MB instead of 186 MB); the symbols and
# line tables stay in this stage as out/*.debug (debuglink'd, for gdb or a
# symbolizer: `docker build --target build`, then copy them out).
RUN mkdir -p out && for b in rolloutd rolloutctl; do objcopy --only-keep-debug target/release/$b out/$b.debug && objcopy --strip-all --add-gnu-debuglink=out/$b.debug target/release/$b out/$b; done

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/rolloutd --create-home rolloutd
COPY --from=build /src/out/rolloutd /src/out/rolloutctl /usr/local/bin/
USER rolloutd
WORKDIR /var/lib/rolloutd
ENV ROLLOUTD_LISTEN=0.0.0.0:8080 \
    ROLLOUTD_API_TOKEN_FILE=/run/secrets/rolloutd-api-token \
    ROLLOUTD_DATABASE_URL=sqlite:///var/lib/rolloutd/rolloutd.db
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/rolloutd"]
CMD ["serve"]
