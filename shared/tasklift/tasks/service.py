"""The task service: submit, read, list, cancel, retry. Host-neutral.

Every operation is async, on the API's asyncpg store (:mod:`tasklift.store.aio`): one statement
each where it changes state, the SQL being :mod:`tasklift.store.repository`'s. Publishing goes
through the enqueuer the API runtime hands in (:class:`Enqueuer`). Errors are domain exceptions
(:class:`NotFound`, :class:`Conflict`, :class:`InvalidInput`); the HTTP layer turns them into
problem+json.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
from pydantic import ValidationError

from tasklift import jsoncodec, telemetry
from tasklift.blobs import BlobStore, claims
from tasklift.settings import get_settings
from tasklift.store import aio
from tasklift.store import repository as repo
from tasklift.store.repository import Dispatch, Event
from tasklift.tasks import callbacks
from tasklift.tasks.flow import FLOW_FIELDS, Flow, FlowError, split_flow
from tasklift.tasks.registry import TaskType, get_task_type
from tasklift.tasks.states import TaskStatus

DEFAULT_TASK_TYPE = "vector_processing"  # the original demo's default
#: Cancel statements a cancel runs at most while the task keeps moving between PENDING and RUNNING.
_CANCEL_TRIES = 5


class ServiceError(Exception):
    """Base of the errors the service reports to callers."""

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class NotFound(ServiceError):  # noqa: N818
    """No such task, or the caller may not see it."""


class Conflict(ServiceError):  # noqa: N818
    """The request conflicts with the task's state (or an in-flight idempotent request)."""


class InvalidInput(ServiceError):  # noqa: N818
    """The request body does not validate."""


@dataclass
class Submitted:
    """Outcome of a submit: the task row and whether it replays an earlier idempotent request."""

    task: Mapping[str, Any]
    replayed: bool = False


@dataclass
class CancelOutcome:
    """Outcome of a cancel: ``done`` (now CANCELLED) or ``requested`` (the worker will stop)."""

    task: Mapping[str, Any]
    done: bool


@dataclass
class Listing:
    items: list[Mapping[str, Any]]
    next_cursor: str | None


class Enqueuer(Protocol):
    """What commits submits and publishes committed tasks to the broker: the API runtime's
    :class:`tasklift.queue.dispatch.Enqueuer` (the queue sits above the service; it is handed in)."""

    async def submit(self, task: repo.NewTask, item: Dispatch) -> Any: ...

    async def enqueue(self, items: list[Dispatch]) -> None: ...

    async def turn(self) -> None: ...


#: Announces committed events (blocking: a Redis PUBLISH; the service runs it in a worker thread).
Announce = Callable[[list[Event]], None]


