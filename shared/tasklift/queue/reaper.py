"""The reaper: one loop that keeps every accepted task moving.

- **Dispatcher** (every ``dispatch_interval_seconds``): publishes outbox rows nobody published (a
  crash or broker outage after commit) and retries whose back-off has elapsed; re-sends the
  messages of unclaimed tasks that Redis no longer holds (after a restart that lost them, or a
  mark that went wrong), looking every ``outbox_verify_seconds`` (``tasklift.queue.reconcile``).
- **Waits** (every ``dispatch_interval_seconds``): WAITING tasks whose timeout or sleep is over go
  back to PENDING, the outcome recorded as the wait's step (``tasklift.store.waits``), and are
  published by the same sweep's dispatch.
- **Lease reaper** (every ``reaper_interval_seconds``): a RUNNING task whose lease expired (worker
  killed, machine lost) goes back to PENDING and is re-dispatched, within a budget, else FAILED.
- **Cancel enforcer**: a RUNNING task that ignored its cancel flag for ``cancel_grace_seconds`` is
  marked CANCELLED and its process terminated through Celery's revoke.
- **Expiry** (every ``dispatch_interval_seconds``, before the dispatch): PENDING tasks not started
  by their ``expires_at`` end EXPIRED (docs/flow-control.md).
- **Schedules** (at every wake-up of the loop, which wakes at the next fire time too; before the
  dispatch, which publishes what they fired in the same sweep): due cron/interval schedules submit
  their tasks (``tasklift.tasks.schedule_firer``).
- **Cleanup**: expired Idempotency-Key records are deleted hourly.
- **Bulk operations** (every ``dispatch_interval_seconds``, up to 2 s a round): cancel, retry or
  purge the tasks of ``POST /bulk`` operations, 500 per transaction (``tasklift.tasks.bulk_worker``).
- **Webhooks** (a thread of their own, ``tasklift.queue.webhooks``): the recorded deliveries are
  POSTed, signed, retried with back-off (docs/webhooks.md).
- **Retention** (every ``retention_interval_seconds``): finished tasks older than ``retention_days``
  are purged with their events, log lines and blobs (``tasklift.tasks.retention``).

Several reapers may run: every sweep locks its rows with SKIP LOCKED.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError

from tasklift import telemetry
from tasklift.queue import gauges
from tasklift.queue.app import celery_app
from tasklift.queue.broker import Dispatcher
from tasklift.queue.runtime import WorkerRuntime
from tasklift.queue.webhooks import Deliverer
from tasklift.settings import get_settings
from tasklift.store import flow, leases, waits
from tasklift.tasks import bulk_worker, retention, schedule_firer
from tasklift.tasks.states import TaskStatus

log = logging.getLogger(__name__)

CLEANUP_INTERVAL = 3600.0


def reap_expired_leases(rt: WorkerRuntime) -> int:
    """Recover RUNNING tasks whose lease expired; returns how many were handled."""
    settings = rt.settings
    events = []
    with rt.engine.begin() as conn:
        for row in leases.expired_leases(conn):
            done = leases.recover_expired(conn, row["id"], row["attempts"], max_redispatches=settings.max_redispatches)
            if done:
                log.warning("task %s: lease expired (attempt %s) → %s", row["id"], row["attempts"], done[0]["status"])
                events.append(done[1])
    rt.announcer.announce(events)
    return len(events)


def wake_waits(rt: WorkerRuntime) -> int:
    """Wake WAITING tasks whose timeout or sleep is over; returns how many."""
    with rt.engine.begin() as conn:
        events = waits.wake_due(conn)
    rt.announcer.announce(events)
    return len(events)


def enforce_cancels(rt: WorkerRuntime) -> int:
    """Terminate tasks that ignored their cancel flag past the grace period."""
    settings = rt.settings
    events, terminated = [], []
    with rt.engine.begin() as conn:
        for row in leases.overdue_cancels(conn, settings.cancel_grace_seconds):
            done = leases.finish(conn, row["id"], row["attempts"], TaskStatus.CANCELLED)
            if done:
                events.append(done[1])
                terminated.append(str(row["id"]))
    for task_id in terminated:
        log.warning("task %s ignored its cancel flag; terminating it", task_id)
        try:
            # signal=None: the worker uses its own TERM_SIGNAME. Under `tasklift worker`'s remap that is
            # SIGQUIT (pool processes ignore SIGTERM then), which interrupts the task; its hand-back
            # is refused, as every write of it is: the task is CANCELLED already.
            celery_app.control.revoke(task_id, terminate=True, signal=None)
        except Exception as exc:  # noqa: BLE001 - its writes are fenced anyway: status is CANCELLED
            log.warning("revoke of %s failed: %s", task_id, exc)
    rt.announcer.announce(events)
    return len(events)


def expire_due(rt: WorkerRuntime) -> int:
    """End PENDING tasks not started by their ``expires_at`` as EXPIRED, and announce it (their
    streams end with it): docs/flow-control.md."""
    with rt.engine.begin() as conn:
        expired = flow.expire_due(conn)
    rt.announcer.announce([event for _, event in expired])
    return len(expired)


def cleanup(rt: WorkerRuntime) -> int:
    """Delete expired idempotency records."""
    with rt.engine.begin() as conn:
        return leases.purge_expired_idempotency_keys(conn)


def sweep(rt: WorkerRuntime, now: float, due: dict[str, float], dispatcher: Dispatcher) -> None:
    """Run every job whose time has come (``due`` holds the next run time of each)."""
    settings = rt.settings
    # Leases first: a task whose expired lease this sweep re-queues (an intent due now) is published
    # by the same sweep's dispatch, not a dispatcher round later (resume <= lease + reaper interval).
    jobs: tuple[tuple[str, float, Callable[[], int]], ...] = (
        ("leases", settings.reaper_interval_seconds, lambda: reap_expired_leases(rt)),
        ("expiry", settings.dispatch_interval_seconds, lambda: expire_due(rt)),  # before: never sent expired
        ("waits", settings.dispatch_interval_seconds, lambda: wake_waits(rt)),
        # Every wake-up (one probe of ix_schedules_due): the loop wakes at the next fire time.
        ("schedules", 0.0, lambda: schedule_firer.fire_due(rt.engine)),
        ("dispatch", settings.dispatch_interval_seconds, dispatcher.round),
        ("cancels", settings.reaper_interval_seconds, lambda: enforce_cancels(rt)),
        (
            "bulk",
            settings.dispatch_interval_seconds,
            lambda: bulk_worker.work(rt.engine, rt.blobs, rt.announcer.announce),
        ),
        ("cleanup", CLEANUP_INTERVAL, lambda: cleanup(rt)),
        ("retention", settings.retention_interval_seconds, lambda: retention.purge_expired(rt.engine, rt.blobs)),
    )
    for name, interval, job in jobs:
        if now < due.get(name, 0):
            continue
        due[name] = now + interval
        try:
            count = job()
            if name == "schedules" and count:  # what it fired is published by this sweep's dispatch
                due.pop("dispatch", None)
            telemetry.reaper_acted(name, count)
            if count:
                log.info("reaper %s: %d", name, count)
        except DBAPIError as exc:
            log.warning("reaper %s: database unavailable (%s); retrying", name, exc.__class__.__name__)
        except Exception:
            log.exception("reaper %s failed; retrying next round", name)


def _next_wait(dispatcher: Dispatcher, longest: float) -> float:
    """Sleep until the next intent comes due (a delayed task's start) or the next schedule fires, at
    most ``longest``."""
    try:
        wait = dispatcher.next_wait(longest)
        fire_in = schedule_firer.seconds_to_next(dispatcher.engine)
    except DBAPIError:
        return longest
    return wait if fire_in is None else max(0.01, min(wait, fire_in))


def run_forever(stop: threading.Event | None = None) -> None:
    """Sweep until ``stop`` is set (or forever); this process reports the backlog gauges meanwhile.

    The reaper's runtime (engines, Redis clients, blob store: :class:`WorkerRuntime`) is built here
    and passed to every job; it is closed when the loop ends.
    """
    rt = WorkerRuntime.open(get_settings())
    try:
        gauges.register(rt.engine, rt.broker.client)
        stop = stop or threading.Event()
        due: dict[str, float] = {}
        dispatcher = Dispatcher(rt.engine, rt.broker)
        deliverer = Deliverer(rt.engine, rt.settings)  # webhooks, in a thread of their own (queue/webhooks.py)
        delivering = deliverer.start(stop)
        log.info("reaper started")
        while not stop.is_set():
            sweep(rt, time.monotonic(), due, dispatcher)
            longest = min(rt.settings.dispatch_interval_seconds, rt.settings.reaper_interval_seconds)
            wait = _next_wait(dispatcher, longest)
            stop.wait(wait)
            if wait < longest:  # woken for an intent coming due (a delayed task's start): dispatch it now
                due.pop("dispatch", None)
        delivering.join(rt.settings.webhook_timeout_seconds * 5 + 5)
        deliverer.close()
        log.info("reaper stopped")
    finally:
        rt.close()
