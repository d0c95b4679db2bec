"""Publishing from synchronous code (:class:`Broker`), and the outbox dispatcher (:class:`Dispatcher`).

The reaper's: every outbox intent whose time has come (a submit whose inline publish was lost, a
retry, a re-dispatch, a hand-back) is sent from here, and intents marked sent whose message Redis
lost are found again (:func:`tasklift.queue.reconcile.reconcile`). The API publishes on its event
loop instead (:class:`tasklift.queue.dispatch.Enqueuer`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import cast

import redis
from sqlalchemy import Engine

from tasklift import telemetry
from tasklift.queue import _compat
from tasklift.queue.dispatch import BrokerEpoch
from tasklift.queue.reconcile import reconcile
from tasklift.settings import get_settings
from tasklift.store import flow, outbox
from tasklift.store.repository import Dispatch
from tasklift.tasks.registry import all_task_types

log = logging.getLogger(__name__)


class Broker:
    """Publishing from synchronous code: a plain redis-py client (it reconnects by itself after a
    Redis restart) and the epoch it last read. The API runtime's for a manual retry, the reaper's
    for the dispatcher. The API's submits publish on the event loop instead (:class:`Enqueuer`)."""

    def __init__(self, url: str, epochs: BrokerEpoch | None = None) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.epochs = epochs or BrokerEpoch()

    def close(self) -> None:
        self.client.close()

    def enqueue(self, item: Dispatch, ahead: bool = False) -> None:
        """Send ``tasklift.run(task_id)`` with Celery's task id equal to ours. Raises on broker errors.

        One LPUSH of the message Celery would send (:mod:`tasklift.queue._compat`); no retry here:
        the outbox retries, and a blocking retry would stall the HTTP response. ``ahead``: RPUSH
        instead, to the end workers take from (BRPOP), so it is the next message taken (a fair
        share's newcomer: docs/flow-control.md).
        """
        with telemetry.publishing(item.task_id, item.queue, item.traceparent) as trace_headers:
            # trace_headers: the W3C traceparent; the worker's span continues the task's trace.
            message = _compat.task_message(item.task_id, item.queue, item.task_type, trace_headers)
            if ahead:
                self.client.rpush(item.queue, message)
            else:
                self.client.lpush(item.queue, message)

    def epoch(self, max_age: float = 2.0) -> str | None:
        """The Redis server's ``run_id`` (:class:`BrokerEpoch`); None if Redis does not answer."""
        now = time.monotonic()
        if (cached := self.epochs.cached(now, max_age)) is not None:
            return cached
        try:
            info = cast(dict[str, object], self.client.info("server"))  # sync client: a dict
            return self.epochs.remember(now, info)
        except redis.RedisError as exc:
            log.debug("could not read the broker epoch: %s", exc)
            return None

    def dispatch_due(
        self,
        engine: Engine,
        limit: int = 500,
        window: int = 0,
        rates: Sequence[flow.RateRule] = (),
        weights: Mapping[str, int] | None = None,
    ) -> int:
        """Publish the outbox rows admitted now (due and allowed, by priority, under a window by weighted
        fair share: docs/flow-control.md), in that order, and spend the rate-limit tokens of those
        published (``rates``: the limits in force). Returns how many were published."""
        epoch = self.epoch()
        with engine.begin() as conn:
            spend = bool(rates) and flow.lock_rate_buckets(conn)
            rows = outbox.take_due_outbox(conn, limit, window, rates, spend, weights)
            # The rows come in place order. Those sent ahead (RPUSH: taken next) go last first, so
            # they are taken in place order too; the others are LPUSHed in place order behind them.
            ahead = [row for row in rows if row["ahead"]]
            published = []
            for row in [*reversed(ahead), *(row for row in rows if not row["ahead"])]:
                item = Dispatch(row["task_id"], row["queue"], row["task_type"], row["traceparent"], row["intent_seq"])
                try:
                    self.enqueue(item, ahead=row["ahead"])
                except Exception as exc:  # noqa: BLE001
                    log.warning("dispatcher: broker unavailable, will retry: %s", exc)
                    break
                published.append(row)
            if published:
                # Marked in the same transaction that locked the rows: a crash before commit re-sends
                # (and spends no token: the debit commits with the marks).
                outbox.mark_published(conn, [(row["task_id"], row["intent_seq"]) for row in published], epoch)
                if spend:
                    flow.take_tokens(conn, rates, published)
        return len(published)


def rate_rules() -> list[flow.RateRule]:
    """The rate limits in force: every registered type's (``@task(rate_limit=)`` or the
    ``task_rate_limits`` setting's)."""
    return [
        flow.RateRule(t.name, *t.rate, per_key=t.rate_limit_per_key) for t in all_task_types() if t.rate is not None
    ]


class Dispatcher:
    """The reaper's outbox job: sends the due intents each round (:meth:`Broker.dispatch_due`), and looks in
    Redis for intents marked sent but unclaimed (:func:`tasklift.queue.reconcile.reconcile`) every
    ``outbox_verify_seconds``, and at once when it first sees a Redis run (a restart may have lost
    messages, or kept them all in its append-only file)."""

    def __init__(self, engine: Engine, broker: Broker) -> None:
        self.engine = engine
        self.broker = broker
        self._epoch: str | None = None  # the Redis run last looked at
        self._next_look = 0.0

    def round(self) -> int:
        """One dispatcher round; returns how many messages it sent."""
        epoch, now = self.broker.epoch(), time.monotonic()
        if epoch is not None and (epoch != self._epoch or now >= self._next_look):
            every = get_settings().outbox_verify_seconds
            reconcile(self.engine, self.broker.client, epoch, older_than=every)
            self._epoch, self._next_look = epoch, now + every
        settings = get_settings()
        return self.broker.dispatch_due(
            self.engine, window=settings.admission_window, rates=rate_rules(), weights=settings.fairness_weights
        )

    def next_wait(self, longest: float) -> float:
        """Seconds the reaper may sleep before the next round: until the next intent comes due, at
        most ``longest`` (a submit's inline publish needs no round; its lost publish waits its grace)."""
        with self.engine.connect() as conn:
            due_in = flow.seconds_to_next_due(conn)
        return longest if due_in is None else max(0.01, min(longest, due_in))
