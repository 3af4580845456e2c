#!/usr/bin/env python3
"""Checks infra/compose.yaml without Docker (Docker Hub is not needed, nothing is pulled):

- every Threadline service loads its configuration from its environment alone: the
  `threadline` binary is run as `threadline config` with exactly that environment;
- every THREADLINE_* variable there is a setting Threadline reads (Threadline ignores
  variables that are not settings, so a misspelt one would silently do nothing): the
  variable is poisoned and the result must change (a parse error or a different value);
- every worker sees the same configuration (binder and router decide by the channels the
  deliverers serve), and each deliverer's channel is enabled;
- workers can be scaled (no fixed container name, no published port), NATS keeps
  JetStream on a volume and Redis runs with the AOF fsynced on every write.

Usage: infra/check-compose.py <threadline binary> [compose file [overlay ...]]
e.g.   infra/check-compose.py target/debug/threadline infra/compose.yaml infra/cluster/compose.yaml
"""

import subprocess
import sys
from pathlib import Path

try:
    import yaml
except ImportError:
    sys.exit("check-compose: PyYAML is missing (apt-get install python3-yaml)")

ROOT = Path(__file__).resolve().parent.parent
POISON = "{{not-a-value"


def fail(message):
    sys.exit(f"check-compose: {message}")


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    for key, value in env.items():
        if not isinstance(value, str):
            fail(f"{key} must be a quoted string in compose.yaml, not {value!r}")
        if "${" in value:
            fail(f"{key}: interpolation would make the check depend on the host: {value}")
    return env


def threadline_config(binary, env):
    # Exactly the service's variables: no THREADLINE_CONFIG, no config file.
    run = subprocess.run(
        [binary, "config"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return run.returncode, run.stdout + run.stderr


def merge(base, overlay):
    """What `docker compose -f base -f overlay` does for the keys used here: services are
    merged key by key, `environment` maps variable by variable."""
    merged = dict(base)
    services = {name: dict(service) for name, service in base.get("services", {}).items()}
    for name, service in (overlay.get("services") or {}).items():
        target = services.setdefault(name, {})
        for key, value in service.items():
            if key == "environment" and isinstance(target.get(key), dict):
                target[key] = {**target[key], **value}
            else:
                target[key] = value
    merged["services"] = services
    return merged


def mounted_file(compose_dir, service, target):
    for volume in service.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        if rest.split(":")[0] == target:
            return compose_dir / source
    fail(f"nothing is mounted at {target}")


def platform_block(config_text, platform):
    start = config_text.find(f"    {platform}: PlatformConfig {{")
    if start < 0:
        fail(f"no {platform} section in `threadline config` output")
    return config_text[start : config_text.find("\n    },", start)]


def main():
    if len(sys.argv) < 2:
        fail("usage: check-compose.py <threadline binary> [compose file]")
    binary = sys.argv[1]
    files = [Path(f) for f in sys.argv[2:]] or [ROOT / "infra/compose.yaml"]
    compose = {}
    for file in files:
        compose = merge(compose, yaml.safe_load(file.read_text()))
    compose_dir = files[0].resolve().parent
    services = compose["services"]

    workers = {n: s for n, s in services.items() if s.get("image", "").startswith("threadline")}
    if not {"binder", "router"} <= workers.keys():
        fail("binder and router must be services of their own")
    configs = {}
    for name, service in workers.items():
        if "container_name" in service or "ports" in service:
            fail(f"{name}: container_name or published ports stop `--scale {name}=N`")
        env = environment(service)
        code, output = threadline_config(binary, env)
        if code != 0:
            fail(f"{name}: `threadline config` failed with its environment:\n{output}")
        for key in (k for k in env if k.startswith("THREADLINE_")):
            poisoned_code, poisoned = threadline_config(binary, {**env, key: POISON})
            if poisoned_code == 0 and poisoned == output:
                fail(f"{name}: {key} is not a Threadline setting (it changes nothing)")
        for key, value in env.items():
            if key.startswith("THREADLINE_") and value not in output and key.endswith("_URL"):
                fail(f"{name}: {key}={value} does not show in the configuration")
        command = service.get("command") or []
        if command[:2] == ["run", "deliver"]:
            channel = command[2]
            if channel.startswith("webhook:"):
                if f'"{channel[len("webhook:"):]}": WebhookConfig' not in output:
                    fail(f"{name}: {channel} is not configured")
            else:
                block = platform_block(output, channel)
                if "token: <redacted>" not in block and "token_file: Some(" not in block:
                    fail(f"{name}: {channel} has no token or token_file: the deliverer would not start")
        configs[name] = output
    distinct = {output for output in configs.values()}
    if len(distinct) != 1:
        fail(f"workers see different configurations: {sorted(configs)}")

    nats_nodes = [n for n in services if n == "nats" or n.startswith("nats-")]
    for name in nats_nodes:
        node = services[name]
        if not any(str(v).endswith(":/data") for v in node.get("volumes", [])):
            fail(f"{name}: JetStream's store (/data) must be a volume")
        nats_conf = mounted_file(compose_dir, node, "/etc/nats/nats.conf").read_text()
        if "jetstream" not in nats_conf or "store_dir: /data" not in nats_conf:
            fail(f"{name}: its nats.conf must enable JetStream with its store in /data")
    replicas = [environment(w).get("THREADLINE_STREAM_REPLICAS", "1") for w in workers.values()]
    if len(nats_nodes) >= 3 and set(replicas) != {"3"}:
        fail(f"{len(nats_nodes)} NATS nodes: THREADLINE_STREAM_REPLICAS should be 3, not {replicas}")
    redis_command = " ".join(services["redis"]["command"])
    for flag in ("--appendonly yes", "--appendfsync always"):
        if flag not in redis_command:
            fail(f"redis: {flag} is required (docs/operating.md)")
    if not any(str(v).endswith(":/data") for v in services["redis"].get("volumes", [])):
        fail("redis: the AOF directory (/data) must be a volume")

    summary = ", ".join(
        line.strip().rstrip(",")
        for line in next(iter(distinct)).splitlines()
        if line.strip().startswith(("nats_url:", "stream_replicas:", "redis_url:"))
    )
    names = " + ".join(str(f) for f in files)
    print(f"check-compose: {names}: {len(workers)} Threadline services load their environment ({summary})")


if __name__ == "__main__":
    main()
