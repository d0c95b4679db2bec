"""The pure parts of waits: how waits are named among steps, what a recorded outcome returns, the checks."""

from __future__ import annotations

import uuid

import pytest

from tasklift.tasks.steps import StepJournal
from tasklift.tasks.waits import WaitTimeout, check_seconds, check_signal_name, outcome


def test_waits_are_named_and_numbered_among_the_steps_without_clashing_with_them() -> None:
    journal = StepJournal(uuid.uuid4(), "t", "1", None)
    names = [
        journal.name_call("approval"),
        journal.name_wait("wait#approval"),
        journal.name_wait("sleep#"),
        journal.name_wait("wait#approval"),
        journal.name_wait("sleep#"),
        journal.name_call("approval"),
    ]
    assert names == [
        ("approval", 1),
        ("wait#approval", 2),
        ("sleep#1", 3),
        ("wait#approval#2", 4),
        ("sleep#2", 5),
        ("approval#2", 6),
    ]


def test_a_recorded_outcome_returns_the_payload_or_raises_the_timeout() -> None:
    assert outcome({"signal": {"ok": True}}) == {"ok": True}
    assert outcome({"signal": None}) is None
    assert outcome({"slept": True}) is None
    with pytest.raises(WaitTimeout):
        outcome({"timeout": True})


@pytest.mark.parametrize("name", ["", "a b", "a/b", "a#b", "x" * 201, None, 3])
def test_signal_names_outside_the_alphabet_are_refused(name: object) -> None:
    with pytest.raises(ValueError, match="signal name"):
        check_signal_name(name)


def test_signal_names_in_the_alphabet_pass() -> None:
    assert check_signal_name("Approval.v2_~:-") == "Approval.v2_~:-"
    assert check_signal_name("x" * 200) == "x" * 200


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), True, "1", None])
def test_seconds_must_be_positive_and_finite(value: object) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        check_seconds(value, "a sleep")
    assert check_seconds(0.5, "a sleep") == 0.5
