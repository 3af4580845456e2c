#!/bin/bash
# Counts the instructions the per-worker router and deliverer execute, with callgrind:
# instructions, unlike CPU time, repeat run to run on this shared machine, so a change of a
# few percent in a worker shows. Used as the benchmark's `threadline` binary; every other
# command goes to the real binary untouched (`run all` included). See bench/README.md, "Profiling".
#
#   CARGO_TARGET_DIR=target-prof CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
#     cargo build --release --workspace --bins
#   REAL_BIN=$PWD/target-prof/release/threadline CALLGRIND_OUT=/tmp/cg \
#     THREADLINE_BIN=$PWD/bench/callgrind-workers.sh target-prof/release/threadline-bench \
#     --messages 3000 --runs 1 --max-bindings 10000 --half-load-seconds 2
#   callgrind_annotate --inclusive=yes /tmp/cg/cg.deliver.<pid>
#
# Divide by the posts made (the call count of `Router::effects` in the router's file).
set -euo pipefail
real=${REAL_BIN:?REAL_BIN: the threadline binary to run}
out=${CALLGRIND_OUT:-/tmp}
if [ "${1:-}" = run ] && { [ "${2:-}" = deliver ] || [ "${2:-}" = router ]; }; then
  mkdir -p "$out"
  exec valgrind --tool=callgrind --quiet --callgrind-out-file="$out/cg.$2.%p" "$real" "$@"
fi
exec "$real" "$@"
