"""Announce committed events on Redis pub/sub (one channel per task).

Publishing is a wake-up, not the record: the event is already committed in PostgreSQL, so a
failed publish only delays listeners until they re-read the log. It therefore never raises.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable

import redis

from tasklift.store.repository import Event

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "tasklift:task:"


def channel(task_id: str) -> str:
    """The pub/sub channel of one task's events."""
    return f"{CHANNEL_PREFIX}{task_id}"


def encode(event: Event) -> str:
    """The wire form of an event on the bus."""
    return json.dumps({"seq": event.seq, "kind": event.kind, "data": event.data}, separators=(",", ":"))


class EventPublisher:
    """Publishes committed events; shared by threads of one process."""

    def __init__(self, redis_url: str) -> None:
        self._client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._lock = threading.Lock()

    def publish(self, events: Iterable[Event]) -> None:
        """Announce ``events``; errors are logged, not raised (the database already has them)."""
        events = list(events)
        if not events:
            return
        try:
            if len(events) == 1:
                self._client.publish(channel(events[0].task_id), encode(events[0]))
                return
            with self._client.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.publish(channel(event.task_id), encode(event))
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("event publish failed (listeners will catch up from the database): %s", exc)

    def close(self) -> None:
        self._client.close()
