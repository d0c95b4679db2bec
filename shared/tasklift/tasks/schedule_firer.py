"""The schedule firer: the reaper's job that turns due schedules into tasks (docs/flow-control.md).

Each round is ONE transaction: the due schedules, locked with SKIP LOCKED
(:data:`tasklift.store.schedule_firing.DUE_SQL`, on ``ix_schedules_due``); for each, the fire times its
``catchup`` policy says are due at the database's ``now()`` (:func:`tasklift.tasks.schedules.due_times`);
for each time a task built by the submit path (:func:`tasklift.tasks.service.parse_submission`,
:func:`~tasklift.tasks.service.parse_flow`, :func:`~tasklift.tasks.service.new_task`: the same
validation, the same row, the same ``INSERT``) with the Idempotency-Key
``schedule:<id>:<fire time ISO>``, its run row, and the schedule's next time. The tasks are left to
the dispatcher (intent 0, due now), which the reaper runs right after this job, in the same sweep.

So a firing is never doubled — two reapers never hold one schedule, a key or run row already there
means the time was fired, and the task and the advance commit together — and never lost: a crash
before the commit leaves ``next_fire_at`` where it was, and the next round fires it (under the
missed-firing policy, if it is late by then).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, RowMapping

from tasklift.settings import get_settings
from tasklift.store import schedule_firing as store
from tasklift.tasks import schedules
from tasklift.tasks.service import ServiceError, new_task, parse_flow, parse_submission, request_fingerprint

log = logging.getLogger(__name__)

#: Schedules a round takes at most (the rest are due at the next, which comes at once).
ROUND_LIMIT = 200


def timing_of(row: Mapping[str, Any] | RowMapping) -> schedules.Timing:
    """The :class:`~tasklift.tasks.schedules.Timing` of a stored schedule."""
    return schedules.Timing(
        cron=row["cron"], timezone=row["timezone"], interval=row["interval_seconds"], catchup=row["catchup"]
    )


def firing_key(schedule_id: uuid.UUID, fire_at: datetime) -> str:
    """The Idempotency-Key of one firing (its owner's namespace, like a client's key)."""
    return f"schedule:{schedule_id}:{fire_at.isoformat()}"


def fire_due(engine: Engine, limit: int = ROUND_LIMIT) -> int:
    """One round: fire every due schedule (up to ``limit``); returns how many tasks were submitted."""
    ttl = get_settings().idempotency_ttl_seconds
    submitted = 0
    with engine.begin() as conn:
        for row in store.due(conn, limit):
            timing = timing_of(row)
            times, next_fire_at = schedules.due_times(timing, row["next_fire_at"], row["db_now"])
            body = schedules.submit_body(row["task_type"], row["payload"], row["flow"])
            try:
                ttype, task_input, metadata = parse_submission(body)
                flow = parse_flow(body)
            except ServiceError as exc:  # its type went away or changed its input: say so, keep its times
                log.warning("schedule %s (%s): its task does not validate: %s", row["id"], row["name"], exc.detail)
                store.advance(
                    conn, row["id"], next_fire_at, fired_at=None, task_id=None, count=0, error=exc.detail[:500]
                )
                continue
            fingerprint = request_fingerprint(body)
            firings: list[tuple[datetime, str, Any]] = []
            for fire_at in times:
                key = firing_key(row["id"], fire_at)
                if not store.reserve_key(conn, row["owner"], key, fingerprint, ttl):
                    continue  # fired already (a round that committed it); never twice
                task = new_task(uuid.uuid4(), row["owner"], ttype, task_input, metadata, flow)
                firings.append((fire_at, key, dataclasses.replace(task, inline=False)))  # the dispatcher's
            if firings:
                store.insert_tasks(conn, [task for _, _, task in firings])
                for fire_at, key, task in firings:
                    store.record_run(conn, row["id"], fire_at, task.task_id, row["owner"], key)
            last = firings[-1] if firings else None
            store.advance(
                conn,
                row["id"],
                next_fire_at,
                fired_at=last[0] if last else None,
                task_id=last[2].task_id if last else None,
                count=len(firings),
                error=None,
            )
            submitted += len(firings)
    return submitted


def seconds_to_next(engine: Engine) -> float | None:
    """Seconds until the next schedule is due (None: none), for the reaper's sleep."""
    with engine.connect() as conn:
        return store.seconds_to_next_due(conn)
