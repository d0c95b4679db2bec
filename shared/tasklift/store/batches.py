"""A batch of submits in ONE transaction on the API's asyncpg store (``POST /tasks:batch``).

The tasks are inserted by :func:`tasklift.store.aio.insert_many` (one statement for all of them,
with their first events and outbox rows); the items' Idempotency-Keys are reserved, read and bound
set-wise, one statement each, whatever the batch's size. Either every task and key of the batch
commits or none does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from tasklift.store import aio
from tasklift.store import repository as repo
from tasklift.store.aio import positional

#: Expired records of these keys go first, as for one submit (:data:`repository.DELETE_EXPIRED_KEY_SQL`).
DELETE_EXPIRED_KEYS_SQL = (
    "DELETE FROM idempotency_keys WHERE owner = :owner AND key = ANY(CAST(:keys AS text[])) AND expires_at < now()"
)
#: Reserve the keys not held yet; the ones returned are this batch's.
INSERT_KEYS_SQL = """
INSERT INTO idempotency_keys (owner, key, request_hash, expires_at)
SELECT :owner, k.key, k.request_hash, now() + make_interval(secs => :ttl)
FROM unnest(CAST(:keys AS text[]), CAST(:hashes AS text[])) AS k(key, request_hash)
ON CONFLICT DO NOTHING RETURNING key"""
GET_KEYS_SQL = (
    "SELECT key, request_hash, task_id FROM idempotency_keys WHERE owner = :owner AND key = ANY(CAST(:keys AS text[]))"
)
#: Bind each reserved key to the task it created (same transaction as the INSERT).
COMPLETE_KEYS_SQL = """
UPDATE idempotency_keys AS k SET task_id = v.task_id
FROM unnest(CAST(:keys AS text[]), CAST(:task_ids AS uuid[])) AS v(key, task_id)
WHERE k.owner = :owner AND k.key = v.key"""

_DELETE_EXPIRED, _DELETE_EXPIRED_ARGS = positional(DELETE_EXPIRED_KEYS_SQL)
_INSERT_KEYS, _INSERT_KEYS_ARGS = positional(INSERT_KEYS_SQL)
_GET_KEYS, _GET_KEYS_ARGS = positional(GET_KEYS_SQL)
_COMPLETE_KEYS, _COMPLETE_KEYS_ARGS = positional(COMPLETE_KEYS_SQL)
_GET_TASKS, _ = positional(repo.GET_TASKS_SQL)


@dataclass(frozen=True)
class KeyedTask:
    """A task of the batch and the Idempotency-Key it came with (None: none)."""

    task: repo.NewTask
    key: str | None = None
    request_hash: str | None = None


@dataclass
class BatchOutcome:
    """What the transaction did: ``rows[i]`` is the inserted row of ``items[i]``, or None when its
    key was held already; ``earlier[key]`` is that key's record (``request_hash``, ``task_id``) and
    ``replayed[task_id]`` the rows of the tasks those records name (the caller's only)."""

    rows: list[asyncpg.Record | None]
    earlier: dict[str, asyncpg.Record]
    replayed: dict[uuid.UUID, asyncpg.Record]


def _args(sql_args: Sequence[str], values: dict[str, Any]) -> list[Any]:
    return [values[name] for name in sql_args]


async def insert_batch(store: aio.AsyncStore, owner: str, items: Sequence[KeyedTask], ttl: float) -> BatchOutcome:
    """Reserve the items' keys, insert the tasks whose key is new (or who have none) and bind their
    keys, in ONE transaction. Keys must be distinct within ``items`` (the caller resolves repeats)."""
    keyed = [item for item in items if item.key is not None]
    keys = [item.key for item in keyed]

    async def transaction(conn: asyncpg.Connection) -> BatchOutcome:
        async with conn.transaction():
            earlier: dict[str, asyncpg.Record] = {}
            reserved: set[str] = set()
            if keyed:
                values = {"owner": owner, "keys": keys, "hashes": [item.request_hash for item in keyed], "ttl": ttl}
                await conn.execute(_DELETE_EXPIRED, *_args(_DELETE_EXPIRED_ARGS, values))
                reserved = {row["key"] for row in await conn.fetch(_INSERT_KEYS, *_args(_INSERT_KEYS_ARGS, values))}
                held = [key for key in keys if key not in reserved]
                if held:
                    found = await conn.fetch(_GET_KEYS, *_args(_GET_KEYS_ARGS, {"owner": owner, "keys": held}))
                    earlier = {row["key"]: row for row in found}
            fresh = [item for item in items if item.key is None or item.key in reserved]
            inserted: list[asyncpg.Record] = []
            if fresh:
                # AsyncStore.run runs this again when its connection was lost, perhaps after the
                # commit: the rows of this batch already there are read back, not inserted again
                # (one index lookup; a unique violation would abort this transaction, and
                # insert_many's own read-back is for autocommit). Keyed items are replays above.
                inserted = await conn.fetch(_GET_TASKS, [item.task.task_id for item in fresh])
                there = {row["id"] for row in inserted}
                fresh = [item for item in fresh if item.task.task_id not in there]
            if fresh:
                inserted += await aio.insert_many(conn, [item.task for item in fresh])
            by_id = {row["id"]: row for row in inserted}
            bound = [item for item in fresh if item.key is not None]
            if bound:
                values = {"owner": owner, "keys": [i.key for i in bound], "task_ids": [i.task.task_id for i in bound]}
                await conn.execute(_COMPLETE_KEYS, *_args(_COMPLETE_KEYS_ARGS, values))
            earlier_ids = [row["task_id"] for row in earlier.values() if row["task_id"] is not None]
            replayed = {}
            if earlier_ids:
                replayed = {r["id"]: r for r in await conn.fetch(_GET_TASKS, earlier_ids) if r["owner"] == owner}
            rows = [by_id.get(item.task.task_id) for item in items]
            return BatchOutcome(rows, earlier, replayed)

    return await store.run(transaction)
