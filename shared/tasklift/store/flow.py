"""Flow control in PostgreSQL (docs/flow-control.md): which due tasks the dispatcher admits to the
Celery queue, in what order, and the expiry of tasks that were not started in time.

Admission is ONE statement per dispatcher batch (:data:`ADMIT_SQL`, :data:`ADMIT_WINDOW_SQL`): an
outbox intent is admitted when it is unpublished and its ``available_at`` has passed (the
``ix_task_outbox_unpublished`` partial index finds those), its task is due (``scheduled_for``),
not expired, its queue not paused, and, under an admission window, its queue holds fewer than
``:window`` messages sent and not yet claimed (``ix_task_outbox_queue_sent``). The admitted rows
come in priority order (higher first) then submit time (under a window, at equal priority,
round-robin across principals: :data:`ADMIT_WINDOW_SQL`), locked ``FOR UPDATE OF o SKIP LOCKED``:
several dispatchers never take the same row, and a row another dispatcher published meanwhile is
re-checked (``published_at IS NULL``) and skipped. A concurrency key's limit is a further
condition (:data:`_KEYED`): an intent of a limited (type, key) is admitted only within the key's
free slots, its limit minus its RUNNING tasks and its intents sent and not yet claimed, ranked by
priority then submit time. A rate limit is another (:data:`_RATED`): an intent of a rate-limited
type (and key) is admitted only within its bucket's tokens, ranked the same way; the dispatcher
debits the tokens of what it published in the same transaction (:func:`take_tokens`), holding the
rate buckets' advisory lock (:func:`lock_rate_buckets`) so two dispatchers never spend one token twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, text

from tasklift.store import repository as repo

#: The conditions of a due, admissible intent ``o`` of task ``t`` (shared by both admissions).
_ADMISSIBLE = """
    o.published_at IS NULL AND o.available_at <= now()
    AND (t.scheduled_for IS NULL OR t.scheduled_for <= now())
    AND (t.expires_at IS NULL OR t.started_at IS NOT NULL OR t.expires_at > now())
    AND NOT EXISTS (SELECT FROM paused_queues AS p WHERE p.queue = o.queue)"""
_ORDER = "t.priority DESC, t.created_at, o.task_id"
#: Concurrency keys (issue 21 part 3): the admissible intents of limited (type, key)s ranked within
#: their key, the key's busy slots (RUNNING, or sent and unclaimed: ix_tasks_concurrency_running /
#: _pending), and the intents that fit in what is left. Unlimited tasks never enter these CTEs.
_KEYED = f"""
keyed AS (
    SELECT o.task_id, t.task_type, t.concurrency_key, t.concurrency_limit,
        row_number() OVER (PARTITION BY t.task_type, t.concurrency_key ORDER BY {_ORDER}) AS place
    FROM task_outbox AS o JOIN tasks AS t ON t.id = o.task_id
    WHERE {_ADMISSIBLE} AND t.concurrency_limit IS NOT NULL AND t.concurrency_key IS NOT NULL
), busy AS (
    SELECT k.task_type, k.concurrency_key,
        (SELECT count(*) FROM tasks AS b WHERE b.status = 'RUNNING'
            AND b.task_type = k.task_type AND b.concurrency_key = k.concurrency_key)
        + (SELECT count(*) FROM tasks AS b JOIN task_outbox AS s ON s.task_id = b.id
            WHERE b.status = 'PENDING' AND b.task_type = k.task_type AND b.concurrency_key = k.concurrency_key
            AND s.published_at IS NOT NULL) AS n
    FROM (SELECT DISTINCT task_type, concurrency_key FROM keyed) AS k
), keyed_free AS (
    SELECT keyed.task_id FROM keyed JOIN busy USING (task_type, concurrency_key)
    WHERE keyed.place <= keyed.concurrency_limit - busy.n
)"""
#: An admissible intent ``o`` of task ``t`` within its key's limit (if it has one).
_WITHIN_LIMIT = (
    "(t.concurrency_limit IS NULL OR t.concurrency_key IS NULL OR o.task_id IN (SELECT task_id FROM keyed_free))"
)
#: Rate limits (issue 21 part 4): the rules in force come as parallel arrays (``:rate_types``,
#: ``:rate_counts``, ``:rate_periods``, ``:rate_per_key``; empty when no type has one). A bucket is a
#: type's (``bucket_key`` '') or, per key, a type and key's; its tokens are what ``rate_buckets``
#: holds plus the refill since (``count`` per ``period``, at most ``count``; a bucket never used is
#: full). The admissible intents of a limited bucket are ranked within it, and those that fit in its
#: whole tokens are free. A bucket's row is written by :data:`TAKE_TOKENS_SQL` when it is spent.
_RATED = f"""
limits AS (
    SELECT * FROM unnest(CAST(:rate_types AS text[]), CAST(:rate_counts AS float8[]),
        CAST(:rate_periods AS float8[]), CAST(:rate_per_key AS boolean[])) AS l(task_type, capacity, period, per_key)
), rated AS (
    SELECT o.task_id, t.task_type, l.capacity, l.period,
        CASE WHEN l.per_key THEN t.concurrency_key ELSE '' END AS bucket_key,
        row_number() OVER (
            PARTITION BY t.task_type, CASE WHEN l.per_key THEN t.concurrency_key ELSE '' END ORDER BY {_ORDER}
        ) AS place
    FROM task_outbox AS o JOIN tasks AS t ON t.id = o.task_id JOIN limits AS l ON l.task_type = t.task_type
    WHERE {_ADMISSIBLE} AND {_WITHIN_LIMIT} AND (NOT l.per_key OR t.concurrency_key IS NOT NULL)
), tokens AS (
    SELECT r.task_type, r.bucket_key, least(r.capacity, coalesce(
        b.tokens + r.capacity * greatest(0, extract(epoch FROM now() - b.refilled_at)) / r.period, r.capacity)) AS n
    FROM (SELECT DISTINCT task_type, bucket_key, capacity, period FROM rated) AS r
    LEFT JOIN rate_buckets AS b ON b.task_type = r.task_type AND b.bucket_key = r.bucket_key
), rated_free AS (
    SELECT rated.task_id FROM rated JOIN tokens USING (task_type, bucket_key) WHERE rated.place <= floor(tokens.n)
)"""
#: An admissible intent ``o`` within its bucket's tokens (if its type has a rate limit).
_WITHIN_RATE = "(o.task_id NOT IN (SELECT task_id FROM rated) OR o.task_id IN (SELECT task_id FROM rated_free))"
_COLUMNS = "o.task_id, o.intent_seq, o.queue, t.task_type, t.traceparent, t.priority, t.concurrency_key"

#: No window: every admissible intent, by priority then submit time, ``:limit`` per batch.
ADMIT_SQL = f"""
WITH {_KEYED}, {_RATED}
SELECT {_COLUMNS}, false AS ahead
FROM task_outbox AS o JOIN tasks AS t ON t.id = o.task_id
WHERE {_ADMISSIBLE} AND {_WITHIN_LIMIT} AND {_WITHIN_RATE}
ORDER BY {_ORDER}
LIMIT :limit
FOR UPDATE OF o SKIP LOCKED"""

#: A window of ``:window`` messages per queue: a queue's first ``:window`` minus its sent-unclaimed
#: intents by priority, then fair share, then submit time. Fair share (issue 21 part 2): each
#: principal's (``coalesce(fairness_key, owner)``) waiting intents of a queue and priority are
#: numbered in their own order (``nth``) after the places it already holds in the queue (``held``:
#: its messages sent and unclaimed, its tasks running), and at equal priority turn 1 of every
#: principal comes before any turn 2: round-robin over the queue's places, so 10,000 waiting tasks
#: of one tenant, and the window it already fills, put no task ahead of another tenant's first. A
#: principal of weight w (``:w_keys`` / ``:w_values``, the setting ``fairness_weights``; unlisted: 1)
#: takes w places per turn: ``turn = ceil((held + nth) / w)``.
#: Only each principal's first ``:window`` waiting intents are ranked (``nth <= :window``): an intent
#: ranks behind all of its principal's earlier ones (higher priority first; at its priority a turn no
#: lower, then the submit time), so a principal's (window + 1)-th can never be among the queue's first
#: ``:window`` places; the cut drops the backlog's tail before the second sort and ranking, and
#: ``chosen`` keeps its first ``:limit`` (the statement's own limit), so only those are joined back.
#: (Ranked first, then locked: FOR UPDATE cannot stand beside a window function; the lock re-checks
#: each row, so a rank another dispatcher took is skipped.) The rows come in ``place`` order.
#: ``ahead``: an intent whose turn comes before the latest turn the queue has handed out (``crowd``:
#: the most places a principal holds, by weight) while the queue holds messages sent in earlier
#: rounds, at the batch's and those messages' highest priority: a principal served less than another
#: is not made to wait behind that one's messages, so the dispatcher puts it at the end workers take
#: from (RPUSH) instead of behind them (:meth:`tasklift.queue.broker.Broker.dispatch_due`).
ADMIT_WINDOW_SQL = f"""
WITH {_KEYED}, {_RATED}, sent AS (
    SELECT s.queue, count(*) AS n, max(b.priority) AS top
    FROM task_outbox AS s JOIN tasks AS b ON b.id = s.task_id WHERE s.published_at IS NOT NULL GROUP BY s.queue
), weights AS (
    SELECT key, weight FROM unnest(CAST(:w_keys AS text[]), CAST(:w_values AS int[])) AS w (key, weight)
), held AS (
    SELECT queue, principal, count(*) AS n FROM (
        SELECT b.queue, coalesce(b.fairness_key, b.owner) AS principal FROM tasks AS b WHERE b.status = 'RUNNING'
        UNION ALL
        SELECT s.queue, coalesce(b.fairness_key, b.owner) FROM task_outbox AS s JOIN tasks AS b ON b.id = s.task_id
        WHERE s.published_at IS NOT NULL
    ) AS h GROUP BY queue, principal
), crowd AS (
    SELECT h.queue, max((h.n + coalesce(w.weight, 1) - 1) / coalesce(w.weight, 1)) AS turn
    FROM held AS h LEFT JOIN weights AS w ON w.key = h.principal GROUP BY h.queue
), turns AS (
    SELECT o.task_id, o.queue, t.priority, t.created_at, coalesce(w.weight, 1) AS weight,
        coalesce(h.n, 0) AS held,
        row_number() OVER (
            PARTITION BY o.queue, t.priority, coalesce(t.fairness_key, t.owner) ORDER BY {_ORDER}
        ) AS nth
    FROM task_outbox AS o JOIN tasks AS t ON t.id = o.task_id
        LEFT JOIN weights AS w ON w.key = coalesce(t.fairness_key, t.owner)
        LEFT JOIN held AS h ON h.queue = o.queue AND h.principal = coalesce(t.fairness_key, t.owner)
    WHERE {_ADMISSIBLE} AND {_WITHIN_LIMIT} AND {_WITHIN_RATE}
), ranked AS (
    SELECT task_id, queue, priority, created_at, (held + nth + weight - 1) / weight AS turn,
        row_number() OVER (
            PARTITION BY queue ORDER BY priority DESC, (held + nth + weight - 1) / weight, created_at, task_id
        ) AS place
    FROM turns WHERE nth <= :window
), chosen AS (
    SELECT ranked.task_id, ranked.place,
        coalesce(sent.n, 0) > 0 AND ranked.turn < crowd.turn AND ranked.priority >= sent.top
            AND ranked.priority = max(ranked.priority) OVER (PARTITION BY ranked.queue) AS ahead
    FROM ranked LEFT JOIN sent ON sent.queue = ranked.queue LEFT JOIN crowd ON crowd.queue = ranked.queue
    WHERE ranked.place <= :window - coalesce(sent.n, 0)
    ORDER BY ranked.place, ranked.priority DESC, ranked.created_at, ranked.task_id
    LIMIT :limit
)
SELECT {_COLUMNS}, c.ahead
FROM task_outbox AS o JOIN tasks AS t ON t.id = o.task_id JOIN chosen AS c ON c.task_id = o.task_id
WHERE o.published_at IS NULL
ORDER BY c.place, {_ORDER}
LIMIT :limit
FOR UPDATE OF o SKIP LOCKED"""

_ADMIT, _ADMIT_WINDOW = text(ADMIT_SQL), text(ADMIT_WINDOW_SQL)


@dataclass(frozen=True)
class RateRule:
    """A task type's rate limit in force: ``count`` per ``period`` seconds, per type or per key."""

    task_type: str
    count: int
    period: float
    per_key: bool = False

    def bucket(self, concurrency_key: str | None) -> str | None:
        """The bucket an intent with ``concurrency_key`` spends from (None: it is not limited)."""
        return concurrency_key if self.per_key else ""


