"""Batch submit: many submits in one request, committed in ONE transaction, one result per item.

Each item is validated as ``POST /tasks`` validates its body; the valid ones are inserted together
with their Idempotency-Keys (:func:`tasklift.store.batches.insert_batch`), then published after the
commit through the service's enqueuer (as a keyed single submit is). A bad item is reported in its
place and takes nothing else down: the batch is not all-or-nothing for validation, only for the
store (if the transaction fails, no item is accepted and the whole request is 503).

Idempotency is per item, in the same namespace as the ``Idempotency-Key`` header of ``POST /tasks``
(scoped to the caller): the same key and the same task body give the same task back, replayed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasklift import telemetry
from tasklift.blobs import claims
from tasklift.queue.dispatch import Dispatch
from tasklift.settings import get_settings
from tasklift.store.batches import KeyedTask, insert_batch
from tasklift.tasks.service import (
    Conflict,
    InvalidInput,
    ServiceError,
    TaskService,
    new_task,
    parse_submission,
    request_fingerprint,
)

MAX_KEY = 255
_ITEM_FIELDS = frozenset({"task", "idempotency_key"})


@dataclass
class ItemResult:
    """One item's outcome: ``task`` (accepted, or ``replayed``) or ``error`` (InvalidInput: 422, Conflict: 409)."""

    task: Mapping[str, Any] | None = None
    replayed: bool = False
    error: ServiceError | None = None


@dataclass
class _Valid:
    index: int
    key: str | None
    fingerprint: str
    keyed: KeyedTask
    dispatch: Dispatch
    task_type: str
    same_as: int | None = None  #: an earlier item of this batch with the same key and body
    result: ItemResult = field(default_factory=ItemResult)


def _at(index: int, exc: InvalidInput, inner: list[Any]) -> InvalidInput:
    """``exc`` with each error's ``loc`` placed under ``body.items[index]`` (``inner`` after ``body``)."""
    errors = [{**e, "loc": ["body", "items", index, *inner, *list(e.get("loc", []))[1:]]} for e in exc.errors]
    return InvalidInput(exc.detail, errors)


def _invalid(index: int, where: list[Any], detail: str, msg: str) -> InvalidInput:
    return InvalidInput(detail, [{"loc": ["body", "items", index, *where], "msg": msg}])


def _parse_item(service_owner: str, index: int, item: Any) -> _Valid:
    """Validate one item of the batch; raises InvalidInput with the item's ``loc``."""
    if not isinstance(item, dict):
        raise _invalid(index, [], "each item must be an object", 'an object {"task": {...}, "idempotency_key": ...}')
    if unknown := sorted(set(item) - _ITEM_FIELDS):
        detail = f"unknown item field {unknown[0]!r}"
        raise _invalid(index, [unknown[0]], detail, "an item has only task and idempotency_key")
    key = item.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_KEY or "\x00" in key):
        raise _invalid(index, ["idempotency_key"], "idempotency_key must be 1 to 255 characters", "1 to 255, no NUL")
    if "task" not in item:
        raise _invalid(index, ["task"], "each item needs a task (a POST /tasks body)", "field required")
    body = item["task"]
    try:
        ttype, task_input, metadata = parse_submission(body)
    except InvalidInput as exc:
        raise _at(index, exc, ["task"]) from None
    if not claims.fits_inline(task_input):  # no blob storage in a batch: submit large inputs one by one
        raise _invalid(index, ["task"], "this input is too large for a batch item", "submit it alone with POST /tasks")
    task_id = uuid.uuid4()
    fingerprint = request_fingerprint(body)
    task = new_task(task_id, service_owner, ttype, task_input, metadata)
    keyed = KeyedTask(task, key, fingerprint if key is not None else None)
    return _Valid(index, key, fingerprint, keyed, Dispatch(task_id, ttype.queue, ttype.name), ttype.name)


async def submit_batch(service: TaskService, owner: str, items: list[Any]) -> list[ItemResult]:
    """Submit ``items`` (each ``{"task": <POST /tasks body>, "idempotency_key"?: str}``) for ``owner``.

    Returns one :class:`ItemResult` per item, in order. The valid items with new keys (or none) are
    inserted in ONE transaction and published after its commit.

    Raises:
        DatabaseError: the store could not commit: no item was accepted.
    """
    results: list[ItemResult] = []
    valid: list[_Valid] = []
    first_with_key: dict[str, _Valid] = {}
    for index, item in enumerate(items):
        try:
            parsed = _parse_item(owner, index, item)
        except InvalidInput as exc:
            results.append(ItemResult(error=exc))
            continue
        if parsed.key is not None and (first := first_with_key.get(parsed.key)) is not None:
            if first.fingerprint != parsed.fingerprint:
                detail = "this idempotency_key is used by an earlier item of the batch with another task"
                msg = f"the same key as item {first.index}, with a different task"
                results.append(ItemResult(error=_invalid(index, ["idempotency_key"], detail, msg)))
                continue
            parsed.same_as = first.index
        elif parsed.key is not None:
            first_with_key[parsed.key] = parsed
        results.append(parsed.result)
        valid.append(parsed)
    sent = [v for v in valid if v.same_as is None]
    if not sent:
        return results
    with telemetry.span("tasklift.submit_batch"):
        telemetry.annotate(items=len(items), valid=len(sent))
        ttl = get_settings().idempotency_ttl_seconds
        outcome = await insert_batch(service.store, owner, [v.keyed for v in sent], ttl)
    inserted = []
    for v, row in zip(sent, outcome.rows, strict=True):
        if row is not None:
            v.result.task = row
            inserted.append(v)
            continue
        assert v.key is not None  # only a keyed item can find its key held
        _replay(v, outcome.earlier.get(v.key), outcome.replayed)
    await service.enqueuer.enqueue([v.dispatch for v in inserted])  # after the commit; never raises for the broker
    for v in inserted:
        telemetry.task_submitted(v.task_type)
    by_index = {v.index: v for v in sent}
    for v in valid:
        if v.same_as is not None:
            original = by_index[v.same_as].result
            v.result.task, v.result.error, v.result.replayed = original.task, original.error, original.task is not None
    return results


def _replay(item: _Valid, earlier: Mapping[str, Any] | None, rows: Mapping[uuid.UUID, Mapping[str, Any]]) -> None:
    """The outcome of an item whose key an earlier request holds (as :meth:`TaskService._replay`)."""
    loc = ["body", "items", item.index, "idempotency_key"]
    if earlier is None:  # expired and purged between the two statements: as busy, try again
        item.result.error = Conflict("this idempotency_key is being reused; try again", [{"loc": loc, "msg": "busy"}])
    elif earlier["request_hash"] != item.fingerprint:
        errors = [{"loc": loc, "msg": "reused with a different task"}]
        item.result.error = InvalidInput("this idempotency_key was already used with a different task", errors)
    elif earlier["task_id"] is None:
        errors = [{"loc": loc, "msg": "in flight"}]
        item.result.error = Conflict("a request with this idempotency_key is still being processed", errors)
    elif (row := rows.get(earlier["task_id"])) is None:
        errors = [{"loc": loc, "msg": "its task was purged"}]
        item.result.error = Conflict("the task created with this idempotency_key no longer exists", errors)
    else:
        item.result.task, item.result.replayed = row, True
