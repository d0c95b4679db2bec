"""The task lifecycle.

::

    PENDING ──claim──▶ RUNNING ──▶ SUCCESS | FAILED | CANCELLED
       │                  │
       ├──cancel──▶ CANCELLED      RUNNING ──retry / lease lost──▶ PENDING
       └──not started by expires_at──▶ EXPIRED   (docs/flow-control.md)

Every transition is a compare-and-set in the database guarded by the current status (and, for a
running task, its attempt number), appends an event and is then announced.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """Where a task is in its life."""

    #: Accepted and durable; waiting in the queue (or for a retry's back-off).
    PENDING = "PENDING"
    #: Claimed by a worker that holds a live lease.
    RUNNING = "RUNNING"
    #: Finished; ``result`` (or ``result_url``) holds the outcome.
    SUCCESS = "SUCCESS"
    #: Finished with ``error`` after its last attempt; kept as a dead letter, retryable by hand.
    FAILED = "FAILED"
    #: Cancelled before or while running; never runs again unless retried by hand.
    CANCELLED = "CANCELLED"
    #: Not started by its ``expires_at`` (``ttl_seconds``); never ran, never runs.
    EXPIRED = "EXPIRED"

    @property
    def terminal(self) -> bool:
        """True once the task will not change by itself any more."""
        return self in TERMINAL


TERMINAL = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED})

#: Allowed transitions; the store's compare-and-set statements implement exactly these.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.FAILED, TaskStatus.EXPIRED}),
    TaskStatus.RUNNING: frozenset({TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.PENDING}),
    # A finished task may be re-queued by hand (POST /tasks/{id}/retry) except after success.
    TaskStatus.FAILED: frozenset({TaskStatus.PENDING}),
    TaskStatus.CANCELLED: frozenset({TaskStatus.PENDING}),
    TaskStatus.SUCCESS: frozenset(),
    TaskStatus.EXPIRED: frozenset(),  # its deadline has passed: a retry would expire at once
}


def can_transition(current: TaskStatus, target: TaskStatus) -> bool:
    """Whether the lifecycle allows ``current → target``."""
    return target in TRANSITIONS[current]
