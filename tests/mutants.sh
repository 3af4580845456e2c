#!/bin/bash
# Shows that the pure rule modules' unit tests can fail: cargo-mutants (crates.io) changes
# each rule (a `<` to `<=`, an `&&` to `||`, a return value) and lists every change that no
# unit test notices. Not part of the default test run (it builds once per mutant); run it
# after changing a rule, and add a test for each MISSED line it prints.
#
#   cargo install --locked cargo-mutants
#   tests/mutants.sh                         # every rule module below
#   tests/mutants.sh workers/src/router/decide.rs
#
# It mutates the work tree in place (so the warm target/ is reused) and restores every file
# it touched; do not edit the tree while it runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
  modules=(
    workers/src/router/decide.rs
    workers/src/binder/plan.rs
    workers/src/model/conversation_ids.rs
    workers/src/model/fallback.rs
    workers/src/model/platform_codes.rs
    workers/src/error.rs
    workers/src/render/mod.rs
    workers/src/render/split.rs
  )
fi
for module in "${modules[@]}"; do
  echo "==> cargo mutants on $module (its crate's unit tests)"
  cargo mutants --in-place --package threadline --file "$module" --timeout 120 -- --lib
done
