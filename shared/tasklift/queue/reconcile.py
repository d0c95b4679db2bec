"""The dispatcher's safety net: intents marked sent whose messages Redis no longer holds are sent again.

An outbox row marked published but not yet claimed (the claim deletes it) should have its message
in Redis: in its queue's list, or in the hash of messages a worker took but has not acknowledged.
Two things can break that: Redis restarted and lost what it held (its ``run_id``, our broker
epoch, changed), or a mark landed on an intent whose message was never sent. Rather than re-send
everything of an old epoch (which doubles the queue when Redis kept it in its append-only file),
the dispatcher looks: it reads the message ids Redis holds for the queues concerned and re-arms
only the intents whose message is not there. Messages stay where they are; a message re-sent that
a worker took a moment before (between its pop and its unacked entry) is a duplicate the claim
drops.

Where kombu's Redis transport keeps messages is its documented layout: one list per queue, named
after the queue (messages of priority 0; tasklift sends no other), and the ``unacked`` hash
(transport option ``unacked_key``) whose values are ``[message, exchange, routing_key]``.
``tests/integration/test_reconcile.py`` sends through Celery's public API and a real worker to
hold this module to that layout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis
from kombu.transport.redis import Channel
from sqlalchemy import Engine

from tasklift.store import outbox

log = logging.getLogger(__name__)

#: How many list entries or hash fields one Redis call reads.
CHUNK = 1000


@dataclass(frozen=True)
class Reconciled:
    """What one look found among the intents marked sent and not yet claimed."""

    held: int  #: messages still in Redis (confirmed under the current epoch)
    resent: int  #: intents re-armed: the dispatcher sends them in its next round


def task_id_of(raw: bytes) -> str | None:
    """The task id of a Celery protocol-2 message as kombu stores it (a list entry or an unacked value)."""
    try:
        message: Any = orjson.loads(raw)
        if isinstance(message, list):  # unacked: [message, exchange, routing_key]
            message = message[0]
        return str(message["headers"]["id"])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None


def _queued(broker: redis.Redis, queue: str) -> Iterator[bytes]:
    # LPUSH adds at the head and workers pop the tail: reading from the head in chunks may read an
    # entry twice while pushes shift the list, and never skips one that is still there.
    start = 0
    while chunk := cast(list[bytes], broker.lrange(queue, start, start + CHUNK - 1)):  # sync client: a list
        yield from chunk
        start += CHUNK


def _unacked(broker: redis.Redis, key: str) -> Iterator[bytes]:
    for _field, value in broker.hscan_iter(key, count=CHUNK):
        yield value


def held_task_ids(broker: redis.Redis, queues: Iterable[str], unacked_key: str = Channel.unacked_key) -> set[str]:
    """The ids of the tasks whose messages Redis holds in ``queues`` or among the unacknowledged.

    The lists are read before the hash: a message a worker pops meanwhile moves from one to the other.
    """
    held: set[str] = set()
    for raw in (*(m for q in sorted(set(queues)) for m in _queued(broker, q)), *_unacked(broker, unacked_key)):
        if (task_id := task_id_of(raw)) is not None:
            held.add(task_id)
    return held


def reconcile(engine: Engine, broker: redis.Redis, epoch: str, older_than: float) -> Reconciled:
    """Re-arm the intents sent to another Redis run, or more than ``older_than`` seconds ago, that
    no worker claimed and whose message Redis does not hold; confirm the others under ``epoch``."""
    with engine.connect() as conn:
        rows = outbox.sent_unclaimed(conn, epoch, older_than)
    if not rows:
        return Reconciled(0, 0)
    held = held_task_ids(broker, (row["queue"] for row in rows))
    present = [row for row in rows if str(row["task_id"]) in held]
    missing = [row for row in rows if str(row["task_id"]) not in held]
    with engine.begin() as conn:
        confirmed = outbox.confirm_sent(conn, present, epoch) if present else 0
        resent = outbox.rearm_sent(conn, missing) if missing else 0
    if resent:
        log.warning("dispatcher: %d tasks marked sent are not in Redis (run_id %s); sending them again", resent, epoch)
    return Reconciled(confirmed, resent)
