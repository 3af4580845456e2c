#!/usr/bin/env bash
# Runs Threadline locally (README set-up command #1): installs nats-server and
# redis-server if missing, starts them on 127.0.0.1:4222 / 127.0.0.1:6379 unless
# something already listens there (config: infra/nats.conf, infra/redis.conf,
# data and logs in .threadline-local/), then runs the demo against them.
# Servers this script started are stopped when it exits. Extra arguments go to
# the demo binary.
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$THREADLINE_ROOT"

ensure_cargo
ensure_packages
ensure_services

log "running threadline-demo"
# Not exec: the EXIT trap must stay to stop the servers started above.
cargo run --quiet -p threadline-tests --bin threadline-demo -- \
  --nats-url nats://127.0.0.1:4222 \
  --redis-url redis://127.0.0.1:6379 \
  "$@"
