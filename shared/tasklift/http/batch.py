"""``POST /tasks:batch``: submit many tasks in one request (issue 22, part 2).

The answer is **200** with one result per item, in request order: an accepted item carries
``"status": 202`` and its task resource (``"replayed": true`` when its ``idempotency_key`` gave an
earlier task back), a refused one its own status (422, or 409 while its key is in flight) and a
problem details object whose ``errors[].loc`` points into the request (``["body", "items", 3,
"task", "vector_data"]``). 200 and not 207: 207 Multi-Status is WebDAV's (RFC 4918), whose body is
an XML ``multistatus``; here the request as a whole was processed, and each item says how it went
(as Microsoft Graph's and Google's JSON batches do). The request itself is refused as a whole only
for its envelope: a body over ``batch_max_bytes`` (413), not ``{"items": [...]}``, no items, or more
than ``batch_max_items`` (422), and the store not committing (503: then no item was accepted).

Each item is validated as ``POST /tasks`` validates its body; the valid ones are inserted together
with their Idempotency-Keys (:func:`tasklift.store.batches.insert_batch`), then published after the
commit through the service's enqueuer (as a keyed single submit is). A bad item is reported in its
place and takes nothing else down. Idempotency is per item, in the same namespace as the
``Idempotency-Key`` header of ``POST /tasks`` (scoped to the caller): the same key and the same
task body give the same task back, replayed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from tasklift import telemetry
from tasklift.blobs import claims
from tasklift.http.handlers import _json_body, request_runtime
from tasklift.http.problems import PROBLEM_TYPE_BASE
from tasklift.http.resources import task_resource
from tasklift.http.types import HttpRequest, HttpResponse, json_response
from tasklift.settings import get_settings
from tasklift.store.batches import KeyedTask, insert_batch
from tasklift.store.repository import Dispatch
from tasklift.tasks import callbacks
from tasklift.tasks.service import (
    Conflict,
    InvalidInput,
    ServiceError,
    TaskService,
    new_task,
    parse_flow,
    parse_submission,
    request_fingerprint,
    vet_callback,
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


async def _parse_item(service_owner: str, index: int, item: Any) -> _Valid:
    """Validate one item of the batch (its webhook too); raises InvalidInput with the item's ``loc``."""
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
    plain, callback_fields = callbacks.split(body)
    try:
        ttype, task_input, metadata = parse_submission(plain)
        flow = parse_flow(body)
        callback = await vet_callback(callback_fields, ttype)
    except InvalidInput as exc:
        raise _at(index, exc, ["task"]) from None
    if not claims.fits_inline(task_input):  # no blob storage in a batch: submit large inputs one by one
        raise _invalid(index, ["task"], "this input is too large for a batch item", "submit it alone with POST /tasks")
    task_id = uuid.uuid4()
    fingerprint = request_fingerprint(body)
    task = new_task(task_id, service_owner, ttype, task_input, metadata, flow, callback)
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
            parsed = await _parse_item(owner, index, item)
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
    # After the commit; never raises for the broker. A delayed item waits for the dispatcher.
    await service.enqueuer.enqueue([v.dispatch for v in inserted if v.keyed.task.inline])
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


# --- HTTP ----------------------------------------------------------------------------------------


def _envelope_items(body: Any, most: int) -> list[Any]:
    if not isinstance(body, dict) or set(body) != {"items"} or not isinstance(body["items"], list):
        raise InvalidInput(
            'the body must be {"items": [...]}',
            [{"loc": ["body"], "msg": 'an object with one field, "items", an array of items'}],
        )
    items: list[Any] = body["items"]
    if not 0 < len(items) <= most:
        raise InvalidInput(
            f"a batch holds 1 to {most} items (batch_max_items); this one has {len(items)}",
            [{"loc": ["body", "items"], "msg": f"1 to {most} items", "limit": "batch_max_items"}],
        )
    return items


def _item(result: ItemResult, instance: str) -> dict[str, Any]:
    if result.task is not None:
        return {"status": 202, "task": task_resource(result.task), "replayed": result.replayed}
    error = result.error
    assert error is not None
    status, slug = (409, "conflict") if isinstance(error, Conflict) else (422, "invalid-input")
    problem = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": error.detail,
        "instance": instance,
        "errors": error.errors,
    }
    return {"status": status, "problem": problem}


async def submit_tasks_batch(req: HttpRequest) -> HttpResponse:
    """POST /tasks:batch: validate each item, commit the valid ones in ONE transaction, answer per item."""
    settings = get_settings()
    body = _json_body(req, settings.batch_max_bytes)
    items = _envelope_items(body, settings.batch_max_items)
    results = await submit_batch(request_runtime(req).service, req.principal, items)
    answers = [_item(result, req.path) for result in results]
    accepted = sum(1 for answer in answers if answer["status"] == 202)
    summary = {"accepted": accepted, "rejected": len(answers) - accepted}
    return json_response(200, {**summary, "items": answers}, {"Cache-Control": "no-store"})