def admit(
    conn: Connection,
    limit: int = 500,
    window: int = 0,
    rates: Sequence[RateRule] = (),
    spend: bool = True,
    *,
    weights: Mapping[str, int] | None = None,
) -> list[RowMapping]:
    """Lock the intents the dispatcher may publish now, in the order to publish them (``window`` 0: none).

    ``rates``: the rate limits in force; with ``spend`` False (another dispatcher holds the buckets'
    lock: :func:`lock_rate_buckets`) no intent of a rate-limited type is admitted this round.
    ``weights``: the fair-share weight of a fairness key or principal under a window (unlisted: 1)."""
    params = {**admit_params(limit, window, rates, spend), **weight_params(weights)}
    return list(conn.execute(_ADMIT_WINDOW if window > 0 else _ADMIT, params).mappings())


def weight_params(weights: Mapping[str, int] | None) -> dict[str, list[Any]]:
    """:data:`ADMIT_WINDOW_SQL`'s two weight arrays (empty: every principal weighs 1; the same statement)."""
    pairs = sorted((weights or {}).items())
    return {"w_keys": [key for key, _ in pairs], "w_values": [int(weight) for _, weight in pairs]}


def admit_params(limit: int, window: int = 0, rates: Sequence[RateRule] = (), spend: bool = True) -> dict[str, object]:
    """The parameters of :data:`ADMIT_SQL` / :data:`ADMIT_WINDOW_SQL`."""
    return {
        "limit": limit,
        "window": window,
        "rate_types": [r.task_type for r in rates],
        "rate_counts": [float(r.count) if spend else 0.0 for r in rates],
        "rate_periods": [r.period for r in rates],
        "rate_per_key": [r.per_key for r in rates],
    }