@dataclass
class TaskService:
    """Operations on tasks for one store; ``announce`` announces committed events.

    The API runtime makes one (:class:`tasklift.http.runtime.ApiRuntime`): ``store`` and
    ``enqueuer`` are on its event loop.
    """

    store: aio.AsyncStore
    enqueuer: Enqueuer
    blobs: BlobStore
    announce: Announce = field(default=lambda events: None)

    # --- submit ---------------------------------------------------------------------------------

    async def submit(self, owner: str, body: Any, idempotency_key: str | None = None) -> Submitted:
        """Validate and durably accept a task; publish it after the commit.

        The common submit (no Idempotency-Key) is one INSERT shared with the submits beside it and
        one LPUSH (:meth:`~tasklift.queue.dispatch.Enqueuer.submit`). With a key, the key's reservation,
        the same INSERT and the key's completion are one transaction, then the task is published
        (:meth:`~tasklift.queue.dispatch.Enqueuer.enqueue`). An input too large to store inline is put in
        blob storage first (in a worker thread: the blob clients are synchronous).

        Raises:
            InvalidInput: unknown ``task_type`` or fields that do not validate, or an
                Idempotency-Key reused with another body.
            Conflict: the Idempotency-Key is being used by a request still in flight.
            BlobStoreError: a large input could not be stored (no task was created).
        """
        await self.enqueuer.turn()
        plain, callback_fields = callbacks.split(body)
        ttype, task_input, metadata = parse_submission(plain)
        flow = parse_flow(body)
        callback = await vet_callback(callback_fields, ttype)
        task_id = uuid.uuid4()
        with telemetry.span("tasklift.submit"):
            telemetry.annotate(task_id=task_id, task_type=ttype.name)
            if claims.fits_inline(task_input):
                claim = claims.Claim(task_input, self.blobs)
            else:  # claim check: in blob storage before the commit, deleted again if no task comes of it
                claim = await anyio.to_thread.run_sync(
                    claims.Claim.check_in, task_input, claims.input_key(task_id), self.blobs
                )
            try:
                task = new_task(task_id, owner, ttype, claim.value, metadata, flow, callback)
                item = Dispatch(task_id, ttype.queue, ttype.name)
                if idempotency_key is None:
                    row = await self.enqueuer.submit(task, item)  # commit, then LPUSH
                else:
                    fingerprint = request_fingerprint(body)
                    ttl = get_settings().idempotency_ttl_seconds
                    row, earlier = await self.store.submit_with_key(task, idempotency_key, fingerprint, ttl)
                    if earlier is not None:
                        return await self._replay(owner, earlier, fingerprint)
                    await self.enqueuer.enqueue([item] if task.inline else [])
                claim.keep()
            finally:
                if not claim.kept and claims.is_ref(claim.value):
                    await anyio.to_thread.run_sync(claims.discard, claim.value, self.blobs)
        # The first event is not announced: nobody can watch a task whose id has not been returned.
        telemetry.task_submitted(ttype.name)
        return Submitted(row)

    async def _replay(self, owner: str, earlier: Mapping[str, Any], fingerprint: str) -> Submitted:
        if earlier["request_hash"] != fingerprint:
            raise InvalidInput(
                "this Idempotency-Key was already used with a different request body",
                [{"loc": ["header", "Idempotency-Key"], "msg": "reused with a different body"}],
            )
        if earlier["task_id"] is None:
            raise Conflict("a request with this Idempotency-Key is still being processed")
        row = await self.store.get_task(earlier["task_id"], owner)
        if row is None:  # the task was purged by retention while its key lived on
            raise Conflict("the task created with this Idempotency-Key no longer exists")
        return Submitted(row, replayed=True)

    # --- reads ----------------------------------------------------------------------------------

    async def get(self, owner: str | None, task_id: str) -> Mapping[str, Any]:
        """The task, or :class:`NotFound` (also for another owner's task)."""
        row: Mapping[str, Any] | None = await self.store.get_task(parse_task_id(task_id), owner)
        if row is None:
            raise NotFound(f"task {task_id} does not exist")
        return row

    async def list_tasks(
        self,
        owner: str | None,
        *,
        status: str | None = None,
        task_type: str | None = None,
        created_after: datetime | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> Listing:
        """Tasks newest first with an opaque keyset cursor."""
        if status is not None and status not in TaskStatus.__members__:
            raise InvalidInput(f"unknown status {status!r}", [{"loc": ["query", "status"], "msg": "unknown status"}])
        before = decode_cursor(cursor) if cursor else None
        rows = await self.store.list_tasks(
            limit + 1, owner=owner, status=status, task_type=task_type, created_after=created_after, before=before
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
        return Listing(list(rows), next_cursor)

    async def logs(self, owner: str | None, task_id: str, *, after: int = 0, limit: int = 100) -> list[Any]:
        """Log lines after sequence ``after``, oldest first; :class:`NotFound` for no such task."""
        row = await self.get(owner, task_id)
        return await self.store.logs_after(row["id"], after, limit)

    async def load(self, task_id: uuid.UUID) -> Mapping[str, Any] | None:
        """The task row by id, for any owner (callers have already checked access)."""
        return await self.store.get_task(task_id)

    async def events_after(self, task_id: uuid.UUID, after: int, limit: int = 1000) -> list[Event]:
        """Events after sequence ``after`` (for stream replay)."""
        return await self.store.events_after(task_id, after, limit)

    async def _announce(self, events: list[Event]) -> None:
        await anyio.to_thread.run_sync(self.announce, events)

    # --- cancel ---------------------------------------------------------------------------------

    async def cancel(self, owner: str | None, task_id: str) -> CancelOutcome:
        """Cancel a task: PENDING ends at once; RUNNING gets the durable cancel flag.

        One statement (:data:`~tasklift.store.repository.CANCEL_SQL`); when it changes nothing the
        task is read to say why.

        Raises:
            NotFound: no such task for this caller.
            Conflict: the task already finished (SUCCESS or FAILED).
        """
        tid = parse_task_id(task_id)
        for _ in range(_CANCEL_TRIES):
            done = await self.store.cancel(tid, owner)
            if done is not None:
                await self._announce([done[1]])
                current: Mapping[str, Any] = done[0]
            else:
                current = await self.get(owner, task_id)
            status = TaskStatus(current["status"])
            if status in (TaskStatus.CANCELLED, TaskStatus.RUNNING):  # RUNNING: the flag is set
                if done is None:
                    # Set by an earlier request, or by this one when its reply was lost and the store
                    # ran the statement again: announce the state again (listeners dedupe by seq).
                    await self._announce([aio.status_event(current)])
                return CancelOutcome(current, done=status == TaskStatus.CANCELLED)
            if status not in (TaskStatus.PENDING, TaskStatus.WAITING):
                raise Conflict(f"task {task_id} already finished with {status.value}; it cannot be cancelled")
            # PENDING (or WAITING) after a statement that changed nothing: it raced with a lease that then
            # handed the task back; ask again.
        raise Conflict(f"task {task_id} changed state while being cancelled; try again")

    # --- retry ----------------------------------------------------------------------------------

    async def retry(self, owner: str | None, task_id: str) -> Mapping[str, Any]:
        """Re-queue a FAILED or CANCELLED task (new attempt, same id); :class:`Conflict` otherwise."""
        row = await self.get(owner, task_id)
        ttype = get_task_type(row["task_type"])
        if ttype is None:
            raise Conflict(f"task type {row['task_type']} is no longer registered")
        done = await self.store.reopen(row["id"], owner, ttype.retries)
        if done is None:
            current = await self.get(owner, task_id)
            if current["status"] == TaskStatus.PENDING and current["last_seq"] == row["last_seq"] + 1:
                # Reopened by this request (its reply was lost and the store ran the statement again)
                # or by another one just now: either way the retry the caller asked for is there.
                done = current, aio.status_event(current)
            else:
                raise Conflict(f"only FAILED or CANCELLED tasks can be retried; this one is {current['status']}")
        reopened, event = done
        # Its outbox intent is committed with it, due now: published here as a submit's would be, or
        # left to the dispatcher under the same rules as a submit (new_task's ``inline``): an
        # admission window, a concurrency limit of its key or a rate limit.
        held = reopened.get("concurrency_limit") is not None or ttype.rate_limited(reopened.get("concurrency_key"))
        if get_settings().admission_window == 0 and not held:
            await self.enqueuer.enqueue([Dispatch(row["id"], ttype.queue, ttype.name, row["traceparent"], event.seq)])
        await self._announce([event])
        return reopened


# --- helpers --------------------------------------------------------------------------------------


def new_task(
    task_id: uuid.UUID,
    owner: str,
    ttype: TaskType,
    task_input: dict[str, Any],
    metadata: dict[str, Any],
    flow: Flow | None = None,
    callback: callbacks.Callback | None = None,
) -> repo.NewTask:
    """The row a submit inserts, in the current trace (the dispatcher and the worker continue it).

    It is published at submit (``inline``) unless it is delayed, the admission window is on or it
    is limited by a concurrency key or a rate limit: then the dispatcher admits it (docs/flow-control.md)."""
    flow = flow or Flow()
    settings = get_settings()
    limit = ttype.concurrency_limit if flow.concurrency_key is not None else None
    trace_id, traceparent = telemetry.trace_ids()
    return repo.NewTask(
        task_id=task_id,
        owner=owner,
        task_type=ttype.name,
        queue=ttype.queue,
        input=task_input,
        metadata=metadata,
        max_retries=ttype.retries,
        trace_id=trace_id,
        traceparent=traceparent,
        dispatch_grace=settings.dispatch_grace_seconds,
        priority=flow.priority,
        run_at=flow.run_at,
        delay=flow.delay,
        expires_at=flow.expires_at,
        ttl=flow.ttl,
        inline=not flow.delayed()
        and settings.admission_window == 0
        and limit is None
        and not ttype.rate_limited(flow.concurrency_key),
        callback_url=callback.url if callback else None,
        callback_events=callback.events if callback else (),
        concurrency_key=flow.concurrency_key,
        concurrency_limit=limit,
        fairness_key=flow.fairness_key,
    )


def parse_flow(body: dict[str, Any]) -> Flow:
    """The flow-control fields of a submit body (:mod:`tasklift.tasks.flow`), or InvalidInput."""
    try:
        return split_flow(body, get_settings().max_schedule_seconds, utc_instant)[1]
    except FlowError as exc:
        raise InvalidInput(f"invalid {exc.field}: {exc.msg}", [{"loc": ["body", exc.field], "msg": exc.msg}]) from None


async def vet_callback(fields: Mapping[str, Any], ttype: TaskType) -> callbacks.Callback | None:
    """The submit's webhook (its fields or the type's default), its URL vetted (DNS in a thread), or
    :class:`InvalidInput` (docs/webhooks.md)."""
    try:
        callback = callbacks.requested(fields, ttype)
        if callback is not None:
            await anyio.to_thread.run_sync(callbacks.vet_url, callback.url, get_settings())
    except callbacks.BadCallback as exc:
        if not exc.transient:  # a host that does not resolve now: each delivery vets it again
            raise InvalidInput(
                f"{exc.field} refused: {exc.msg}", [{"loc": ["body", exc.field], "msg": exc.msg}]
            ) from None
    return callback


def parse_task_id(task_id: str) -> uuid.UUID:
    """A task id from a URL; anything that is not a UUID is simply a task that does not exist."""
    try:
        return uuid.UUID(task_id)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"task {task_id} does not exist") from None


def parse_submission(body: Any) -> tuple[TaskType, dict[str, Any], dict[str, Any]]:
    """Split a POST /tasks body into (type, validated input, metadata), or raise InvalidInput.

    Bodies from the original demo carry every field of its single request model (``url: null`` on
    a vector task, say); fields the type does not declare are tolerated when they are null.
    """
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object", [{"loc": ["body"], "msg": "not an object"}])
    fields = {k: v for k, v in body.items() if k not in FLOW_FIELDS}  # flow control: parse_flow's
    type_name = fields.pop("task_type", None)
    if type_name is None:  # missing or null (the original demo's bodies): the default type
        type_name = DEFAULT_TASK_TYPE
    if not isinstance(type_name, str) or (ttype := get_task_type(type_name)) is None:
        raise InvalidInput(
            f"unknown task_type {type_name!r}",
            [{"loc": ["body", "task_type"], "msg": "unknown task type; see GET /task-types"}],
        )
    metadata = fields.pop("metadata", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be an object", [{"loc": ["body", "metadata"], "msg": "must be an object"}])
    declared = ttype.input_model.model_fields
    if "metadata" in declared:
        fields["metadata"] = metadata
    fields = {k: v for k, v in fields.items() if k in declared or v is not None}
    try:
        model = _validate_strictly(ttype, fields)
    except ValidationError as exc:
        errors = [{"loc": ["body", *map(str, e["loc"])], "msg": e["msg"]} for e in exc.errors()]
        raise InvalidInput(f"invalid input for task type {ttype.name}", errors) from None
    task_input = model.model_dump(mode="json")
    if claims.is_ref(task_input):  # only the service makes references: no input may pose as another task's blob
        raise InvalidInput(
            f"{claims.REF} is reserved for blob references", [{"loc": ["body", claims.REF], "msg": "reserved name"}]
        )
    return ttype, task_input, metadata


def _validate_strictly(ttype: TaskType, fields: dict[str, Any]) -> Any:
    """``fields`` validated as the published JSON Schema reads them: ``"duration": true`` or ``"0"``
    is not an integer (pydantic's strict JSON mode, which still takes a string for a date, a UUID
    or an enum: JSON has none), but ``1.0`` is one, as JSON Schema's ``integer`` says. Only a body
    strict mode refuses is looked at again for such numbers: valid bodies pay nothing more."""
    given = jsoncodec.dumps(fields)
    try:
        return ttype.input_model.model_validate_json(given, strict=True)
    except ValidationError:
        integral = jsoncodec.dumps(_integral_floats_as_ints(fields))
        if integral == given:  # no such number: the first answer stands
            raise
        return ttype.input_model.model_validate_json(integral, strict=True)


def _integral_floats_as_ints(value: Any) -> Any:
    """``value`` with every float that has no fractional part as an int (JSON Schema's integers)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {key: _integral_floats_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(item) for item in value]
    return value


def request_fingerprint(body: Any) -> str:
    """A stable hash of a request body (key order does not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def encode_cursor(created_at: datetime, task_id: uuid.UUID) -> str:
    """An opaque keyset cursor."""
    import base64

    raw = f"{created_at.isoformat()}|{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Parse a cursor made by :func:`encode_cursor`, or raise InvalidInput."""
    import base64

    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, tid = raw.split("|")
        return utc_instant(created), uuid.UUID(tid)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("malformed cursor", [{"loc": ["query", "cursor"], "msg": "malformed"}]) from None


def utc_instant(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time as an aware UTC datetime (no offset = UTC), or ValueError.

    Python reads offsets up to ±23:59 and years 1 to 9999 in any offset; PostgreSQL refuses
    offsets beyond ±15:59 and Python cannot shift a year-1 or year-9999 edge into UTC. Normalised
    here, every value that parses is one PostgreSQL takes (a forged cursor included).
    """
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is outside the years 1 to 9999 in UTC") from None
