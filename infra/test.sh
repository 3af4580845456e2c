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

# Binaries first: end-to-end tests run the real `threadline` binary.
log "cargo build --workspace --bins"
cargo build --workspace --bins

log "cargo test --workspace${*:+ $*}"
cargo test --workspace "$@"
