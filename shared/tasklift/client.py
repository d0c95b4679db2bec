"""A Python client for the tasklift HTTP API, on httpx.

::

    from tasklift.client import TaskliftClient

    with TaskliftClient("http://127.0.0.1:8000") as tl:
        task = tl.submit("web_scrape", url="https://example.com/")
        for event in tl.stream(task.task_id):          # reconnects with Last-Event-ID by itself
            print(event.kind, event.data.get("progress"))
        print(tl.get(task.task_id).result)

Every error answer (problem+json) raises :class:`TaskliftError` carrying the problem.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from httpx_sse import connect_sse

from tasklift.http.schemas import TaskResource

TERMINAL = frozenset({"SUCCESS", "FAILED", "CANCELLED", "EXPIRED"})


class TaskliftError(Exception):
    """An error answer from the API, with its RFC 9457 problem details."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")
        self.status = status
        self.problem = problem
        self.retry_after = problem.get("_retry_after")


@dataclass(frozen=True)
class StreamEvent:
    """One SSE event of a task's stream."""

    seq: int
    kind: str  #: status | progress | log
    data: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def terminal(self) -> bool:
        """True for the status event that ends the stream."""
        return self.kind == "status" and self.status in TERMINAL


class TaskliftClient:
    """Submit, poll, stream, cancel and read logs of tasks."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout, headers=headers)

    def __enter__(self) -> TaskliftClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- calls ----------------------------------------------------------------------------------

    def _check(self, resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 400:
            resp.read()  # a streamed answer (GET …/stream) has not read its problem body yet
            try:
                problem = resp.json()
            except ValueError:
                problem = {"title": resp.reason_phrase, "detail": resp.text[:200]}
            problem["_retry_after"] = resp.headers.get("Retry-After")
            raise TaskliftError(resp.status_code, problem)
        return resp

    def submit(
        self,
        task_type: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        run_at: datetime | str | None = None,
        delay_seconds: float | None = None,
        expires_at: datetime | str | None = None,
        ttl_seconds: float | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        fairness_key: str | None = None,
        **fields: Any,
    ) -> TaskResource:
        """POST /tasks; returns the accepted (PENDING) task.

        Flow control (docs/flow-control.md): ``run_at`` (an aware datetime or RFC 3339 text) or
        ``delay_seconds`` holds it until then; ``expires_at`` or ``ttl_seconds`` ends it EXPIRED if
        it has not started by then; ``priority`` 0-9 (higher first within its queue);
        ``concurrency_key``: at most the type's ``concurrency_limit`` tasks with this key run at once;
        ``fairness_key``: under an admission window, turns are taken round-robin across these keys.
        """
        body: dict[str, Any] = dict(fields)
        flow = {
            "run_at": run_at.isoformat() if isinstance(run_at, datetime) else run_at,
            "delay_seconds": delay_seconds,
            "expires_at": expires_at.isoformat() if isinstance(expires_at, datetime) else expires_at,
            "ttl_seconds": ttl_seconds,
            "priority": priority,
            "concurrency_key": concurrency_key,
            "fairness_key": fairness_key,
        }
        body.update({name: value for name, value in flow.items() if value is not None})
        if task_type:
            body["task_type"] = task_type
        if metadata is not None:
            body["metadata"] = metadata
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return TaskResource.model_validate(self._check(self._http.post("/tasks", json=body, headers=headers)).json())

    def submit_batch(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """POST /tasks:batch. Each item is ``{"task": <submit body>, "idempotency_key"?: str}``.

        Returns ``{"accepted", "rejected", "items"}``: one result per item, in order, each with its
        own ``status`` (202 + ``task``, or 422 / 409 + ``problem``); see docs/batch.md.
        """
        return dict(self._check(self._http.post("/tasks:batch", json={"items": items})).json())

    def operation(self, task_id: str) -> dict[str, Any]:
        """GET /operations/{id}: the task's Azure-guidelines status monitor (docs/operations.md)."""
        return dict(self._check(self._http.get(f"/operations/{task_id}")).json())

    def get(self, task_id: str) -> TaskResource:
        """GET /tasks/{id}."""
        return TaskResource.model_validate(self._check(self._http.get(f"/tasks/{task_id}")).json())

    def wait(self, task_id: str, timeout: float | None = None) -> TaskResource:
        """Block until the task finishes (long polls, honouring Retry-After); returns it.

        A WAITING task (``ctx.wait_for``) is not finished: this goes on waiting until it is
        signalled (:meth:`signal`) or its wait times out, and the task ends.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        tag: str | None = None
        task: TaskResource | None = None
        while True:
            remaining = 25.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"task {task_id} did not finish within {timeout} s")
            headers = {"If-None-Match": tag} if tag else {}
            resp = self._check(
                self._http.get(
                    f"/tasks/{task_id}",
                    params={"wait": f"{min(25.0, max(remaining, 0.1)):.1f}"},
                    headers=headers,
                    timeout=min(25.0, remaining) + 10,
                )
            )
            if resp.status_code == 200:
                task = TaskResource.model_validate(resp.json())
                tag = resp.headers.get("ETag")
                if task.status in TERMINAL:
                    return task
            pause = float(resp.headers.get("Retry-After", "0") or 0)
            if pause and resp.status_code == 200:
                time.sleep(min(pause, max(0.0, remaining)))

    def stream(
        self, task_id: str, last_event_id: int | None = None, *, read_timeout: float = 60.0
    ) -> Iterator[StreamEvent]:
        """Follow the task's events until its terminal event, reconnecting with Last-Event-ID.

        Honours the server's ``retry:`` between reconnections, drops pings, and never yields an
        event twice (sequence numbers only go up). Works on live and bounded-window hosts alike.
        """
        last = last_event_id
        retry_ms = 1000
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                timeout = httpx.Timeout(10.0, read=read_timeout)
                with connect_sse(
                    self._http, "GET", f"/tasks/{task_id}/stream", headers=headers, timeout=timeout
                ) as source:
                    if source.response.status_code == 204:
                        return
                    self._check(source.response)
                    for sse in source.iter_sse():
                        if sse.retry is not None:
                            retry_ms = sse.retry
                        if not sse.id or not sse.event:
                            continue
                        seq = int(sse.id)
                        if last is not None and seq <= last:
                            continue
                        last = seq
                        event = StreamEvent(seq, sse.event, sse.json())
                        yield event
                        if event.terminal:
                            return
            except httpx.TransportError:
                pass  # the connection dropped (server restart, proxy cut): reconnect after retry_ms
            time.sleep(retry_ms / 1000)

    def output(self, task_id: str, after: int = 0, limit: int = 100) -> dict[str, Any]:
        """GET /tasks/{id}/output: one page of output chunks with index > ``after``."""
        params = {"after": after, "limit": limit}
        return dict(self._check(self._http.get(f"/tasks/{task_id}/output", params=params)).json())

    def follow_output(self, task_id: str) -> Iterator[tuple[int, Any]]:
        """Every output chunk of the task as ``(index, chunk)``, in order, live, until the task ends.

        Reads the task's whole event log from its start (``Last-Event-ID: 0``) and then the live
        stream, so no chunk emitted before the call is missed; reconnections lose and repeat nothing.
        """
        last = 0
        for event in self.stream(task_id, last_event_id=0):
            if event.kind != "output":
                continue
            first = event.data["first"]
            for offset, chunk in enumerate(event.data["chunks"]):
                if first + offset > last:
                    last = first + offset
                    yield last, chunk

    def signal(self, task_id: str, name: str, payload: Any = None) -> dict[str, Any]:
        """POST /tasks/{id}/signals/{name}: ``payload`` is what the task's ``ctx.wait_for(name)`` returns.

        Returns ``{"signal", "delivered", "task"}``: ``delivered`` is ``"resumed"`` (the task was
        WAITING on it) or ``"kept"`` (its next wait on ``name`` takes it). 409 once the task finished.
        """
        resp = self._http.post(f"/tasks/{task_id}/signals/{name}", json=payload)
        return dict(self._check(resp).json())

    def steps(self, task_id: str) -> dict[str, Any]:
        """GET /tasks/{id}/steps: its recorded steps (with durations) and, while WAITING, its wait."""
        return dict(self._check(self._http.get(f"/tasks/{task_id}/steps")).json())

    def cancel(self, task_id: str) -> TaskResource | None:
        """DELETE /tasks/{id}: None when it is CANCELLED now, else the task (cancel requested)."""
        resp = self._check(self._http.delete(f"/tasks/{task_id}"))
        return None if resp.status_code == 204 else TaskResource.model_validate(resp.json())

    def deliveries(self, task_id: str) -> list[dict[str, Any]]:
        """GET /tasks/{id}/deliveries: the task's webhook deliveries, oldest first (docs/webhooks.md)."""
        return list(self._check(self._http.get(f"/tasks/{task_id}/deliveries")).json()["items"])

    def redeliver(self, task_id: str, delivery_id: str) -> dict[str, Any]:
        """POST /tasks/{id}/deliveries/{delivery_id}:redeliver: send it again now, same webhook-id."""
        path = f"/tasks/{task_id}/deliveries/{delivery_id}:redeliver"
        return dict(self._check(self._http.post(path)).json())

    def logs(self, task_id: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """GET /tasks/{id}/logs."""
        params = {"after": after, "limit": limit}
        return list(self._check(self._http.get(f"/tasks/{task_id}/logs", params=params)).json())

    def list(self, **params: Any) -> dict[str, Any]:
        """GET /tasks with filters (status, task_type, created_after, limit, cursor)."""
        clean = {k: v for k, v in params.items() if v is not None}
        return dict(self._check(self._http.get("/tasks", params=clean)).json())

    def task_types(self) -> builtins.list[dict[str, Any]]:  # `list` here: the method above
        """GET /task-types."""
        return list(self._check(self._http.get("/task-types")).json())

    def retry(self, task_id: str) -> TaskResource:
        """POST /tasks/{id}/retry: a FAILED or CANCELLED task queued again (same id)."""
        return TaskResource.model_validate(self._check(self._http.post(f"/tasks/{task_id}/retry")).json())

    def google_operation(self, task_id: str) -> dict[str, Any]:
        """GET /v1/operations/{id}: the task as an AIP-151 ``google.longrunning.Operation``."""
        return dict(self._check(self._http.get(f"/v1/operations/{task_id}")).json())

    # --- queues (admin) -------------------------------------------------------------------------

    def pause_queue(self, queue: str) -> dict[str, Any]:
        """POST /queues/{queue}:pause (admin): its PENDING tasks stay PENDING; ``{"queue", "paused", "pending"}``."""
        return dict(self._check(self._http.post(f"/queues/{queue}:pause")).json())

    def resume_queue(self, queue: str) -> dict[str, Any]:
        """POST /queues/{queue}:resume (admin): its tasks are dispatched again, none lost."""
        return dict(self._check(self._http.post(f"/queues/{queue}:resume")).json())

    # --- bulk operations by filter (docs/bulk.md) -------------------------------------------------

    def bulk(self, action: str, *, dry_run: bool = False, **filter: Any) -> dict[str, Any]:
        """POST /bulk: ``action`` (cancel, retry, purge) on the tasks ``filter`` selects.

        The filter's fields are keyword arguments: ``status``, ``task_type`` (a string or a list),
        ``created_after`` / ``created_before`` (RFC 3339 text or aware datetimes), ``key_prefix``,
        ``owner`` (admins). With ``dry_run`` returns ``{"count": …}``; otherwise the operation
        (``bulk_id``, ``status``, ``total``…), which the server works through: follow it with
        :meth:`bulk_status` or :meth:`wait_bulk`.
        """
        filt = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in filter.items() if v is not None}
        body = {"action": action, "filter": filt, "dry_run": dry_run}
        return dict(self._check(self._http.post("/bulk", json=body)).json())

    def bulk_status(self, bulk_id: str) -> dict[str, Any]:
        """GET /bulk/{id}: the operation's status, counts and progress."""
        return dict(self._check(self._http.get(f"/bulk/{bulk_id}")).json())

    def list_bulk(self, status: str | None = None, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        """GET /bulk: a page of the caller's operations, newest first: ``{"items", "next_cursor"}``."""
        params = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor}.items() if v is not None}
        return dict(self._check(self._http.get("/bulk", params=params)).json())

    def cancel_bulk(self, bulk_id: str) -> dict[str, Any]:
        """DELETE /bulk/{id}: stop an open operation (what it changed stays changed)."""
        return dict(self._check(self._http.delete(f"/bulk/{bulk_id}")).json())

    def wait_bulk(
        self,
        bulk_id: str,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the operation (honouring Retry-After) until it ends; ``on_progress`` sees each state.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            resp = self._check(self._http.get(f"/bulk/{bulk_id}"))
            op = dict(resp.json())
            if on_progress is not None:
                on_progress(op)
            if op["status"] not in ("PENDING", "RUNNING"):
                return op
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"bulk operation {bulk_id} did not finish within {timeout} s")
            time.sleep(min(float(resp.headers.get("Retry-After", "1") or 1), 1.0))

    # --- schedules (docs/flow-control.md, "Schedules") ---------------------------------------------

    def create_schedule(
        self, name: str, task_type: str, payload: dict[str, Any] | None = None, **fields: Any
    ) -> dict[str, Any]:
        """POST /schedules: ``cron=`` (and ``timezone=``) or ``interval_seconds=``; optionally
        ``catchup=``, ``paused=``, ``priority=``, ``ttl_seconds=``, ``concurrency_key=``, ``fairness_key=``."""
        body = {"name": name, "task_type": task_type, "payload": payload or {}, **fields}
        return dict(self._check(self._http.post("/schedules", json=body)).json())

    def list_schedules(self, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        """GET /schedules: one page (``items``, ``next_cursor``), newest first."""
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return dict(self._check(self._http.get("/schedules", params=params)).json())

    def get_schedule(self, schedule_id: str) -> dict[str, Any]:
        """GET /schedules/{id}."""
        return dict(self._check(self._http.get(f"/schedules/{schedule_id}")).json())

    def pause_schedule(self, schedule_id: str) -> dict[str, Any]:
        """POST /schedules/{id}:pause."""
        return dict(self._check(self._http.post(f"/schedules/{schedule_id}:pause")).json())

    def resume_schedule(self, schedule_id: str) -> dict[str, Any]:
        """POST /schedules/{id}:resume (its next time counts from now)."""
        return dict(self._check(self._http.post(f"/schedules/{schedule_id}:resume")).json())

    def delete_schedule(self, schedule_id: str) -> None:
        """DELETE /schedules/{id} (the tasks it fired stay)."""
        self._check(self._http.delete(f"/schedules/{schedule_id}"))

    def schedule_runs(self, schedule_id: str, limit: int = 20) -> dict[str, Any]:
        """GET /schedules/{id}/runs: its firings (``items``), latest first."""
        return dict(self._check(self._http.get(f"/schedules/{schedule_id}/runs", params={"limit": limit})).json())
