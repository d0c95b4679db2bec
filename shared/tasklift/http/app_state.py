"""Per-process objects the handlers share (the service and its event publisher), made lazily."""

from __future__ import annotations

import os
from functools import cache

from tasklift.events.bus import EventPublisher
from tasklift.settings import redis_url
from tasklift.tasks.service import TaskService


@cache
def _service_for(pid: int) -> TaskService:
    publisher = EventPublisher(redis_url())
    return TaskService(publish=publisher.publish)


def service() -> TaskService:
    """The process-wide :class:`TaskService` (connections are made once per process, not per call)."""
    return _service_for(os.getpid())
