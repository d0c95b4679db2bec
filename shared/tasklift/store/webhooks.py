"""The deliverer's statements on ``webhook_deliveries`` (the outbox of webhooks; docs/webhooks.md).

A delivery row is written by the trigger of migration ``0012_hooks`` in the transaction of the
transition it announces (every statement that finishes a task: the worker's outcome, the API's
cancel, the reaper's). Here, on the worker side's SQLAlchemy Core on psycopg, the deliverer
(:mod:`tasklift.queue.webhooks`):

- **claims** due rows with ``FOR UPDATE SKIP LOCKED`` and, in the same statement, moves each one's
  ``next_attempt_at`` past the time its POST may take (a claim is a lease): several deliverers never
  send the same row at once, and a deliverer that dies mid-POST leaves its rows due again later
  (at least once);
- records the outcome, fenced by ``attempts``: a delivered row stays delivered; a failed attempt
  schedules the next one, or gives the row up once the retry window (``webhook_retry_hours``,
  counted from ``retry_from``) is over.

A principal's default webhook (``principal_callbacks``, set by ``tasklift keys webhook``) is
written here too; the submit's INSERT applies it (:data:`tasklift.store.repository.INSERT_TASKS_SQL`).
The API's reads and redelivery are :mod:`tasklift.store.deliveries` (plain text on asyncpg).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, RowMapping, text

CLAIM_SQL = text("""
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries AS d
SET attempts = d.attempts + 1, last_attempt_at = now(), next_attempt_at = now() + make_interval(secs => :lease)
FROM due WHERE d.id = due.id
RETURNING d.id, d.task_id, d.event_type, d.url, d.task, d.attempts, d.created_at""")

DELIVERED_SQL = text("""
UPDATE webhook_deliveries
SET state = 'delivered', delivered_at = now(), last_status = :status, last_error = NULL
WHERE id = :id AND state = 'pending' AND attempts = :attempts""")

#: A failed attempt: due again after ``:delay`` seconds, unless that is past the retry window.
FAILED_SQL = text("""
UPDATE webhook_deliveries
SET last_status = :status, last_error = :error,
    next_attempt_at = now() + make_interval(secs => :delay),
    state = CASE WHEN now() + make_interval(secs => :delay) > retry_from + make_interval(secs => :window)
                 THEN 'failed' ELSE 'pending' END
WHERE id = :id AND state = 'pending' AND attempts = :attempts
RETURNING state""")


DUE_SQL = text("SELECT EXISTS (SELECT FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= now())")


def any_due(conn: Connection) -> bool:
    """Whether some delivery is due (one probe of the partial index)."""
    return bool(conn.execute(DUE_SQL).scalar())


# --- a principal's default webhook (``tasklift keys webhook``) ------------------------------------

SET_DEFAULT_SQL = text("""
INSERT INTO principal_callbacks (principal, url, events) VALUES (:principal, :url, CAST(:events AS jsonb))
ON CONFLICT (principal) DO UPDATE SET url = EXCLUDED.url, events = EXCLUDED.events, updated_at = now()""")
CLEAR_DEFAULT_SQL = text("DELETE FROM principal_callbacks WHERE principal = :principal RETURNING url")
GET_DEFAULT_SQL = text("SELECT url, events FROM principal_callbacks WHERE principal = :principal")


def set_principal_default(conn: Connection, principal: str, url: str, events: list[str]) -> None:
    """``principal``'s submits that name no webhook (and whose type declares none) call ``url``."""
    conn.execute(SET_DEFAULT_SQL, {"principal": principal, "url": url, "events": json.dumps(events)})


def clear_principal_default(conn: Connection, principal: str) -> bool:
    """Remove ``principal``'s default; False if it had none. Tasks submitted before keep theirs."""
    return conn.execute(CLEAR_DEFAULT_SQL, {"principal": principal}).first() is not None


def principal_default(conn: Connection, principal: str) -> RowMapping | None:
    return conn.execute(GET_DEFAULT_SQL, {"principal": principal}).mappings().first()


# --- the deliverer ---------------------------------------------------------------------------------


def claim(conn: Connection, limit: int, lease_seconds: float) -> list[RowMapping]:
    """Take up to ``limit`` due deliveries for ``lease_seconds`` (their attempt counted now)."""
    return list(conn.execute(CLAIM_SQL, {"limit": limit, "lease": lease_seconds}).mappings())


def mark_delivered(conn: Connection, delivery_id: str, attempts: int, status: int) -> bool:
    """The attempt ``attempts`` of ``delivery_id`` was answered 2xx with ``status``; False when that
    attempt was no longer the row's (redelivered or claimed again meanwhile)."""
    return conn.execute(DELIVERED_SQL, {"id": delivery_id, "attempts": attempts, "status": status}).rowcount == 1


def mark_failed(
    conn: Connection, delivery_id: str, attempts: int, status: int | None, error: str, delay: float, window: float
) -> str | None:
    """The attempt failed (``status`` None: no answer); returns the row's state after ('pending' or
    'failed'), or None when the attempt was no longer the row's (redelivered or claimed again)."""
    params: dict[str, Any] = {
        "id": delivery_id,
        "attempts": attempts,
        "status": status,
        "error": error,
        "delay": delay,
        "window": window,
    }
    row = conn.execute(FAILED_SQL, params).first()
    return None if row is None else str(row[0])
