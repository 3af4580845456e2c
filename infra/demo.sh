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

# The same build as infra/test.sh, before any server is started; the demo is then given
# the `threadline` binary just built (THREADLINE_BIN) and builds nothing itself. A first
# build takes minutes on a small machine: say so before cargo goes quiet on a long crate,
# and let cargo show its progress whenever there is something to build.
bin_dir="${CARGO_TARGET_DIR:-target}/debug"
demo_bin="$bin_dir/threadline-demo"
if [[ ! -x $demo_bin || ! -x $bin_dir/threadline ]]; then
  log "compiling Threadline (first run: several minutes)…"
  cargo build --workspace --bins
elif [[ -n $(find Cargo.toml Cargo.lock schemas workers tests \
  -newer "$demo_bin" \( -name '*.rs' -o -name '*.toml' -o -name '*.lua' -o -name '*.json' \) \
  -print -quit) ]]; then
  log "compiling Threadline (sources changed since the last build)…"
  cargo build --workspace --bins
else
  cargo build --quiet --workspace --bins
fi

ensure_services

log "running threadline-demo"
# Not exec: the EXIT trap must stay to stop the servers started above.
THREADLINE_BIN="$bin_dir/threadline" "$demo_bin" \
  --nats-url nats://127.0.0.1:4222 \
  --redis-url redis://127.0.0.1:6379 \
  "$@"
