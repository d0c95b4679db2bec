"""Gauges over shared state (Redis, PostgreSQL), read at collection time and reused for a while.

The process that owns the data registers them (the reaper: ``tasklift.queue.gauges``), so each
value is reported once, not by every API process or worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from opentelemetry.metrics import CallbackOptions, Observation

import tasklift.telemetry.setup as setup

log = logging.getLogger("tasklift.telemetry")

#: How long a gauge reuses a reading (a scrape must not hammer Redis/PostgreSQL).
GAUGE_TTL_SECONDS = 10.0

Reading = dict[tuple[tuple[str, str], ...], float]  #: labels (as pairs) → value


class Cached:
    """A reading reused for :data:`GAUGE_TTL_SECONDS`; a failed reading yields nothing (never raises)."""

    def __init__(self, load: Callable[[], Reading]) -> None:
        self._load = load
        self._value: Reading = {}
        self._at = -GAUGE_TTL_SECONDS
        self._lock = threading.Lock()

    def observations(self) -> list[Observation]:
        with self._lock:
            if time.monotonic() - self._at >= GAUGE_TTL_SECONDS:
                self._at = time.monotonic()
                try:
                    self._value = self._load()
                except Exception as exc:  # noqa: BLE001 - a scrape during an outage shows no value
                    log.debug("gauge reading failed: %s", exc)
                    self._value = {}
            return [Observation(value, dict(labels)) for labels, value in self._value.items()]


def observe(name: str, load: Callable[[], Reading], *, unit: str, description: str) -> None:
    """Report ``load()`` (read at most every :data:`GAUGE_TTL_SECONDS`) as the gauge ``name``."""
    reading = Cached(load)

    def callback(options: CallbackOptions) -> list[Observation]:
        return reading.observations()

    setup.meter().create_observable_gauge(name, [callback], unit=unit, description=description)
