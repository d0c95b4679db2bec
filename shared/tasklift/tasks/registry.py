"""The registry of task types and the ``@task`` decorator task authors use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tasklift.settings import get_settings, parse_rate

QueueKind = Literal["cpu", "io"]


class RetryableError(Exception):
    """Raise (or subclass) this for failures worth another attempt; other errors fail at once."""


class TaskInput(BaseModel):
    """Base for task input models: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class TaskType:
    """A registered task type."""

    name: str
    func: Callable[..., Any]
    input_model: type[BaseModel]
    queue_kind: QueueKind = "cpu"
    timeout: float = 3600.0
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = (RetryableError,)
    backoff_base: float = 2.0
    backoff_max: float = 300.0
    description: str = ""
    #: recorded with each durable step; a task whose steps another version recorded does not resume
    version: str = "1"
    tags: tuple[str, ...] = field(default_factory=tuple)
    #: the webhook of its tasks when a submit names none (docs/webhooks.md), and its events
    callback_url: str | None = None
    callback_events: tuple[str, ...] = ("terminal",)
    #: at most this many RUNNING at once per ``concurrency_key`` (docs/flow-control.md); None: no limit
    concurrency_limit: int | None = None
    #: at most N admitted per period (``"10/s"``: docs/flow-control.md), per type or per key; None: none
    rate_limit: str | None = None
    rate_limit_per_key: bool = False

    @property
    def rate_in_force(self) -> str | None:
        """The rate limit in force: the ``task_rate_limits`` setting's for this type, else the
        declared ``rate_limit``, else None."""
        return get_settings().task_rate_limits.get(self.name, self.rate_limit)

    @property
    def rate(self) -> tuple[int, float] | None:
        """:attr:`rate_in_force` as (count, period seconds)."""
        rate = self.rate_in_force
        return None if rate is None else parse_rate(rate)

    def rate_limited(self, concurrency_key: str | None) -> bool:
        """Whether a task of this type with ``concurrency_key`` is held to a rate limit (a per-key
        limit holds only the tasks that have a key, as a concurrency limit does)."""
        return self.rate is not None and (concurrency_key is not None or not self.rate_limit_per_key)

    @property
    def queue(self) -> str:
        """The Celery queue (Redis list) this type's tasks are published to."""
        settings = get_settings()
        return settings.io_queue if self.queue_kind == "io" else settings.cpu_queue

    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema of this type's input, as GET /task-types shows it."""
        return self.input_model.model_json_schema()


_REGISTRY: dict[str, TaskType] = {}
_imported: set[str] = set()


def task(
    name: str,
    *,
    input: type[BaseModel],  # noqa: A002 - the authoring API (README, docs/architecture.md) names it `input`
    queue: QueueKind = "cpu",
    timeout: float = 3600.0,
    retries: int = 0,
    retry_on: tuple[type[BaseException], ...] = (RetryableError,),
    backoff_base: float = 2.0,
    backoff_max: float = 300.0,
    version: str = "1",
    callback_url: str | None = None,
    callback_events: tuple[str, ...] = ("terminal",),
    concurrency_limit: int | None = None,
    rate_limit: str | None = None,
    rate_limit_per_key: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a function as a task type.

    Args:
        name: The ``task_type`` clients submit.
        input: Pydantic model validating the submitted fields.
        queue: ``"cpu"`` or ``"io"``: which worker pool runs it.
        timeout: Seconds one attempt may run before it is stopped and counts as failed.
        retries: Further attempts after a retryable failure (exponential back-off with jitter).
        retry_on: Exception types that count as retryable.
        backoff_base: First back-off in seconds; doubles each attempt.
        backoff_max: Upper bound of one back-off.
        version: The version of the task's code, recorded with each durable step (``ctx.step``):
            change it when a change of the code makes recorded steps of unfinished tasks invalid;
            such a task then fails with ``StepVersionChanged`` instead of mixing two versions.
        callback_url: The webhook its tasks call when a submit names no ``callback_url``
            (docs/webhooks.md); vetted at each submit like a submitted one.
        callback_events: The events of that default: ``"terminal"`` and/or ``"progress"``.
        concurrency_limit: At most this many tasks of this type RUNNING at once per
            ``concurrency_key`` of the submit, across all workers (docs/flow-control.md); tasks
            submitted without a key are not limited. None: no limit.
        rate_limit: At most N of its tasks admitted to the queue per period, across all workers and
            dispatchers: ``"10/s"``, ``"100/m"``, ``"1000/h"``, ``"5/10s"`` (a token bucket of N:
            a burst of N, then N per period; docs/flow-control.md). The ``task_rate_limits``
            setting overrides it without a deploy. None: no limit.
        rate_limit_per_key: One bucket per ``concurrency_key`` instead of one for the type
            (tasks submitted without a key are then not limited).
    """
    if rate_limit is not None:
        try:
            parse_rate(rate_limit)
        except ValueError as exc:
            raise ValueError(f"task type {name!r}: rate_limit {exc}") from None
    if concurrency_limit is not None and (isinstance(concurrency_limit, bool) or concurrency_limit < 1):
        raise ValueError(f"task type {name!r}: concurrency_limit must be a positive integer")

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].func is not func:
            raise ValueError(f"task type {name!r} is registered twice")
        _REGISTRY[name] = TaskType(
            name=name,
            func=func,
            input_model=input,
            queue_kind=queue,
            timeout=timeout,
            retries=retries,
            retry_on=retry_on,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            version=str(version),
            callback_url=callback_url,
            callback_events=tuple(callback_events),
            concurrency_limit=concurrency_limit,
            rate_limit=rate_limit,
            rate_limit_per_key=rate_limit_per_key,
            description=(func.__doc__ or "").strip().split("\n")[0],
        )
        return func

    return register


#: The task types that come with tasklift (the original demo's), loaded before TASKLIFT_TASK_MODULES.
BUILTIN_MODULES = ("tasklift.builtin",)


def load_task_types() -> None:
    """Import the built-in task types and every module named in TASKLIFT_TASK_MODULES.

    Task modules are plug-ins of the registry: they import it (``@task``) and are imported by name,
    the built-in ones (:data:`BUILTIN_MODULES`) as any other, so the registry depends on none of them.
    Each module is imported once, but the setting is read on every call, so a module added to it
    later in the process (tests, reconfiguration) is still picked up.
    """
    import importlib

    for module in (*BUILTIN_MODULES, *get_settings().task_modules):
        if module not in _imported:
            importlib.import_module(module)
            _imported.add(module)


def get_task_type(name: str) -> TaskType | None:
    """The registered type called ``name``, if any."""
    load_task_types()
    return _REGISTRY.get(name)


def all_task_types() -> list[TaskType]:
    """Every registered type, sorted by name."""
    load_task_types()
    return sorted(_REGISTRY.values(), key=lambda t: t.name)