#: The rate buckets' lock (a transaction-level advisory lock): one dispatcher at a time reads and
#: spends tokens; a dispatcher that does not get it admits no rate-limited intent that round.
LOCK_RATE_BUCKETS_SQL = "SELECT pg_try_advisory_xact_lock(hashtext('tasklift.rate_buckets'))"
_LOCK_RATE_BUCKETS = text(LOCK_RATE_BUCKETS_SQL)


def lock_rate_buckets(conn: Connection) -> bool:
    """Take the rate buckets' lock until the transaction ends; False if another dispatcher has it."""
    return bool(conn.execute(_LOCK_RATE_BUCKETS).scalar_one())


#: Spend tokens: each bucket's (``:types``, ``:keys``) refilled to now (at most its ``:counts``, as in
#: :data:`_RATED`) less what was published from it (``:taken``); a bucket's first spending creates it.
TAKE_TOKENS_SQL = """
INSERT INTO rate_buckets AS b (task_type, bucket_key, capacity, period_seconds, tokens, refilled_at)
SELECT d.task_type, d.bucket_key, d.capacity, d.period, d.capacity - d.taken, now()
FROM unnest(CAST(:types AS text[]), CAST(:keys AS text[]), CAST(:counts AS float8[]), CAST(:periods AS float8[]),
    CAST(:taken AS float8[])) AS d(task_type, bucket_key, capacity, period, taken)
ON CONFLICT (task_type, bucket_key) DO UPDATE SET
    tokens = least(excluded.capacity, b.tokens + excluded.capacity
        * greatest(0, extract(epoch FROM now() - b.refilled_at)) / excluded.period_seconds)
        - (excluded.capacity - excluded.tokens),
    capacity = excluded.capacity, period_seconds = excluded.period_seconds, refilled_at = now()"""
