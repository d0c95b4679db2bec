"""Celery's per-task INFO lines are dropped unless the worker logs at DEBUG (PostgreSQL has the events)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tasklift.queue.app import PER_TASK_LOGGERS, _quiet_per_task_lines


@pytest.fixture
def levels() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.level, {name: logging.getLogger(name).level for name in PER_TASK_LOGGERS}
    yield
    root.setLevel(saved[0])
    for name, level in saved[1].items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize(
    ("root_level", "shown"), [(logging.INFO, False), (logging.WARNING, False), (logging.DEBUG, True)]
)
def test_per_task_lines_only_at_debug(levels: None, root_level: int, shown: bool) -> None:
    logging.getLogger().setLevel(root_level)
    for name in PER_TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    _quiet_per_task_lines()
    assert all(logging.getLogger(name).isEnabledFor(logging.INFO) is shown for name in PER_TASK_LOGGERS)
    assert all(logging.getLogger(name).isEnabledFor(logging.ERROR) for name in PER_TASK_LOGGERS)  # failures still show
