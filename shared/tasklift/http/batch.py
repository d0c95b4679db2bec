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
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from tasklift.http.handlers import _json_body, _service
from tasklift.http.problems import PROBLEM_TYPE_BASE
from tasklift.http.resources import task_resource
from tasklift.http.types import HttpRequest, HttpResponse, json_response
from tasklift.settings import get_settings
from tasklift.tasks.batch import ItemResult, submit_batch
from tasklift.tasks.service import Conflict, InvalidInput


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
    results = await submit_batch(_service(req), req.principal, items)
    answers = [_item(result, req.path) for result in results]
    accepted = sum(1 for answer in answers if answer["status"] == 202)
    summary = {"accepted": accepted, "rejected": len(answers) - accepted}
    return json_response(200, {**summary, "items": answers}, {"Cache-Control": "no-store"})
