"""Per-process objects the handlers share (the service and its event announcer), made lazily."""

from __future__ import annotations

import os
from functools import cache

from tasklift.events.bus import EventAnnouncer
from tasklift.settings import redis_url
from tasklift.tasks.service import TaskService


@cache
def _service_for(pid: int) -> TaskService:
    announcer = EventAnnouncer(redis_url())
    return TaskService(announce=announcer.announce)


def service() -> TaskService:
    """The process-wide :class:`TaskService` (connections are made once per process, not per call)."""
    return _service_for(os.getpid())
