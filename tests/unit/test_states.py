"""The lifecycle rules of DESIGN.md, as code."""

import pytest

from tasklift.tasks.states import TERMINAL, TRANSITIONS, TaskStatus, can_transition

S = TaskStatus


@pytest.mark.parametrize(
    ("current", "target"),
    [(S.PENDING, S.RUNNING), (S.PENDING, S.CANCELLED), (S.RUNNING, S.SUCCESS), (S.RUNNING, S.FAILED),
     (S.RUNNING, S.CANCELLED), (S.RUNNING, S.PENDING), (S.FAILED, S.PENDING), (S.CANCELLED, S.PENDING),
     (S.PENDING, S.EXPIRED)],
)  # fmt: skip
def test_allowed_transitions(current: TaskStatus, target: TaskStatus) -> None:
    assert can_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [(S.SUCCESS, S.PENDING), (S.SUCCESS, S.RUNNING), (S.PENDING, S.SUCCESS), (S.CANCELLED, S.RUNNING),
     (S.FAILED, S.SUCCESS), (S.FAILED, S.RUNNING), (S.RUNNING, S.EXPIRED), (S.EXPIRED, S.PENDING),
     (S.EXPIRED, S.RUNNING)],
)  # fmt: skip
def test_forbidden_transitions(current: TaskStatus, target: TaskStatus) -> None:
    assert not can_transition(current, target)


def test_success_and_expired_are_final_and_terminal_states_are_the_four_outcomes() -> None:
    assert TRANSITIONS[S.SUCCESS] == TRANSITIONS[S.EXPIRED] == frozenset()
    assert {s for s in S if s.terminal} == TERMINAL == {S.SUCCESS, S.FAILED, S.CANCELLED, S.EXPIRED}


def test_every_state_has_rules() -> None:
    assert set(TRANSITIONS) == set(TaskStatus)
