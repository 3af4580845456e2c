#!/usr/bin/env bash
# Shared helpers for infra/*.sh and .ci/run: install nats-server and redis-server,
# and start local ones for the demo. Meant to be sourced by a script that has
# already run `set -euo pipefail`.
#
# Functions:
#   ensure_cargo      fail early with a clear message if cargo is missing
#   ensure_packages   apt-get install nats-server redis-server if either is missing
#   ensure_services   start NATS on 127.0.0.1:4222 and Redis on 127.0.0.1:6379
#                     unless something already listens there; the servers started
#                     here are stopped (by PID) when the sourcing script exits
#   ensure_python_env  a venv at target/py-venv with tests/python/requirements.txt
#                     (apt-installs python3-venv if needed; falls back to
#                     pip install --user); exports THREADLINE_PYTHON for the tests
#   ensure_synapse_env  a venv at target/synapse-venv with tests/python/synapse-requirements.txt
#                     (Synapse, the Matrix homeserver the Matrix tests start); exports
#                     THREADLINE_SYNAPSE_PYTHON for the tests

# Repository root, whatever the caller's working directory.
THREADLINE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Data and logs of the local servers (git-ignored).
THREADLINE_LOCAL_DIR="$THREADLINE_ROOT/.threadline-local"

# PIDs of the servers ensure_services started; only these are ever stopped.
_THREADLINE_STARTED_PIDS=()
_THREADLINE_STARTED_NAMES=()
# apt-get update runs at most once per script.
_THREADLINE_APT_UPDATED=false

log() { printf '==> %s\n' "$*" >&2; }
fail() {
  printf 'error: %s\n' "$*" >&2
  return 1
}

# Prints the path of a server binary: PATH first, then the sbin/bin dirs a
# non-root PATH often lacks (Debian puts nats-server in /usr/sbin).
find_server() {
  local name=$1 dir
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    return 0
  fi
  for dir in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
    if [[ -x "$dir/$name" ]]; then
      printf '%s\n' "$dir/$name"
      return 0
    fi
  done
  return 1
}

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || fail "cargo not found: install Rust from https://rustup.rs"
}

# Runs a command as root: directly when root, else through sudo.
_as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    fail "need root to run '$*' and sudo is not installed"
  fi
}

