# syntax=docker/dockerfile:1
# The `threadline` image: one binary, CA certificates, a non-root user. Every worker runs
# from it (`run binder`, `run router`, `run deliver <channel>`, or `run all`), configured
# by THREADLINE_* environment variables (docs/operating.md).
#
#   docker build -t threadline .

# ---- build --------------------------------------------------------------------------
# Debian bookworm on both stages: the binary links glibc dynamically (and nothing else:
# TLS is rustls), so build and runtime must agree on it.
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace: cargo needs every member's manifest, even for one package.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p threadline --bin threadline \
    && install -m 0755 target/release/threadline /usr/local/bin/threadline

# ---- run ----------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin threadline
COPY --from=build /usr/local/bin/threadline /usr/local/bin/threadline
USER 10001:10001
# Inside a container the health server must listen beyond loopback; JSON logs for the
# collector. Both can be overridden like any other setting.
ENV THREADLINE_HEALTH_ADDR=0.0.0.0:9090 \
    THREADLINE_LOG_FORMAT=json
EXPOSE 9090
# No curl in the slim base: bash's /dev/tcp asks /healthz (alive) directly.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# SIGTERM drains in-flight work (drain_timeout_ms, 20 s by default): give it that long.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/threadline"]
CMD ["run", "all"]
