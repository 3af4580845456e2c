#!/usr/bin/env bash
# Builds and tests Threadline (README set-up command #2; CI runs this through
# .ci/run). Installs nats-server and redis-server if missing; the tests start
# their own servers on free loopback ports, so nothing is started here and
# nothing needs to be running. Extra arguments go to `cargo test`.
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$THREADLINE_ROOT"

ensure_cargo
ensure_packages
# The Python publisher's end-to-end test (tests/tests/python.rs) runs with THREADLINE_PYTHON.
ensure_python_env
# The Matrix adapter's tests (tests/tests/matrix.rs) start Synapse from THREADLINE_SYNAPSE_PYTHON.
ensure_synapse_env

# Binaries first: end-to-end tests run the real `threadline` binary.
log "cargo build --workspace --bins"
cargo build --workspace --bins

# The compose file's environment-only configuration, loaded by the binary just built
# (no Docker needed). PyYAML from apt when the python3 on PATH lacks it.
log "infra/check-compose.py: compose.yaml's environment loads with \`threadline config\`"
compose_python=python3
if ! python3 -c 'import yaml' 2>/dev/null; then
  if ! /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
    [[ $_THREADLINE_APT_UPDATED == true ]] || _as_root apt-get update
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-yaml
  fi
  compose_python=/usr/bin/python3
fi
threadline_bin="${CARGO_TARGET_DIR:-target}/debug/threadline"
"$compose_python" infra/check-compose.py "$threadline_bin" infra/compose.yaml
"$compose_python" infra/check-compose.py "$threadline_bin" infra/compose.yaml infra/cluster/compose.yaml
# The cluster node config, as nats-server 2.9 reads it.
NATS_SERVER_NAME=nats-1 "$(find_server nats-server)" -c infra/cluster/nats.conf -t

log "cargo test --workspace${*:+ $*}"
cargo test --workspace "$@"
