"""Unit check of the Python publisher against the published contract (no NATS needed):
events built by the library validate against `schemas/json/`, and rebuilding every inbound
fixture with the builders gives the fixture back, in MessagePack too.

    target/py-venv/bin/python -m unittest discover -s tests/python
"""

import glob
import json
import os
import unittest

import msgpack
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

import threadline_publisher as tp

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCHEMAS = os.path.join(ROOT, "schemas", "json")
FIXTURES = os.path.join(ROOT, "schemas", "fixtures")


def _registry() -> Registry:
    resources = []
    for path in glob.glob(os.path.join(SCHEMAS, "*.schema.json")):
        with open(path) as f:
            schema = json.load(f)
        resource = Resource.from_contents(schema)
        # Schemas refer to each other by file name, relative to their `$id`.
        resources.append((schema["$id"], resource))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def validator(name: str) -> Draft202012Validator:
    with open(os.path.join(SCHEMAS, f"{name}.schema.json")) as f:
        return Draft202012Validator(json.load(f), registry=REGISTRY)


def fixtures(name: str):
    paths = glob.glob(os.path.join(FIXTURES, f"{name}.json")) + glob.glob(os.path.join(FIXTURES, f"{name}.*.json"))
    for path in sorted(paths):
        with open(path) as f:
            event = json.load(f)
        with open(path[: -len(".json")] + ".msgpack", "rb") as f:
            packed = f.read()
        yield os.path.basename(path), event, packed


def rebuild(name: str, e: dict) -> dict:
    """The fixture's event, made by the library's builder from its fields."""
    optional = {k: v for k, v in e.items() if k not in ("v",)}
    if name == "spawn":
        requester = optional.pop("requester")
        return tp.spawn_event(
            optional.pop("agent_id"), requester["session_key"], requester["conversation"], **optional
        )
    if name == "completion":
        return tp.completion_event(optional.pop("session_key"), optional.pop("content"), **optional)
    if name == "send":
        return tp.send_event(optional.pop("message"), optional.pop("target"), **optional)
    if name == "control":
        return tp.control_event(optional.pop("op"), **optional)
    raise AssertionError(name)


class ContractTest(unittest.TestCase):
    def test_built_events_validate_against_their_schemas(self):
        discord = tp.conversation("discord", "1187342901234567890", "1190011223344556677")
        spawn = tp.spawn_event("larry", "agent:larry:main", discord, mode="session", placement="child")
        validator("spawn").validate(spawn)
        completion = tp.completion_event("agent:larry:subagent:x", "done", run_id="r1")
        validator("completion").validate(completion)
        validator("send").validate(tp.send_event("hi", {"session_key": "agent:larry:subagent:x"}))
        validator("control").validate(tp.control_event("unbind", session_key="agent:larry:subagent:x"))
        # Optional fields left out are absent, never null (defaults must not be null).
        self.assertNotIn("label", spawn)
        self.assertNotIn("requester", completion)

    def test_rebuilt_fixtures_equal_the_published_ones(self):
        checked = 0
        for name in ("spawn", "completion", "send", "control"):
            for file, event, packed in fixtures(name):
                built = rebuild(name, event)
                self.assertEqual(built, event, file)
                validator(name).validate(built)
                # Same MessagePack content (map order of `metadata` may differ).
                self.assertEqual(msgpack.unpackb(tp.encode(built), raw=False), msgpack.unpackb(packed, raw=False), file)
                checked += 1
        self.assertGreaterEqual(checked, 8)

    def test_invalid_events_are_refused_by_the_schemas(self):
        bad = tp.spawn_event("larry", "agent:larry:main", tp.conversation("discord", "a", "b"))
        del bad["requester"]
        self.assertFalse(validator("spawn").is_valid(bad))
        self.assertFalse(validator("completion").is_valid(tp.completion_event("k", "c", status="fine")))

    def test_traceparent_is_w3c_shaped(self):
        parts = tp.new_traceparent().split("-")
        self.assertEqual([len(p) for p in parts], [2, 32, 16, 2])


if __name__ == "__main__":
    unittest.main()
