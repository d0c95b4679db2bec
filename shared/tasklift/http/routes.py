"""The route table every host serves, and :func:`handle`, which maps errors to problem+json."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tasklift import telemetry
from tasklift.http import batch, bulk, deliveries, handlers, operations, output, queues, schedules, signals
from tasklift.http.guard import guard
from tasklift.http.problems import Problem, problem_response
from tasklift.http.types import HttpRequest, HttpResponse
from tasklift.settings import get_settings
from tasklift.store import aio
from tasklift.store import repository as repo
from tasklift.tasks.service import Conflict, InvalidInput, NotFound

log = logging.getLogger(__name__)

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass(frozen=True)
class Route:
    """One endpoint: method, path template (``{name}`` segments), handler and a function name."""

    method: str
    template: str
    handler: Handler
    name: str

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template) + "/?$")


ROUTES: list[Route] = [
    Route("POST", "/tasks", handlers.submit_task, "submit_task"),
    Route("POST", "/tasks:batch", batch.submit_tasks_batch, "submit_tasks_batch"),  # http/batch.py
    Route("GET", "/tasks", handlers.list_tasks, "list_tasks"),
    Route("GET", "/tasks/{task_id}", handlers.get_task, "get_task"),
    Route("DELETE", "/tasks/{task_id}", handlers.cancel_task, "cancel_task"),
    Route("GET", "/tasks/{task_id}/logs", handlers.task_logs, "task_logs"),
    Route("GET", "/tasks/{task_id}/stream", handlers.stream_task, "stream_task"),
    Route("GET", "/tasks/{task_id}/output", output.task_output, "task_output"),
    Route("GET", "/tasks/{task_id}/result", handlers.task_result, "task_result"),
    Route("POST", "/tasks/{task_id}/retry", handlers.retry_task, "retry_task"),
    Route("POST", "/tasks/{task_id}/signals/{name}", signals.send_signal, "send_signal"),  # http/signals.py
    Route("GET", "/tasks/{task_id}/steps", signals.task_steps, "task_steps"),
    # Webhook deliveries (http/deliveries.py; docs/webhooks.md).
    Route("GET", "/tasks/{task_id}/deliveries", deliveries.list_deliveries, "list_deliveries"),
    Route("POST", "/tasks/{task_id}/deliveries/{delivery_id}:redeliver", deliveries.redeliver, "redeliver_delivery"),
    # Standard long-running-operation views of a task (http/operations.py): Azure's status monitor
    # (Azure-AsyncOperation) and AIP-151's google.longrunning.Operation.
    Route("GET", "/operations/{task_id}", operations.get_operation_status, "get_operation_status"),
    Route("GET", "/v1/operations/{task_id}", operations.get_google_operation, "get_google_operation"),
    Route("POST", "/v1/operations/{task_id}:cancel", operations.cancel_google_operation, "cancel_google_operation"),
    Route("POST", "/queues/{queue}:pause", queues.pause_queue, "pause_queue"),  # http/queues.py (admin)
    Route("POST", "/queues/{queue}:resume", queues.resume_queue, "resume_queue"),
    # Bulk cancel / retry / purge by filter, an operation of its own (http/bulk.py, docs/bulk.md).
    Route("POST", "/bulk", bulk.create_bulk, "create_bulk"),
    Route("GET", "/bulk", bulk.list_bulk, "list_bulk"),
    Route("GET", "/bulk/{bulk_id}", bulk.get_bulk, "get_bulk"),
    Route("DELETE", "/bulk/{bulk_id}", bulk.cancel_bulk, "cancel_bulk"),
    # Cron / interval schedules (http/schedules.py, docs/flow-control.md "Schedules").
    Route("POST", "/schedules", schedules.create_schedule, "create_schedule"),
    Route("GET", "/schedules", schedules.list_schedules, "list_schedules"),
    Route("GET", "/schedules/{schedule_id}", schedules.get_schedule, "get_schedule"),
    Route("DELETE", "/schedules/{schedule_id}", schedules.delete_schedule, "delete_schedule"),
    Route("POST", "/schedules/{schedule_id}:pause", schedules.pause_schedule, "pause_schedule"),
    Route("POST", "/schedules/{schedule_id}:resume", schedules.resume_schedule, "resume_schedule"),
    Route("GET", "/schedules/{schedule_id}/runs", schedules.schedule_runs, "schedule_runs"),
    Route("GET", "/task-types", handlers.task_types, "task_types"),
    Route("GET", "/healthz", handlers.healthz, "healthz"),
    Route("GET", "/readyz", handlers.readyz, "readyz"),
    # Operational like /healthz: Prometheus scrapes it, so whatever authentication handle() applies
    # should let /metrics through as it does the probes (it shows counts and timings, no task data).
    Route("GET", "/metrics", handlers.metrics, "metrics"),
]


def match(method: str, path: str) -> tuple[Route, dict[str, str]] | None | bool:
    """The route for ``method path`` and its path parameters; False if the path exists for another method."""
    path_known = False
    for route in ROUTES:
        found = route.pattern.match(path)
        if found:
            if route.method == method.upper():
                return route, found.groupdict()
            path_known = True
    return False if path_known else None


def allowed_methods(path: str) -> str:
    """The ``Allow`` header of a 405 on ``path``: every method the route table serves there."""
    methods = sorted({route.method for route in ROUTES if route.pattern.match(path)})
    return ", ".join(methods)


def not_allowed(method: str, path: str, allow: str | None = None) -> HttpResponse:
    """405 problem+json with ``Allow`` (RFC 9110 §15.5.6: a 405 must list the allowed methods);
    ``allow`` for a path outside the route table (the dashboard's)."""
    allow = allowed_methods(path) or allow or ""
    problem = Problem(405, f"{method} is not allowed on {path}", headers={"Allow": allow})
    return problem_response(problem, path)


@telemetry.traced_request  # the server span of every host, continuing an incoming W3C traceparent
async def handle(route: Route, req: HttpRequest) -> HttpResponse:
    """Run ``route`` for ``req``; every error becomes problem+json (never a stack trace)."""
    try:
        if len(req.headers) > (most := get_settings().max_header_count):
            raise Problem(431, f"a request may carry at most {most} headers (max_header_count)")
        for name in sorted(req.repeated_query):  # which one would count is the host's guess
            raise InvalidInput(
                f"the query parameter {name} is given more than once",
                [{"loc": ["query", name], "msg": "given more than once; this parameter takes one value"}],
            )
        for name, value in req.query.items():
            if "\x00" in value:  # PostgreSQL text cannot hold NUL; no parameter means one
                raise InvalidInput(
                    f"the query parameter {name} contains NUL",
                    [{"loc": ["query", name], "msg": "text with NUL (\\u0000)"}],
                )
        return await guard(route.name, route.handler, req)  # authenticate, apply the limits, then run it
    except Problem as problem:
        return problem_response(problem, req.path)
    except NotFound as exc:
        return problem_response(Problem(404, exc.detail, slug="not-found"), req.path)
    except InvalidInput as exc:
        return problem_response(Problem(422, exc.detail, errors=exc.errors, slug="invalid-input"), req.path)
    except Conflict as exc:
        return problem_response(Problem(409, exc.detail, headers={"Retry-After": "1"}, slug="conflict"), req.path)
    except aio.DatabaseError as exc:
        if repo.refused_value(exc):  # a value PostgreSQL cannot take: the request's fault, not an outage
            log.warning("the store refused a value of %s %s: %s", req.method, req.path, exc)
            refused = Problem(400, "the task store refused a value of this request", slug="invalid-value")
            return problem_response(refused, req.path)
        log.exception("database unavailable while serving %s %s", req.method, req.path)
        outage = Problem(503, "the task store is unavailable; try again", headers={"Retry-After": "5"})
        return problem_response(outage, req.path)
    except Exception:
        log.exception("unhandled error while serving %s %s", req.method, req.path)
        return problem_response(Problem(500, "an internal error occurred; it has been logged"), req.path)


async def dispatch(req: HttpRequest) -> HttpResponse:
    """Find the route for ``req`` and handle it (404 / 405 as problem+json otherwise)."""
    found = match(req.method, req.path)
    if found is None:
        return problem_response(Problem(404, f"no endpoint at {req.path}", slug="not-found"), req.path)
    if found is False:
        return not_allowed(req.method, req.path)
    assert not isinstance(found, bool)
    route, params = found
    req.path_params = params
    return await handle(route, req)
