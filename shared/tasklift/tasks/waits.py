"""Waits: ``ctx.wait_for(name, timeout=)`` and ``ctx.sleep(seconds)`` suspend a task without a worker.

The wait's outcome is recorded as a step (``wait#<name>``, ``sleep#<n>``; :mod:`tasklift.store.waits`),
so the task's re-run after the wait ends (on any worker) replays its finished steps and gets the
outcome back at the wait: the signal's payload, :class:`WaitTimeout`, or the end of the sleep. A wait
not yet over suspends the attempt: the task goes WAITING, its lease released, and the attempt ends
with :class:`Suspended`, which the runner records as no outcome at all (docs/steps-and-output.md).
"""

from __future__ import annotations

import math
import re
from typing import Any

#: A signal name: what may stand in the path of POST /tasks/{id}/signals/{name} unescaped.
SIGNAL_NAME = re.compile(r"[A-Za-z0-9._~:-]{1,200}")


class WaitTimeout(Exception):  # noqa: N818 - reads as what happened
    """``ctx.wait_for`` ended by its timeout, no signal having come; the task may handle it."""


class Suspended(BaseException):  # noqa: N818 - like HandBack: task code must not swallow it
    """The attempt suspended on a wait (the task is WAITING, already recorded); the runner announces it."""

    def __init__(self, event: Any) -> None:
        super().__init__(event.task_id)
        self.event = event


def check_signal_name(name: Any) -> str:
    """``name`` if it is a valid signal name, else ValueError."""
    if not isinstance(name, str) or not SIGNAL_NAME.fullmatch(name):
        raise ValueError(f"a signal name is 1 to 200 of A-Z a-z 0-9 . _ ~ : -, not {name!r}")
    return name


def check_seconds(value: Any, what: str) -> float:
    """``value`` as a positive finite number of seconds, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} is a positive number of seconds, not {value!r}")
    return float(value)


def outcome(recorded: Any) -> Any:
    """What the wait returns for its recorded outcome (raises :class:`WaitTimeout` for a timeout)."""
    if isinstance(recorded, dict):
        if "signal" in recorded:
            return recorded["signal"]
        if recorded.get("timeout"):
            raise WaitTimeout("no signal came before the wait's timeout")
    return None
