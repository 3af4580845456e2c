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

Usage: infra/check-compose.py <path to the threadline binary> [compose file]
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


def platform_block(config_text, platform):
    start = config_text.find(f"    {platform}: PlatformConfig {{")
    if start < 0:
        fail(f"no {platform} section in `threadline config` output")
    return config_text[start : config_text.find("\n    },", start)]


def main():
    if len(sys.argv) < 2:
        fail("usage: check-compose.py <threadline binary> [compose file]")
    binary = sys.argv[1]
    compose_file = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "infra/compose.yaml"
    compose = yaml.safe_load(compose_file.read_text())
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

    nats = services["nats"]
    if not any(str(v).endswith(":/data") for v in nats.get("volumes", [])):
        fail("nats: JetStream's store (/data) must be a volume")
    nats_conf = (compose_file.parent / "compose/nats.conf").read_text()
    if "jetstream" not in nats_conf or "store_dir: /data" not in nats_conf:
        fail("nats: compose/nats.conf must enable JetStream with its store in /data")
    redis_command = " ".join(services["redis"]["command"])
    for flag in ("--appendonly yes", "--appendfsync always"):
        if flag not in redis_command:
            fail(f"redis: {flag} is required (README: Operating Threadline)")
    if not any(str(v).endswith(":/data") for v in services["redis"].get("volumes", [])):
        fail("redis: the AOF directory (/data) must be a volume")

    print(f"check-compose: {len(workers)} Threadline services load their environment-only configuration")


if __name__ == "__main__":
    main()
