"""Cron schedules (``/schedules``, issue 21 part 5): what a schedule is, and when it fires.

A schedule names a task type, the input (``payload``) each firing submits, and when: a 5-field
cron expression (``cron``, evaluated in ``timezone``, an IANA name, default ``UTC``) or a fixed
``interval_seconds``. Its optional flow fields (``priority``, ``ttl_seconds``, ``concurrency_key``,
``fairness_key``) are passed on to every firing's submit (docs/flow-control.md, "Schedules").

The times are computed here, by :mod:`cronsim` (a maintained cron evaluator; no parser of our own):

- :func:`next_after`: the first fire time strictly after an instant;
- :func:`due_times`: at a firer's round, which of a schedule's times are due and what comes next,
  under its ``catchup`` policy: ``"latest"`` (the default) fires once, for the latest time that
  has passed, however many were missed; ``"all"`` fires every missed time, at most
  :data:`MAX_CATCHUP` of them (the latest ones), oldest first.

Clock edges are cron's (cronsim's): a local time the spring-forward gap skips fires at the first
instant after the gap (``30 2 * * *`` in Europe/Berlin fires at 03:00 on that day); a local time
the fall-back repeats fires once, at its first occurrence; ``0 0 31 * *`` fires only in months
with a 31st (``L`` means the month's last day). All instants are aware, and stored in UTC.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from tasklift.settings import KEY_PATTERN, MAX_KEY_LENGTH

#: Missed firings a schedule with ``catchup: "all"`` makes up at most (the latest ones).
MAX_CATCHUP = 100
MIN_INTERVAL, MAX_INTERVAL = 1.0, 366 * 86400.0
MAX_NAME_LENGTH = 128
CATCHUP_POLICIES = ("latest", "all")
#: The submit fields a schedule passes on to each firing (tasks/flow.py validates them).
FIRING_FLOW_FIELDS = ("priority", "ttl_seconds", "concurrency_key", "fairness_key")
FIELDS = (
    "name",
    "task_type",
    "payload",
    "cron",
    "timezone",
    "interval_seconds",
    "catchup",
    "paused",
    *FIRING_FLOW_FIELDS,
)
_TZ_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")


class ScheduleError(ValueError):
    """A schedule field that does not validate: ``field`` names it, ``msg`` says why."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(f"{field}: {msg}")
        self.field = field
        self.msg = msg


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: ``cron`` in ``timezone``, or every ``interval`` seconds."""

    cron: str | None = None
    timezone: str = "UTC"
    interval: float | None = None
    catchup: str = "latest"

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class ScheduleSpec:
    """A validated ``POST /schedules`` body (the payload is checked by the submit path's parser)."""

    name: str
    task_type: str
    payload: dict[str, Any]
    timing: Timing
    flow: dict[str, Any]  #: the firing's flow fields, as a submit body carries them
    paused: bool = False


def _string(body: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ScheduleError(name, "is required")
        return None
    if not isinstance(value, str):
        raise ScheduleError(name, "must be a string")
    return value


def parse_timing(body: Mapping[str, Any]) -> Timing:
    """``cron`` (+ ``timezone``) or ``interval_seconds``, and ``catchup``; :class:`ScheduleError` otherwise."""
    cron = _string(body, "cron", required=False)
    zone = _string(body, "timezone", required=False)
    interval = body.get("interval_seconds")
    if (cron is None) == (interval is None):
        raise ScheduleError("cron", "give exactly one of cron and interval_seconds")
    catchup = body.get("catchup", "latest")
    if catchup is None:
        catchup = "latest"
    if catchup not in CATCHUP_POLICIES:
        raise ScheduleError("catchup", "must be 'latest' or 'all'")
    if interval is not None:
        if zone is not None:
            raise ScheduleError("timezone", "applies to cron only (an interval is counted in seconds)")
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not math.isfinite(interval):
            raise ScheduleError("interval_seconds", "must be a number of seconds")
        if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            raise ScheduleError("interval_seconds", f"must be at least {MIN_INTERVAL:g} and at most {MAX_INTERVAL:g}")
        return Timing(interval=float(interval), catchup=catchup)
    assert cron is not None
    zone = "UTC" if zone is None else zone
    if len(zone) > 64 or not _TZ_NAME.fullmatch(zone):
        raise ScheduleError("timezone", "must be an IANA time zone name such as Europe/Berlin")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError("timezone", "unknown IANA time zone") from None
    fields = cron.split()
    if len(fields) != 5:
        raise ScheduleError("cron", "must have 5 fields: minute hour day-of-month month day-of-week")
    normal = " ".join(fields)
    try:
        CronSim(normal, datetime.now(UTC))
    except CronSimError as exc:
        raise ScheduleError("cron", f"not a valid cron expression ({exc})") from None
    return Timing(cron=normal, timezone=zone, catchup=catchup)


def _key(body: Mapping[str, Any], name: str, length: int) -> str:
    value = _string(body, name, required=True)
    assert value is not None
    if not value or len(value) > length or not KEY_PATTERN.fullmatch(value):
        raise ScheduleError(name, f"must be 1 to {length} printable ASCII characters")
    return value


def parse_spec(body: Any) -> ScheduleSpec:
    """A ``POST /schedules`` body, validated but for the payload (the submit path's), or :class:`ScheduleError`."""
    if not isinstance(body, dict):
        raise ScheduleError("body", "must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise ScheduleError(unknown[0], "unknown field")
    name = _key(body, "name", MAX_NAME_LENGTH)
    task_type = _key(body, "task_type", MAX_KEY_LENGTH)
    payload = body.get("payload")
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        raise ScheduleError("payload", "must be an object (the task type's input)")
    paused = body.get("paused", False)
    if not isinstance(paused, bool):
        raise ScheduleError("paused", "must be true or false")
    flow = {field: body[field] for field in FIRING_FLOW_FIELDS if body.get(field) is not None}
    return ScheduleSpec(name, task_type, payload, parse_timing(body), flow, paused)


def submit_body(task_type: str, payload: Mapping[str, Any], flow: Mapping[str, Any]) -> dict[str, Any]:
    """The ``POST /tasks`` body of one firing: the type, its input, the flow fields."""
    return {**payload, **flow, "task_type": task_type}


# --- the times ------------------------------------------------------------------------------------


def next_after(timing: Timing, instant: datetime, anchor: datetime | None = None) -> datetime:
    """The first fire time strictly after ``instant`` (aware), in UTC.

    An interval counts from ``anchor`` (its first fire time; default: ``instant`` itself, so the
    first firing is one interval later).
    """
    if timing.interval is not None:
        start = anchor or instant
        if instant < start:
            return start.astimezone(UTC)
        steps = math.floor((instant - start).total_seconds() / timing.interval) + 1
        return (start + timedelta(seconds=steps * timing.interval)).astimezone(UTC)
    assert timing.cron is not None
    local = instant.astimezone(timing.zone())
    return next(iter(CronSim(timing.cron, local))).astimezone(UTC)


def _at_or_before(timing: Timing, instant: datetime, anchor: datetime, limit: int) -> list[datetime]:
    """Up to ``limit`` fire times ≤ ``instant`` and ≥ ``anchor`` (a fire time), latest first."""
    if timing.interval is not None:
        steps = math.floor((instant - anchor).total_seconds() / timing.interval)
        first = max(0, steps - limit + 1)
        return [anchor + timedelta(seconds=k * timing.interval) for k in range(steps, first - 1, -1)]
    assert timing.cron is not None
    found: list[datetime] = []
    # cronsim's reverse iteration yields times strictly before its start: start just after ``instant``
    # so that a time exactly at it (a firing at the boundary) counts.
    start = (instant + timedelta(seconds=1)).astimezone(timing.zone()).replace(microsecond=0)
    for when in CronSim(timing.cron, start, reverse=True):
        if when > instant:
            continue
        if when < anchor or len(found) == limit:
            break
        found.append(when.astimezone(UTC))
    return found


def due_times(timing: Timing, next_fire_at: datetime, now: datetime) -> tuple[list[datetime], datetime]:
    """At ``now``, the fire times of a schedule due since ``next_fire_at`` (oldest first) and its
    next fire time after them (> ``now``), under ``timing.catchup``.

    ``"latest"``: one firing, for the latest time ≤ ``now`` (nothing if ``next_fire_at`` is ahead).
    ``"all"``: every time from ``next_fire_at`` to ``now``, at most :data:`MAX_CATCHUP` (the latest).
    """
    if next_fire_at > now:
        return [], next_fire_at
    limit = MAX_CATCHUP if timing.catchup == "all" else 1
    times = _at_or_before(timing, now, next_fire_at, limit)
    times.reverse()
    if not times:  # a cron time the expression no longer yields (it cannot be edited: defensive)
        times = [next_fire_at]
    return times, next_after(timing, now, anchor=next_fire_at)


def first_fire(timing: Timing, now: datetime) -> datetime:
    """The first fire time of a schedule made (or resumed) at ``now``."""
    return next_after(timing, now)
