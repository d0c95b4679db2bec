"""Retry policy of the runner: back-off with jitter, bounded."""

from tasklift.queue.runner import error_of, retry_delay
from tasklift.tasks.registry import TaskType


def _ttype() -> TaskType:
    from pydantic import BaseModel

    return TaskType(name="t", func=lambda c, i: None, input_model=BaseModel, backoff_base=2.0, backoff_max=60.0)


def test_backoff_doubles_with_jitter_and_stays_under_the_cap() -> None:
    t = _ttype()
    for failures, cap in [(1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)]:
        delays = [retry_delay(t, failures) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert len(set(delays)) > 1  # jittered, so retries of many tasks do not stampede


def test_client_error_has_type_and_message_only() -> None:
    assert error_of(ValueError("bad input")) == {"type": "ValueError", "message": "bad input"}
    assert error_of(RuntimeError()) == {"type": "RuntimeError", "message": "RuntimeError"}
