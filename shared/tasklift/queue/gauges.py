"""The backlog gauges, registered by the reaper (the one process kind that owns the backlog).

``tasklift.queue.depth`` (Redis list length of each Celery queue), ``tasklift.queue.oldest_age``
(the oldest task waiting for a worker, from the outbox) and ``tasklift.tasks.running`` (RUNNING
tasks by lease state). Each reading is reused for ``telemetry.gauges.GAUGE_TTL_SECONDS``.
"""

from __future__ import annotations

import os
from functools import partial

import redis
from sqlalchemy import Engine, case, func, or_, select

from tasklift.settings import get_settings
from tasklift.store.tables import outbox, tasks
from tasklift.telemetry import gauges
from tasklift.telemetry.gauges import Reading

#: The pid that registered them: the gauges are instruments of the process's OpenTelemetry meter
#: (process-wide by OpenTelemetry's design), so they are registered once per process.
_registered: list[int] = []


def register(engine: Engine, broker: redis.Redis) -> None:
    """Report the backlog gauges from this process (once per process), read through ``engine``
    and ``broker`` (the reaper's runtime's)."""
    if os.getpid() in _registered:
        return
    _registered.append(os.getpid())
    gauges.observe(
        "tasklift.queue.depth",
        partial(_queue_depths, broker),
        unit="{message}",
        description="Messages waiting in each Celery queue (Redis list length)",
    )
    gauges.observe(
        "tasklift.queue.oldest_age",
        partial(_oldest_due, engine),
        unit="s",
        description="Age of the oldest task waiting for a worker (since submit or requeue), by queue",
    )
    gauges.observe(
        "tasklift.tasks.running",
        partial(_running, engine),
        unit="{task}",
        description="RUNNING tasks by lease state (expired = stuck until the reaper recovers it)",
    )


def _queue_depths(broker: redis.Redis) -> Reading:
    settings = get_settings()
    queues = (settings.cpu_queue, settings.io_queue)
    pipe = broker.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)  # Celery's Redis transport keeps each queue as a list of that name
    return {(("queue", q),): float(n) for q, n in zip(queues, pipe.execute(), strict=True)}


def _oldest_due(engine: Engine) -> Reading:
    # The outbox holds one row per task from submit (or requeue) until a worker claims it: a small
    # table. Waiting = published to the broker, or due for the dispatcher (not a retry's back-off).
    age = func.extract("epoch", func.now() - func.min(outbox.c.created_at))
    waiting = or_(outbox.c.published_at.is_not(None), outbox.c.available_at <= func.now())
    query = select(outbox.c.queue, age).where(waiting).group_by(outbox.c.queue)
    with engine.connect() as conn:
        return {(("queue", queue),): float(seconds) for queue, seconds in conn.execute(query)}


def _running(engine: Engine) -> Reading:
    lease = case((tasks.c.lease_expires_at < func.now(), "expired"), else_="live")
    query = select(lease, func.count()).where(tasks.c.status == "RUNNING").group_by(lease)  # partial index
    counts = {"live": 0.0, "expired": 0.0}
    with engine.connect() as conn:
        counts.update({state: float(n) for state, n in conn.execute(query)})
    return {(("lease", state),): n for state, n in counts.items()}