_TAKE_TOKENS = text(TAKE_TOKENS_SQL)


def take_tokens(conn: Connection, rates: Sequence[RateRule], published: Iterable[RowMapping]) -> None:
    """Debit the buckets of the admitted intents that were ``published`` (rows of :func:`admit`)."""
    by_type = {r.task_type: r for r in rates}
    taken: Counter[tuple[RateRule, str]] = Counter()
    for row in published:
        rule = by_type.get(row["task_type"])
        if rule is not None and (bucket := rule.bucket(row["concurrency_key"])) is not None:
            taken[rule, bucket] += 1
    if taken:
        spent = list(taken.items())
        conn.execute(
            _TAKE_TOKENS,
            {
                "types": [rule.task_type for (rule, _), _ in spent],
                "keys": [bucket for (_, bucket), _ in spent],
                "counts": [float(rule.count) for (rule, _), _ in spent],
                "periods": [rule.period for (rule, _), _ in spent],
                "taken": [float(n) for _, n in spent],
            },
        )


#: Seconds until the next unpublished intent comes due (None: none is ahead), for the dispatcher's
#: sleep. Only intents ahead count: one due already but held (a paused queue, a full window) waits
#: for the next round, so a held intent never makes the loop spin.
NEXT_DUE_SQL = """
SELECT extract(epoch FROM min(available_at) - now()) FROM task_outbox
WHERE published_at IS NULL AND available_at > now()"""
_NEXT_DUE = text(NEXT_DUE_SQL)


