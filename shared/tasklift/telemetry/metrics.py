"""tasklift's instruments: submits, outcomes, hand-backs, run time, queue wait, reaper actions, streams.

Gauges over shared state (the backlog) are registered by the process that owns it, through
:mod:`tasklift.telemetry.gauges` (the reaper: ``tasklift.queue.gauges``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

import tasklift.telemetry.setup as setup
import tasklift.telemetry.tracing as tracing
from tasklift import logs

#: Histogram buckets in seconds: tasks run from a second to an hour, and wait from milliseconds.
RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class _Tally:
    """A counter kept in the process and read by the SDK when it collects (an observable counter).

    The SDK's ``Counter.add`` costs ~10 µs per call (attribute sets, view matching, locks), paid on
    every submit and every finished attempt; this is a dict update. What the exporters see is the
    same monotonic cumulative sum (Prometheus: ``<name>_total``).
    """

    def __init__(self, meter: metrics.Meter, name: str, unit: str, description: str) -> None:
        self._counts: dict[tuple[tuple[str, str], ...], int] = {}
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork)
        meter.create_observable_counter(name, [self._observe], unit=unit, description=description)

    def add(self, amount: int, attributes: Mapping[str, str]) -> None:
        key = tuple(attributes.items())
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def _observe(self, options: CallbackOptions) -> list[Observation]:
        with self._lock:
            counts = list(self._counts.items())
        return [Observation(count, dict(key)) for key, count in counts]

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a thread of the parent may have held it at the fork


class _Instruments:
    def __init__(self, meter: metrics.Meter, role: str) -> None:
        self.submitted = _Tally(meter, "tasklift.tasks.submitted", "{task}", "Tasks accepted (202), by task_type")
        self.finished = _Tally(
            meter,
            "tasklift.tasks.finished",
            "{task}",
            "Task attempts ended, by task_type and outcome (SUCCESS, FAILED, CANCELLED, RETRY, HANDBACK)",
        )
        self.handbacks = _Tally(
            meter,
            "tasklift.tasks.handbacks",
            "{task}",
            "Running attempts re-queued at the end of a worker's soft shutdown, by task_type",
        )
        self.run_duration = meter.create_histogram(
            "tasklift.task.run.duration",
            unit="s",
            description="Time from claim to recorded outcome of one attempt",
            explicit_bucket_boundaries_advisory=RUN_BUCKETS,
        )
        self.queue_wait = meter.create_histogram(
            "tasklift.task.queue_wait.duration",
            unit="s",
            description="Time from submit to the first claim by a worker (database clock)",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
        )
        self.reaper_actions = meter.create_counter(
            "tasklift.reaper.actions",
            unit="{task}",
            description="Tasks the reaper acted on, by action (dispatch, leases, cancels, cleanup)",
        )
        if role == "api":  # the processes that serve the streams
            meter.create_observable_gauge(
                "tasklift.streams.open",
                [_observe_streams],
                unit="{stream}",
                description="SSE streams and long polls this process serves",
            )


_instruments: _Instruments | None = None


def install(meter: metrics.Meter, role: str) -> None:
    """Create this process's instruments (``setup.configure`` calls it once)."""
    global _instruments
    _instruments = _Instruments(meter, role)


def _metrics() -> _Instruments:
    setup.configure()
    assert _instruments is not None
    return _instruments


def task_submitted(task_type: str) -> None:
    """Count an accepted task."""
    _metrics().submitted.add(1, {"task_type": task_type})


def task_started(row: Mapping[str, Any]) -> None:
    """After a claim: attempt and type on the span and log lines; queue wait of a first attempt.

    Args:
        row: the claimed task row (``attempts``, ``task_type``, ``queue``, ``created_at``,
            ``started_at``, ``traceparent``).
    """
    tracing.run_started.set(time.monotonic())
    logs.bind(attempt=row["attempts"])  # task_id is bound by traced_run
    current = trace.get_current_span()
    current.set_attributes(
        tracing.attributes_of({"attempt": row["attempts"], "task_type": row["task_type"], "queue": row.get("queue")})
    )
    stored = tracing.parse_traceparent(row.get("traceparent"))
    if stored is not None and current.get_span_context().trace_id != stored.trace_id:
        current.add_link(stored, {"tasklift.link": "submit"})  # a message without trace headers
    created, started = row.get("created_at"), row.get("started_at")
    if row["attempts"] == 1 and created is not None and started is not None:
        attributes = {"task_type": row["task_type"], "queue": row.get("queue") or ""}
        _metrics().queue_wait.record(max(0.0, (started - created).total_seconds()), attributes)


def task_finished(task_type: str, outcome: str) -> None:
    """Count an attempt's outcome and record its run time (call once the outcome is recorded)."""
    instruments = _metrics()
    attributes = {"task_type": task_type, "outcome": outcome}
    instruments.finished.add(1, attributes)
    started = tracing.run_started.get()
    if started is not None:
        instruments.run_duration.record(time.monotonic() - started, attributes)
    trace.get_current_span().set_attribute("tasklift.outcome", outcome)


def task_handed_back(task_type: str) -> None:
    """Count an attempt handed back to the queue by a worker's soft shutdown."""
    _metrics().handbacks.add(1, {"task_type": task_type})


def reaper_acted(action: str, count: int) -> None:
    """Count what one reaper job did (tasks dispatched, leases recovered, cancels enforced…)."""
    if count:
        _metrics().reaper_actions.add(count, {"action": action})


def prometheus_text() -> tuple[bytes, str]:
    """This process's metrics in the Prometheus text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = setup.state().registry
    if registry is None:
        return b"# no tasklift metrics here (OTEL_SDK_DISABLED, or not an API process)\n", CONTENT_TYPE_LATEST
    return generate_latest(registry), CONTENT_TYPE_LATEST


_stream_counts: list[Callable[[], int]] = []


def count_open_streams(source: Callable[[], int]) -> Callable[[], None]:
    """Report ``source()`` (streams and long polls this process serves) in ``tasklift.streams.open``,
    until the function returned is called (an API runtime counts its hub's while it is open)."""
    _stream_counts.append(source)
    return lambda: _stream_counts.remove(source) if source in _stream_counts else None


def _open_streams() -> dict[tuple[tuple[str, str], ...], float]:
    return {(): float(sum(source() for source in _stream_counts))}


def _observe_streams(options: CallbackOptions) -> list[Observation]:
    try:
        return [Observation(value) for value in _open_streams().values()]
    except RuntimeError:  # a stream opened mid-count (dict changed size): skip this reading
        return []
