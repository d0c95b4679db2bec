"""Schedules (issue 21 part 5): the body's validation and the fire times (tasklift.tasks.schedules),
including the clock edges: DST in a time zone, month ends, a firing exactly at the boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tasklift.tasks.schedules import (
    MAX_CATCHUP,
    ScheduleError,
    Timing,
    due_times,
    next_after,
    parse_spec,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def body(**extra: Any) -> dict[str, Any]:
    return {"name": "nightly", "task_type": "test_noop", "cron": "30 2 * * *", **extra}


def test_a_valid_body_is_normalised() -> None:
    spec = parse_spec(body(cron=" 30  2 * *   * ", timezone="Europe/Berlin", priority=3, payload={"a": 1}))
    assert spec.timing == Timing(cron="30 2 * * *", timezone="Europe/Berlin")
    assert spec.flow == {"priority": 3} and spec.payload == {"a": 1} and not spec.paused
    interval = parse_spec({"name": "n", "task_type": "t", "interval_seconds": 5, "catchup": "all"})
    assert interval.timing == Timing(interval=5.0, catchup="all")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "0 0 * * * *"}, "cron"),  # 6 fields (seconds): not ours
        ({"cron": "@daily"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),  # never fires
        ({"cron": 5}, "cron"),
        ({"cron": None}, "cron"),  # neither
        ({"interval_seconds": 5}, "cron"),  # both
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": 1}, "timezone"),
        ({"catchup": "some"}, "catchup"),
        ({"name": ""}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"name": None}, "name"),
        ({"task_type": ["x"]}, "task_type"),
        ({"payload": [1]}, "payload"),
        ({"paused": "yes"}, "paused"),
        ({"queue": "cpu"}, "queue"),  # unknown field
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_spec(body(**change))
    assert raised.value.field == field


@pytest.mark.parametrize("interval", [0, 0.5, -1, True, "5", float("inf"), 366 * 86400 + 1])
def test_bad_intervals(interval: Any) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_spec({"name": "n", "task_type": "t", "interval_seconds": interval})
    assert raised.value.field == "interval_seconds"


def test_a_timezone_with_an_interval_is_refused() -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_spec({"name": "n", "task_type": "t", "interval_seconds": 5, "timezone": "UTC"})
    assert raised.value.field == "timezone"


def test_not_an_object() -> None:
    with pytest.raises(ScheduleError):
        parse_spec([1])


# --- the times ------------------------------------------------------------------------------------


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold)  # type: ignore[misc]


def test_spring_forward_fires_once_right_after_the_gap() -> None:
    """2026-03-29 in Berlin: 02:00 → 03:00; a 02:30 daily job fires at 03:00 that day, once."""
    timing = Timing(cron="30 2 * * *", timezone="Europe/Berlin")
    times, at = [], local(BERLIN, 2026, 3, 27, 12, 0)
    for _ in range(4):
        at = next_after(timing, at)
        times.append(at.astimezone(BERLIN))
    assert [t.isoformat() for t in times] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert times[1].astimezone(UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_fall_back_fires_once_at_the_first_occurrence() -> None:
    """2026-10-25 in Berlin: 03:00 → 02:00; 02:30 happens twice, the job fires once (the first)."""
    timing = Timing(cron="30 2 * * *", timezone="Europe/Berlin")
    first = next_after(timing, local(BERLIN, 2026, 10, 24, 12, 0))
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST (+02:00)
    second = next_after(timing, first)
    assert second == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)  # the next day, 02:30 CET
    # Sitting between the two occurrences (02:45 CEST) does not fire the repeated 02:30 CET.
    assert next_after(timing, datetime(2026, 10, 25, 0, 45, tzinfo=UTC)) == second


def test_hourly_in_new_york_across_both_transitions_keeps_utc_spacing() -> None:
    timing = Timing(cron="0 * * * *", timezone="America/New_York")
    at = datetime(2026, 3, 8, 5, 30, tzinfo=UTC)  # 00:30 EST, the spring-forward day
    seen = []
    for _ in range(4):
        at = next_after(timing, at)
        seen.append(at)
    assert [b - a for a, b in zip(seen, seen[1:], strict=False)] == [timedelta(hours=1)] * 3


def test_end_of_month() -> None:
    on_31st = Timing(cron="0 0 31 * *")
    at, months = datetime(2026, 1, 1, tzinfo=UTC), []
    for _ in range(4):
        at = next_after(on_31st, at)
        months.append(at.month)
    assert months == [1, 3, 5, 7]  # only months with a 31st
    last_day = Timing(cron="0 0 L * *")
    at, days = datetime(2028, 1, 15, tzinfo=UTC), []
    for _ in range(3):
        at = next_after(last_day, at)
        days.append(at.date().isoformat())
    assert days == ["2028-01-31", "2028-02-29", "2028-03-31"]  # a leap year's February


def test_a_firing_exactly_at_the_boundary_is_due_then_and_not_before() -> None:
    timing = Timing(cron="0 12 * * *")
    noon = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert due_times(timing, noon, noon - timedelta(microseconds=1)) == ([], noon)
    times, following = due_times(timing, noon, noon)
    assert times == [noon] and following == noon + timedelta(days=1)
    assert next_after(timing, noon) == noon + timedelta(days=1)  # strictly after
    every = Timing(interval=10)
    assert due_times(every, noon, noon) == ([noon], noon + timedelta(seconds=10))


def test_missed_firings_latest_fires_once_for_the_latest_time() -> None:
    timing = Timing(cron="*/5 * * * *")
    start = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    now = start + timedelta(minutes=23, seconds=10)  # 12:00, :05, :10, :15, :20 missed
    times, following = due_times(timing, start, now)
    assert times == [start + timedelta(minutes=20)]
    assert following == start + timedelta(minutes=25)


def test_missed_firings_all_fires_each_oldest_first_bounded() -> None:
    timing = Timing(cron="*/5 * * * *", catchup="all")
    start = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    times, following = due_times(timing, start, start + timedelta(minutes=23))
    assert times == [start + timedelta(minutes=m) for m in (0, 5, 10, 15, 20)]
    assert following == start + timedelta(minutes=25)
    long_ago = due_times(timing, start, start + timedelta(days=30))[0]
    assert len(long_ago) == MAX_CATCHUP and long_ago == sorted(long_ago)
    assert long_ago[-1] == start + timedelta(days=30)


def test_interval_catchup_keeps_its_phase() -> None:
    timing = Timing(interval=2, catchup="all")
    anchor = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    times, following = due_times(timing, anchor, anchor + timedelta(seconds=7.5))
    assert times == [anchor + timedelta(seconds=s) for s in (0, 2, 4, 6)]
    assert following == anchor + timedelta(seconds=8)
    latest = due_times(Timing(interval=2), anchor, anchor + timedelta(seconds=7.5))
    assert latest == ([anchor + timedelta(seconds=6)], anchor + timedelta(seconds=8))


def test_catching_up_across_the_dst_change_counts_each_real_firing_once() -> None:
    timing = Timing(cron="30 2 * * *", timezone="Europe/Berlin", catchup="all")
    first = datetime(2026, 10, 24, 0, 30, tzinfo=UTC)  # 02:30 CEST on the 24th
    times, _ = due_times(timing, first, datetime(2026, 10, 27, 12, 0, tzinfo=UTC))
    assert [t.astimezone(BERLIN).date().day for t in times] == [24, 25, 26, 27]
