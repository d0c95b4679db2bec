"""A stand-in for an unreliable downstream service, called through retries and a circuit breaker.

This is the demo's "external vector index": it fails at a configurable rate so that the resiliency
path (tenacity retries inside, pybreaker outside) is exercised on every run.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pybreaker
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from tasklift.settings import get_settings

#: Opens after 5 consecutive failed calls (each already retried), half-opens after 30 s.
breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, name="vector-index")


class ServiceUnavailable(ConnectionError):
    """The downstream service did not answer."""


def _call(vectors: int, metadata: dict[str, Any]) -> dict[str, Any]:
    if random.random() < get_settings().flaky_failure_rate:
        raise ServiceUnavailable("vector index did not answer")
    return {"external_id": f"vec-{uuid.uuid4().hex[:12]}", "vectors": vectors, "tags": sorted(metadata)}


@breaker
@retry(
    stop=stop_after_attempt(4),
    wait=wait_exponential(multiplier=0.1, max=1),
    retry=retry_if_exception_type(ServiceUnavailable),
    reraise=True,
)
def index_vectors(vectors: int, metadata: dict[str, Any]) -> dict[str, Any]:
    """Index ``vectors`` downstream; retried on failure, short-circuited while the breaker is open."""
    return _call(vectors, metadata)
