"""The outbox (``task_outbox``): each task's dispatch intent, and the marks that say it was sent.

A submit writes the intent in its own statement (:data:`tasklift.store.repository.INSERT_TASKS_SQL`);
a manual retry re-arms it in its own (:data:`~tasklift.store.repository.REOPEN_SQL`), an automatic
retry, a re-dispatch or a hand-back here (:func:`insert_intent`). The outbox dispatcher and the
reconciler read, mark and re-arm intents here (the API's enqueuer marks through its own store,
:data:`~tasklift.store.repository.MARK_PUBLISHED_SQL`). All functions take an open
:class:`~sqlalchemy.Connection`; callers decide the transaction boundaries.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, RowMapping, exists, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tasklift.store import flow
from tasklift.store import repository as repo
from tasklift.store.db import interval
from tasklift.store.tables import outbox, paused_queues

_MARK_PUBLISHED = text(repo.MARK_PUBLISHED_SQL)


def mark_published(conn: Connection, sent: Sequence[tuple[uuid.UUID, int]], broker_epoch: str | None) -> None:
    """Record that the messages of the intents ``sent`` (task id, intent seq) reached the broker
    (:data:`~tasklift.store.repository.MARK_PUBLISHED_SQL`)."""
    conn.execute(
        _MARK_PUBLISHED,
        {"ids": [str(task_id) for task_id, _ in sent], "seqs": [seq for _, seq in sent], "epoch": broker_epoch},
    )


def _not_paused() -> Any:
    """The intent's queue is not paused (docs/queues.md): its tasks wait in the outbox until resumed."""
    return ~exists().where(paused_queues.c.queue == outbox.c.queue)


def take_due_outbox(
    conn: Connection,
    limit: int = 500,
    window: int = 0,
    rates: Sequence[flow.RateRule] = (),
    spend: bool = True,
    weights: Mapping[str, int] | None = None,
) -> list[RowMapping]:
    """Lock unpublished outbox rows the dispatcher may send now, in the order to send them: the
    admission of :func:`tasklift.store.flow.admit` (due, allowed, by priority; SKIP LOCKED)."""
    return flow.admit(conn, limit, window, rates, spend, weights=weights)


def sent_unclaimed(conn: Connection, epoch: str, older_than: float, limit: int = 10_000) -> list[RowMapping]:
    """Intents marked sent that no worker has taken yet (taking the lease deletes the row), and that were
    sent to another Redis run (``epoch``) or more than ``older_than`` seconds ago: their messages
    should still be in Redis; :mod:`tasklift.queue.reconcile` looks."""
    return list(
        conn.execute(
            select(outbox.c.task_id, outbox.c.intent_seq, outbox.c.queue, outbox.c.published_at)
            .where(
                outbox.c.published_at.is_not(None),
                _not_paused(),  # its message was taken and dropped by a refused claim: resume re-arms it
                or_(
                    outbox.c.broker_epoch.is_distinct_from(epoch),
                    outbox.c.published_at < func.now() - interval(older_than),
                ),
            )
            .order_by(outbox.c.published_at)
            .limit(limit)
        ).mappings()
    )


#: The intents of :func:`sent_unclaimed` as (task id, intent seq, published_at): matched exactly, so
#: an intent whose task was taken, re-armed or re-sent since it was read is left as it is.
_SENT_ROWS = """
FROM unnest(CAST(:ids AS uuid[]), CAST(:seqs AS bigint[]), CAST(:sent_at AS timestamptz[]))
    AS seen(task_id, intent_seq, published_at)
WHERE o.task_id = seen.task_id AND o.intent_seq = seen.intent_seq AND o.published_at = seen.published_at
"""
_CONFIRM_SENT = text(f"UPDATE task_outbox AS o SET published_at = now(), broker_epoch = :epoch {_SENT_ROWS}")
_REARM_SENT = text(
    f"UPDATE task_outbox AS o SET published_at = NULL, broker_epoch = NULL, available_at = now() {_SENT_ROWS}"
)


def _sent_params(rows: Sequence[RowMapping]) -> dict[str, Any]:
    return {
        "ids": [str(r["task_id"]) for r in rows],
        "seqs": [r["intent_seq"] for r in rows],
        "sent_at": [r["published_at"] for r in rows],
    }


def confirm_sent(conn: Connection, rows: Sequence[RowMapping], epoch: str) -> int:
    """These intents' messages are still in Redis (run ``epoch``): check them again later."""
    return conn.execute(_CONFIRM_SENT, {**_sent_params(rows), "epoch": epoch}).rowcount or 0


def rearm_sent(conn: Connection, rows: Sequence[RowMapping]) -> int:
    """These intents' messages are gone from Redis: due for the dispatcher now."""
    return conn.execute(_REARM_SENT, _sent_params(rows)).rowcount or 0


def insert_intent(conn: Connection, task_id: uuid.UUID, queue: str, intent_seq: int, delay: float) -> None:
    """A new dispatch intent for the transition whose event is ``intent_seq``, due in ``delay`` seconds."""
    due = func.now() + interval(delay)
    conn.execute(
        pg_insert(outbox)
        .values(task_id=task_id, queue=queue, available_at=due, intent_seq=intent_seq)
        .on_conflict_do_update(
            index_elements=[outbox.c.task_id],
            set_={"available_at": due, "published_at": None, "broker_epoch": None, "intent_seq": intent_seq},
        )
    )
