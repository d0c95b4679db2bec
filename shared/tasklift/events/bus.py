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


class EventAnnouncer:
    """Publishes committed events; shared by threads of one process."""

    def __init__(self, redis_url: str) -> None:
        self._client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._lock = threading.Lock()

    def announce(self, events: Iterable[Event]) -> None:
        """Announce ``events``, in order, in one round trip; errors are logged, not raised (the
        database already has them)."""
        commands = [("PUBLISH", channel(event.task_id), encode(event)) for event in events]
        if not commands:
            return
        try:
            self._send(commands)
        except redis.RedisError as exc:
            log.warning("event publish failed (listeners will catch up from the database): %s", exc)

    def _send(self, commands: list[tuple[str, str, str]]) -> None:
        """The commands in one write and one round trip, on a pooled connection.

        What a non-transactional pipeline does, without its per-call objects and response
        callbacks (~35 µs of a worker's every task). A connection that failed is dropped and the
        commands are tried once more on a new one (Redis restarted); a second failure is raised.
        A publish is a wake-up: it does not wait through an outage (the events are in the
        database), so it never blocks a task for longer than that.
        """
        pool = self._client.connection_pool
        for last_try in (False, True):
            conn = pool.get_connection()
            try:
                conn.send_packed_command(conn.pack_commands(commands))  # type: ignore[no-untyped-call]
                for _ in commands:
                    conn.read_response()  # type: ignore[no-untyped-call]  # redis-py: no type hints
                return
            except (redis.ConnectionError, redis.TimeoutError):
                conn.disconnect()  # type: ignore[no-untyped-call]
                if last_try:
                    raise
            except BaseException:
                conn.disconnect()  # type: ignore[no-untyped-call]  # replies may be left unread on it
                raise
            finally:
                pool.release(conn)

    def close(self) -> None:
        self._client.close()
