"""The Celery message for ``tasklift.run(task_id)``, built once per task and pushed with one LPUSH.

Celery's ``send_task`` costs ~0.5 ms of Python per message on the submit path (producer pool,
routing-table lookups in Redis, kombu's message assembly) for a message whose shape never changes:
one task name, one string argument. So tasklift builds the same bytes itself: task protocol 2, JSON
body, base64 body encoding, exactly as kombu's Redis transport stores them (``LPUSH <queue>``; the
worker pops from the same list). Fields follow Celery's ``amqp.as_task_v2`` and kombu's
``Channel.basic_publish``; ``tests/integration/test_wire.py`` compares the result with what Celery itself
produces, so a Celery upgrade that changes the format fails there first.

The message's ``delivery_info`` names the default exchange (``""``) and the queue as routing key,
as Celery's own messages to an auto-created queue do: kombu restores an unacked message to
``routing_key`` (visibility timeout, worker lost), so redelivery goes back to the task's queue.
"""

from __future__ import annotations

import base64
import itertools
import os
import secrets
import socket
import uuid
from collections.abc import Iterator
from functools import cache
from typing import Any

import orjson

from tasklift.tasks.registry import get_task_type

TASK_NAME = "tasklift.run"
#: Celery's embed part of protocol 2 (no callbacks, chain or chord).
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@cache
def _origin(pid: int) -> str:
    return f"gen{pid}@{socket.gethostname()}"


@cache
def _reply_to(pid: int) -> str:
    return str(uuid.uuid4())  # results are ignored; Celery puts its app's oid here


def time_limits(task_type: str) -> tuple[int | None, int | None]:
    """(hard, soft) seconds for ``task_type``: soft = its timeout, hard 30 s later (None = none)."""
    ttype = get_task_type(task_type)
    soft = ttype.timeout if ttype else None
    return (None if soft is None else soft + 30, soft)


def task_message(task_id: uuid.UUID | str, queue: str, task_type: str, headers: dict[str, str] | None = None) -> bytes:
    """The serialized message for ``tasklift.run(task_id)`` on ``queue``, with extra ``headers``.

    The bytes of :func:`message_dict` serialized, spliced into a template of the parts every
    message of this process to ``queue`` for ``task_type`` shares (``tests/integration/test_wire.py``
    holds the two equal, and both equal to Celery's own message).
    """
    tid = str(task_id)
    parts = _template(os.getpid(), queue, task_type)
    if parts is None:
        return orjson.dumps(message_dict(tid, queue, task_type, headers))
    quoted = orjson.dumps(tid)
    return b"".join(
        (
            parts[0],
            base64.b64encode(orjson.dumps([[tid], {}, _EMBED])),
            parts[1],
            quoted,
            parts[2],
            quoted,
            parts[3],
            orjson.dumps(repr([tid])),
            parts[4],
            b"," + orjson.dumps(headers)[1:-1] if headers else b"",
            parts[5],
            quoted,
            parts[6],
            _delivery_tag(os.getpid()),
            parts[7],
        )
    )


def message_dict(
    task_id: uuid.UUID | str, queue: str, task_type: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The message for ``tasklift.run(task_id)`` on ``queue`` as a dict (what :func:`task_message` encodes)."""
    tid = str(task_id)
    body = orjson.dumps([[tid], {}, _EMBED])
    headers_part, properties = _constant_parts(os.getpid())
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            **headers_part,
            "id": tid,
            "timelimit": list(time_limits(task_type)),
            "root_id": tid,
            "argsrepr": repr([tid]),
            **(headers or {}),
        },
        "properties": {
            **properties,
            "correlation_id": tid,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "delivery_tag": str(uuid.uuid4()),
        },
    }


def _delivery_tag(pid: int) -> bytes:
    """A new delivery tag: unique, in a UUID's format as kombu's (which draws a ``uuid4`` each).

    The Redis transport files an unacked message under its tag, so tags must not repeat across
    processes and restarts: each process draws a random UUID once and counts in its last 48 bits.
    """
    prefix, counter = _tag_source(pid)
    return b"%s%012x" % (prefix, next(counter) & 0xFFFFFFFFFFFF)


@cache
def _tag_source(pid: int) -> tuple[bytes, Iterator[int]]:
    return str(uuid.uuid4())[:24].encode(), itertools.count(secrets.randbits(48))


#: Stand-ins for the values set per message, in the order they appear in its JSON ("extra":
#: the ``headers`` argument, which ends the "headers" object). Control characters: any real value
#: holding them is escaped, so only the stand-ins match.
_HOLES = ("body", "id", "root_id", "argsrepr", "extra", "correlation_id", "delivery_tag")
_RAW_HOLES = frozenset({"body", "delivery_tag"})  #: base64 and a UUID


@cache
def _template(pid: int, queue: str, task_type: str) -> tuple[bytes, ...] | None:
    """:func:`message_dict`'s JSON cut around the per-message values (:data:`_HOLES`): 8 parts.

    None if a stand-in also occurs elsewhere (a queue named like one): no template then.
    """
    marks = {hole: f"\x01{hole}\x01" for hole in _HOLES}
    message = message_dict("", queue, task_type)
    message["body"] = marks["body"]
    for hole in ("id", "root_id", "argsrepr"):
        message["headers"][hole] = marks[hole]
    message["headers"][marks["extra"]] = None  # last: where extra headers go
    for hole in ("correlation_id", "delivery_tag"):
        message["properties"][hole] = marks[hole]
    rest = orjson.dumps(message)
    if any(rest.count(orjson.dumps(mark)[1:-1]) != 1 for mark in marks.values()):
        return None
    parts = []
    for hole in _HOLES:
        if hole == "extra":
            cut = b',"\\u0001extra\\u0001":null'
        elif hole in _RAW_HOLES:  # filled with text that needs no escaping: the template keeps the quotes
            cut = orjson.dumps(marks[hole])[1:-1]
        else:  # filled with JSON
            cut = orjson.dumps(marks[hole])
        before, _, rest = rest.partition(cut)  # each stand-in occurs once (checked above)
        parts.append(before)
    parts.append(rest)
    return tuple(parts)


@cache
def _constant_parts(pid: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """What every message from this process shares (key order as Celery's; None = set per message)."""
    headers: dict[str, Any] = {
        "lang": "py",
        "task": TASK_NAME,
        "id": None,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": None,
        "root_id": None,
        "parent_id": None,
        "argsrepr": None,
        "kwargsrepr": "{}",
        "origin": _origin(pid),
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties: dict[str, Any] = {
        "correlation_id": None,
        "reply_to": _reply_to(pid),
        "delivery_mode": 2,
        "delivery_info": None,
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": None,
    }
    return headers, properties
