"""A small Threadline publisher in Python (nats-py + msgpack), and a CLI around it.

It builds v1 events exactly as `schemas/json/*.schema.json` describes them (MessagePack maps
with string keys, optional fields left out rather than sent as null), publishes them to
JetStream with `Nats-Msg-Id` set to the event id (so a retry of the same logical event is
dropped by the stream), and reads Threadline's `tl.out.*` outcomes back.

Library:

    async with await Publisher.connect(os.environ["THREADLINE_NATS_URL"]) as pub:
        outcomes = await pub.watch_outcomes()          # subscribe before publishing
        spawn = spawn_event("larry", "agent:larry:main", conversation(...), placement="child")
        await pub.publish_spawn(spawn)
        spawned = await outcomes.wait("spawned", spawn["event_id"])

CLI (prints one JSON object on stdout):

    python3 threadline_publisher.py spawn --agent larry --requester-session agent:larry:main \\
        --channel discord --account 1 --conversation 2 --placement child --wait
    python3 threadline_publisher.py completion --session-key agent:larry:subagent:... \\
        --content "done" --wait
    python3 threadline_publisher.py scenario ...   # spawn in a thread, then a completion

Only `tl.in.*` is published; `tl.deliver.*` and `tl.ctl.*` are Threadline's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any, Optional

import msgpack
import nats
from nats.aio.msg import Msg

SCHEMA_VERSION = 1
TRACEPARENT = "traceparent"


# ---------------------------------------------------------------------------------------
# Event builders: one per inbound schema. Optional fields are only set when given, because
# a field with a default (mode, placement, delivery, ...) must not be null.
# ---------------------------------------------------------------------------------------


def new_event_id() -> str:
    """A fresh event id (a UUID string, as the schemas ask)."""
    return str(uuid.uuid4())


def _put(event: dict, **optional: Any) -> dict:
    for key, value in optional.items():
        if value is not None:
            event[key] = value
    return event


def conversation(
    channel: str,
    account_id: str,
    conversation_id: str,
    parent_conversation_id: Optional[str] = None,
) -> dict:
    """A ConversationRef (common.schema.json#/$defs/ConversationRef)."""
    return _put(
        {"channel": channel, "account_id": account_id, "conversation_id": conversation_id},
        parent_conversation_id=parent_conversation_id,
    )


def spawn_event(
    agent_id: str,
    requester_session_key: str,
    requester_conversation: dict,
    *,
    event_id: Optional[str] = None,
    task: Optional[str] = None,
    mode: Optional[str] = None,
    placement: Optional[str] = None,
    label: Optional[str] = None,
    session_key: Optional[str] = None,
    resume_if_exists: Optional[bool] = None,
    delivery: Optional[str] = None,
    fail_closed: Optional[bool] = None,
    idle_timeout_ms: Optional[int] = None,
    max_age_ms: Optional[int] = None,
    thread_name: Optional[str] = None,
    metadata: Optional[dict] = None,
    persona: Optional[dict] = None,
) -> dict:
    """`tl.in.spawn` (spawn.schema.json). `persona` ({"name", "avatar_url"}) is the name and
    picture the session's posts show, where the platform allows it."""
    return _put(
        {
            "v": SCHEMA_VERSION,
            "event_id": event_id or new_event_id(),
            "agent_id": agent_id,
            "requester": {
                "session_key": requester_session_key,
                "conversation": requester_conversation,
            },
        },
        task=task,
        mode=mode,
        placement=placement,
        label=label,
        session_key=session_key,
        resume_if_exists=resume_if_exists,
        delivery=delivery,
        fail_closed=fail_closed,
        idle_timeout_ms=idle_timeout_ms,
        max_age_ms=max_age_ms,
        thread_name=thread_name,
        persona=persona,
        metadata=metadata,
    )


def completion_event(
    session_key: str,
    content: str,
    *,
    status: str = "ok",
    event_id: Optional[str] = None,
    run_id: Optional[str] = None,
    requester: Optional[dict] = None,
    metadata: Optional[dict] = None,
    format: Optional[str] = None,
    mentions: Optional[list] = None,
    reply_to: Optional[str] = None,
) -> dict:
    """`tl.in.completion` (completion.schema.json). `content` is CommonMark unless
    `format="plain"`; `mentions` lists the platform user ids it may notify (`<@ID>`);
    `reply_to` is the platform message it answers (a session input's `message_id`)."""
    return _put(
        {
            "v": SCHEMA_VERSION,
            "event_id": event_id or new_event_id(),
            "session_key": session_key,
            "status": status,
            "content": content,
        },
        run_id=run_id,
        requester=requester,
        metadata=metadata,
        format=format,
        mentions=mentions or None,
        reply_to=reply_to,
    )


def send_event(
    message: str,
    target: dict,
    *,
    event_id: Optional[str] = None,
    from_session_key: Optional[str] = None,
) -> dict:
    """`tl.in.send` (send.schema.json); `target` is `{session_key}`,
    `{label, requester_session_key}` or `{conversation}`."""
    return _put(
        {"v": SCHEMA_VERSION, "event_id": event_id or new_event_id(), "message": message, "target": target},
        from_session_key=from_session_key,
    )


def control_event(op: str, *, event_id: Optional[str] = None, **fields: Any) -> dict:
    """`tl.in.control` (control.schema.json): `unbind`, `touch`, `credentials_rotated`."""
    return _put({"v": SCHEMA_VERSION, "event_id": event_id or new_event_id(), "op": op}, **fields)


def new_traceparent() -> str:
    """A W3C traceparent starting a new sampled trace (version 00)."""
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def encode(event: dict) -> bytes:
    """MessagePack map with string keys; integers stay integers."""
    return msgpack.packb(event, use_bin_type=True)


# ---------------------------------------------------------------------------------------
# Reading outcomes back.
# ---------------------------------------------------------------------------------------


class Outcomes:
    """Every `tl.out.*` message seen since the subscription, decoded, with its headers."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self.seen: list[dict] = []
        self._changed = asyncio.Event()

    async def _on_message(self, msg: Msg) -> None:
        try:
            payload = msgpack.unpackb(msg.data, raw=False)
        except Exception as error:  # not ours to judge: keep it visible
            payload = {"undecodable": str(error)}
        kind = msg.subject[len(self._prefix) + len(".out."):]
        self.seen.append({"kind": kind, "subject": msg.subject, "headers": dict(msg.headers or {}), "event": payload})
        self._changed.set()

    def find(self, kind: str, predicate) -> Optional[dict]:
        for item in self.seen:
            if item["kind"] == kind and predicate(item["event"]):
                return item
        return None

    async def wait_for(self, kind: str, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(kind, predicate)
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no tl.out.{kind} matching within {timeout}s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait(self, kind: str, event_id: str, timeout: float = 30.0) -> dict:
        """The first `tl.out.<kind>` answering `event_id`."""
        return await self.wait_for(kind, lambda e: e.get("event_id") == event_id, timeout)


class Publisher:
    """A NATS connection publishing Threadline events to JetStream."""

    def __init__(self, nc, prefix: str) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.prefix = prefix

    @classmethod
    async def connect(cls, url: str, prefix: str = "tl") -> "Publisher":
        return cls(await nats.connect(url, name="threadline-python-publisher"), prefix)

    async def __aenter__(self) -> "Publisher":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.nc.drain()

    async def publish(self, subject_suffix: str, event: dict, traceparent: Optional[str] = None):
        """Publishes to `<prefix>.in.<suffix>` and waits for the stream's ack (a PubAck;
        `duplicate` is true when JetStream dropped it as a re-publish of the same id)."""
        headers = {"Nats-Msg-Id": event["event_id"]}
        if traceparent:
            headers[TRACEPARENT] = traceparent
        return await self.js.publish(f"{self.prefix}.in.{subject_suffix}", encode(event), headers=headers)

    async def publish_spawn(self, event: dict, traceparent: Optional[str] = None):
        return await self.publish("spawn", event, traceparent)

    async def publish_completion(self, event: dict, traceparent: Optional[str] = None):
        return await self.publish("completion", event, traceparent)

    async def publish_send(self, event: dict, traceparent: Optional[str] = None):
        return await self.publish("send", event, traceparent)

    async def publish_control(self, event: dict, traceparent: Optional[str] = None):
        return await self.publish("control", event, traceparent)

    async def watch_outcomes(self) -> Outcomes:
        """Subscribes to `<prefix>.out.>`; call it before publishing what you wait for."""
        outcomes = Outcomes(self.prefix)
        await self.nc.subscribe(f"{self.prefix}.out.>", cb=outcomes._on_message)
        await self.nc.flush()
        return outcomes


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def _requester(args) -> dict:
    return conversation(args.channel, args.account, args.conversation, args.parent_conversation)


async def _cmd_spawn(pub: Publisher, args) -> dict:
    outcomes = await pub.watch_outcomes() if args.wait else None
    event = spawn_event(
        args.agent,
        args.requester_session,
        _requester(args),
        mode=args.mode,
        placement=args.placement,
        label=args.label,
        thread_name=args.thread_name,
        task=args.task,
    )
    ack = await pub.publish_spawn(event, args.traceparent)
    result = {"event": event, "stream_seq": ack.seq, "duplicate": bool(ack.duplicate)}
    if outcomes is not None:
        result["spawned"] = (await outcomes.wait("spawned", event["event_id"], args.timeout))["event"]
    return result


async def _cmd_completion(pub: Publisher, args) -> dict:
    outcomes = await pub.watch_outcomes() if args.wait else None
    event = completion_event(
        args.session_key,
        args.content,
        status=args.status,
        format=args.format,
        mentions=args.mentions,
        reply_to=args.reply_to,
    )
    ack = await pub.publish_completion(event, args.traceparent)
    result = {"event": event, "stream_seq": ack.seq, "duplicate": bool(ack.duplicate)}
    if outcomes is not None:
        result["delivered"] = (await outcomes.wait("delivered", event["event_id"], args.timeout))["event"]
    return result


async def _cmd_scenario(pub: Publisher, args) -> dict:
    """Spawns a `mode: session` child bound to a new thread under the requester's
    conversation, waits until it is bound, reports a completion, and waits for its
    delivery. Publishes the completion twice with the same id: the stream drops the second."""
    outcomes = await pub.watch_outcomes()
    spawn = spawn_event(
        args.agent,
        args.requester_session,
        _requester(args),
        mode="session",
        placement="child",
        thread_name=args.thread_name or "python publisher",
        task="say hello from Python",
    )
    await pub.publish_spawn(spawn)
    spawned = (await outcomes.wait("spawned", spawn["event_id"], args.timeout))["event"]
    session_key = spawned["session_key"]
    bound = await outcomes.wait_for(
        "binding",
        lambda e: e.get("change") == "bound" and e.get("binding", {}).get("target_session_key") == session_key,
        args.timeout,
    )
    traceparent = args.traceparent or new_traceparent()
    completion = completion_event(session_key, args.content, run_id="python-run-1")
    first = await pub.publish_completion(completion, traceparent)
    again = await pub.publish_completion(completion, traceparent)
    delivered = await outcomes.wait("delivered", completion["event_id"], args.timeout)
    return {
        "spawn_event_id": spawn["event_id"],
        "completion_event_id": completion["event_id"],
        "session_key": session_key,
        "spawned": spawned,
        "binding": bound["event"],
        "delivered": delivered["event"],
        "delivered_traceparent": delivered["headers"].get(TRACEPARENT),
        "sent_traceparent": traceparent,
        "completion_duplicate_dropped": bool(again.duplicate) and not bool(first.duplicate),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # No built-in address: the tests run their own servers on free ports, and a script
    # aimed at the wrong deployment should fail, not publish to whatever listens locally.
    parser.add_argument(
        "--nats",
        default=os.environ.get("THREADLINE_NATS_URL"),
        required="THREADLINE_NATS_URL" not in os.environ,
        help="NATS URL (default: $THREADLINE_NATS_URL)",
    )
    parser.add_argument("--prefix", default=os.environ.get("THREADLINE_SUBJECT_PREFIX", "tl"))
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each outcome")
    parser.add_argument("--traceparent", help="W3C traceparent to publish with (default: none; scenario: a new one)")
    commands = parser.add_subparsers(dest="command", required=True)

    def requester_flags(p):
        p.add_argument("--agent", required=True)
        p.add_argument("--requester-session", required=True)
        p.add_argument("--channel", required=True)
        p.add_argument("--account", required=True)
        p.add_argument("--conversation", required=True)
        p.add_argument("--parent-conversation")
        p.add_argument("--thread-name")

    spawn = commands.add_parser("spawn", help="publish tl.in.spawn")
    requester_flags(spawn)
    spawn.add_argument("--mode", choices=["run", "session"])
    spawn.add_argument("--placement", choices=["none", "child", "current"])
    spawn.add_argument("--label")
    spawn.add_argument("--task")
    spawn.add_argument("--wait", action="store_true", help="wait for tl.out.spawned")

    completion = commands.add_parser("completion", help="publish tl.in.completion")
    completion.add_argument("--session-key", required=True)
    completion.add_argument("--content", required=True)
    completion.add_argument("--status", default="ok", choices=["ok", "error", "timeout"])
    completion.add_argument("--format", choices=["markdown", "plain"])
    completion.add_argument(
        "--mention", action="append", dest="mentions", help="a user id it may notify"
    )
    completion.add_argument("--reply-to", help="the platform message it answers")
    completion.add_argument("--wait", action="store_true", help="wait for tl.out.delivered")

    scenario = commands.add_parser("scenario", help="spawn a child in a thread, then a completion")
    requester_flags(scenario)
    scenario.add_argument("--content", default="Hello from the Python publisher.")
    return parser


async def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    pub = await Publisher.connect(args.nats, args.prefix)
    try:
        run = {"spawn": _cmd_spawn, "completion": _cmd_completion, "scenario": _cmd_scenario}[args.command]
        result = await run(pub, args)
    except TimeoutError as error:
        print(json.dumps({"error": str(error)}), flush=True)
        return 2
    finally:
        await pub.close()
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