def seconds_to_next_due(conn: Connection) -> float | None:
    """How long until the earliest unpublished intent ahead is due (:data:`NEXT_DUE_SQL`)."""
    value = conn.execute(_NEXT_DUE).scalar_one()
    return None if value is None else float(value)


#: Expiry: PENDING tasks never started whose ``expires_at`` passed become EXPIRED, with their status
#: event and without their outbox intent, ``:limit`` per statement (ix_tasks_pending_expiry), rows
#: another sweep holds skipped. A task that has started once (a retry's back-off) does not expire.
EXPIRE_SQL = f"""
WITH due AS (
    SELECT id AS expiring FROM tasks
    WHERE status = 'PENDING' AND expires_at IS NOT NULL AND started_at IS NULL AND expires_at <= now()
    ORDER BY expires_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), r AS (
    UPDATE tasks SET status = 'EXPIRED', completed_at = now(), updated_at = now(), last_seq = last_seq + 1,
        error = jsonb_build_object('type', 'Expired', 'message', 'the task was not started by its expires_at')
    FROM due WHERE tasks.id = due.expiring AND tasks.status = 'PENDING'
    RETURNING {repo.TASK_COLUMNS}
), expire_event AS (
    INSERT INTO task_events (task_id, seq, kind, data) SELECT r.id, r.last_seq, 'status', {repo.STATUS_DATA_SQL} FROM r
), no_dispatch AS (
    DELETE FROM task_outbox WHERE task_id IN (SELECT id FROM r)
)
SELECT {repo.TASK_COLUMNS} FROM r"""
_EXPIRE = text(EXPIRE_SQL)


def expire_due(conn: Connection, limit: int = 1000) -> list[tuple[RowMapping, repo.Event]]:
    """End the due expiries (:data:`EXPIRE_SQL`); the rows and the status events to announce."""
    rows = conn.execute(_EXPIRE, {"limit": limit}).mappings().all()
    return [(row, repo.Event(str(row["id"]), row["last_seq"], "status", repo.status_data(dict(row)))) for row in rows]