ensure_packages() {
  local missing=() name
  for name in nats-server redis-server; do
    find_server "$name" >/dev/null || missing+=("$name")
  done
  if ((${#missing[@]} == 0)); then
    log "nats-server and redis-server are installed"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 ||
    fail "${missing[*]} missing and apt-get not available: install nats-server (2.9+) and redis-server (7+) yourself"
  if [[ $_THREADLINE_APT_UPDATED == false ]]; then
    log "${missing[*]} missing: running apt-get update"
    _as_root apt-get update
    _THREADLINE_APT_UPDATED=true
  fi
  log "running apt-get install -y nats-server redis-server"
  _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server redis-server
  for name in nats-server redis-server; do
    find_server "$name" >/dev/null || fail "$name still not found after apt-get install"
  done
}

# Installs Debian packages "$@" (apt-get update at most once per script).
_apt_install() {
  command -v apt-get >/dev/null 2>&1 || fail "$* missing and apt-get not available"
  if [[ $_THREADLINE_APT_UPDATED == false ]]; then
    log "running apt-get update"
    _as_root apt-get update
    _THREADLINE_APT_UPDATED=true
  fi
  log "running apt-get install -y $*"
  _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

ensure_python_env() {
  local venv="$THREADLINE_ROOT/target/py-venv"
  local requirements="tests/python/requirements.txt"
  local stamp="$venv/.requirements.sha256"
  command -v python3 >/dev/null 2>&1 || _apt_install python3 python3-venv
  if [[ ! -x "$venv/bin/pip" ]]; then
    rm -rf "$venv"
    # Debian's python3 has no venv/ensurepip without the python3-venv package.
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      rm -rf "$venv"
      _apt_install python3-venv || log "could not install python3-venv"
      if ! python3 -m venv "$venv"; then
        rm -rf "$venv"
        log "no venv possible: pip install --user -r $requirements"
        python3 -m pip install --user --disable-pip-version-check -q -r "$THREADLINE_ROOT/$requirements" ||
          python3 -m pip install --user --break-system-packages --disable-pip-version-check -q -r "$THREADLINE_ROOT/$requirements"
        export THREADLINE_PYTHON
        THREADLINE_PYTHON="$(command -v python3)"
        return 0
      fi
    fi
  fi
  # Reinstall only when the pinned requirements changed.
  if ! (cd "$THREADLINE_ROOT" && sha256sum --status -c "$stamp" 2>/dev/null); then
    log "installing $requirements into ${venv#"$THREADLINE_ROOT/"}"
    "$venv/bin/pip" install --disable-pip-version-check -q -r "$THREADLINE_ROOT/$requirements"
    (cd "$THREADLINE_ROOT" && sha256sum "$requirements" >"$stamp")
  fi
  export THREADLINE_PYTHON="$venv/bin/python"
  log "Python publisher environment: $THREADLINE_PYTHON"
}

# Synapse for the Matrix adapter's tests (tests/src/synapse.rs): its own venv, so its
# pinned dependencies never meet the publisher's. No --user fallback: Synapse's dependency
# set would overwrite a user's own packages.
ensure_synapse_env() {
  local venv="$THREADLINE_ROOT/target/synapse-venv"
  local requirements="tests/python/synapse-requirements.txt"
  local stamp="$venv/.requirements.sha256"
  command -v python3 >/dev/null 2>&1 || _apt_install python3 python3-venv
  if [[ ! -x "$venv/bin/pip" ]]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      rm -rf "$venv"
      _apt_install python3-venv
      python3 -m venv "$venv" || fail "cannot create the Synapse venv at $venv"
    fi
  fi
  if ! (cd "$THREADLINE_ROOT" && sha256sum --status -c "$stamp" 2>/dev/null); then
    log "installing $requirements into ${venv#"$THREADLINE_ROOT/"}"
    "$venv/bin/pip" install --disable-pip-version-check -q -r "$THREADLINE_ROOT/$requirements"
    (cd "$THREADLINE_ROOT" && sha256sum "$requirements" >"$stamp")
  fi
  export THREADLINE_SYNAPSE_PYTHON="$venv/bin/python"
  log "Synapse environment: $THREADLINE_SYNAPSE_PYTHON ($("$venv/bin/python" -c 'import synapse; print(synapse.__version__)'))"
}

# Succeeds if something accepts TCP connections on 127.0.0.1:$1.
_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints the first line of a reply to $2 (a request) sent to 127.0.0.1:$1.
_tcp_ask() {
  local port=$1 request=$2
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf '%b' "$request" >&3
    timeout 2 head -n 1 <&3
  ) 2>/dev/null
}

_nats_ready() {
  [[ $(_tcp_ask 8222 'GET /healthz HTTP/1.0\r\n\r\n') == *" 200 "* ]] && _port_open 4222
}

_redis_ready() {
  # -LOADING until the AOF is replayed, +PONG after.
  [[ $(_tcp_ask 6379 'PING\r\n') == "+PONG"* ]]
}

# Starts "$@" in the background from the repository root (the configs use
# relative paths), output to $log_file, and records its PID.
_start_server() {
  local name=$1 log_file=$2
  shift 2
  log "starting $name: $* (log: ${log_file#"$THREADLINE_ROOT/"})"
  printf '==> %s: starting %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*" >>"$log_file"
  (cd "$THREADLINE_ROOT" && exec "$@") >>"$log_file" 2>&1 </dev/null &
  _THREADLINE_STARTED_PIDS+=("$!")
  _THREADLINE_STARTED_NAMES+=("$name")
  log "$name started with PID $!"
}

# Waits up to 15 s for a server this script started: name, PID, readiness check, log file.
_wait_ready() {
  local name=$1 pid=$2 check=$3 log_file=$4
  local deadline=$((SECONDS + 15))
  while ((SECONDS < deadline)); do
    if "$check"; then
      log "$name is ready"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log_file" >&2 || true
      fail "$name (PID $pid) exited during start-up; log above"
      return 1
    fi
    sleep 0.1
  done
  tail -n 20 "$log_file" >&2 || true
  fail "$name (PID $pid) did not become ready within 15 s; log above"
}

# Stops the servers this script started, by their recorded PIDs: SIGTERM for a
# clean shutdown (Redis flushes its AOF), SIGKILL after 10 s.
_stop_started_servers() {
  local i pid name tries
  for i in "${!_THREADLINE_STARTED_PIDS[@]}"; do
    pid=${_THREADLINE_STARTED_PIDS[$i]}
    name=${_THREADLINE_STARTED_NAMES[$i]}
    kill -0 "$pid" 2>/dev/null || continue
    log "stopping $name (PID $pid)"
    kill -TERM "$pid" 2>/dev/null || continue
    for ((tries = 0; tries < 100; tries++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (PID $pid) ignored SIGTERM for 10 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  _THREADLINE_STARTED_PIDS=()
  _THREADLINE_STARTED_NAMES=()
}

ensure_services() {
  local nats_bin redis_bin pid
  mkdir -p "$THREADLINE_LOCAL_DIR/nats" "$THREADLINE_LOCAL_DIR/redis"
  # Installed before anything starts, so even a failed start-up cleans up.
  trap _stop_started_servers EXIT
  # Make Ctrl-C and SIGTERM exit through the EXIT trap.
  trap 'exit 130' INT
  trap 'exit 143' TERM

  if _port_open 4222; then
    log "something already listens on 127.0.0.1:4222; using it as NATS"
  else
    nats_bin=$(find_server nats-server) || fail "nats-server not found: run ensure_packages first"
    _start_server nats-server "$THREADLINE_LOCAL_DIR/nats.log" "$nats_bin" -c infra/nats.conf
    pid=${_THREADLINE_STARTED_PIDS[-1]}
    _wait_ready nats-server "$pid" _nats_ready "$THREADLINE_LOCAL_DIR/nats.log"
  fi

  if _port_open 6379; then
    log "something already listens on 127.0.0.1:6379; using it as Redis"
  else
    redis_bin=$(find_server redis-server) || fail "redis-server not found: run ensure_packages first"
    _start_server redis-server "$THREADLINE_LOCAL_DIR/redis.log" "$redis_bin" infra/redis.conf
    pid=${_THREADLINE_STARTED_PIDS[-1]}
    _wait_ready redis-server "$pid" _redis_ready "$THREADLINE_LOCAL_DIR/redis.log"
  fi
}
