"""Per-principal limits shared by every API process: request rate, open streams, unfinished tasks.

Rate and stream counts live in Redis, so every API process (uvicorn workers, function instances)
enforces one budget per principal. Both are single Lua scripts, atomic on the server, on the
server's clock:

- **request rate**: a fixed window per principal (``INCR``; the first request sets ``EXPIRE``).
  Over the limit the answer is 429 with ``Retry-After`` = the seconds left in the window.
- **open streams**: a sorted set per principal of stream ids scored by a lease deadline. A stream
  renews its lease while it runs and removes itself when it ends; the lease is the safety net for
  an API process that dies without removing its streams (they count for one lease at most).

Unfinished tasks (PENDING + RUNNING) are counted in PostgreSQL, the truth, on a partial index
(:data:`tasklift.store.repository.ACTIVE_TASKS_SQL`, on the API's store).

When Redis cannot be reached the rate and stream limits are skipped (fail open) for a few seconds
at a time: Redis is also the broker, and accepted tasks must keep being accepted while it is away
(docs/reliability.md: losing Redis loses no accepted task). The anonymous principal of development mode is
not limited at all: every caller shares it, so a per-principal limit would be a global one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import pybreaker
import redis

log = logging.getLogger(__name__)

T = TypeVar("T")

KEY_PREFIX = "tasklift:limits:"

_RATE = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if tonumber(ARGV[2]) > 0 and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return 1
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after: int = 0


class LimitStore:
    """The Redis side of the limits, for one Redis URL (one per process)."""

    def __init__(self, url: str) -> None:
        # Short timeouts: a limit check must never hold a request up for long.
        self.redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._rate = self.redis.register_script(_RATE)
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._renew = self.redis.register_script(_RENEW)
        # After 3 failures in a row, skip Redis for 5 s instead of waiting on it for every request.
        self._breaker = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=5)

    def _call(self, fn: Callable[[], T]) -> T | None:
        """``fn()``, or None when Redis is unavailable (the limit is then not enforced)."""
        try:
            return self._breaker.call(fn)
        except pybreaker.CircuitBreakerError:
            return None
        except redis.RedisError as exc:
            log.warning("limits skipped: Redis unavailable (%s)", type(exc).__name__)
            return None

    def hit(self, principal: str, limit: int, window: int) -> RateDecision:
        """Count one request of ``principal``; refused when over ``limit`` in this window."""
        result: Any = self._call(lambda: self._rate(keys=[f"{KEY_PREFIX}rate:{principal}"], args=[window]))
        if result is None:
            return RateDecision(True)
        count, ttl = int(result[0]), int(result[1])
        return RateDecision(count <= limit, max(1, ttl))

    def open_stream(self, principal: str, limit: int, lease: float) -> StreamSlot | None:
        """A slot for one more open stream, or None when ``principal`` already has ``limit``."""
        slot = StreamSlot(self, f"{KEY_PREFIX}streams:{principal}", uuid.uuid4().hex, lease)
        granted = self._call(lambda: self._acquire(keys=[slot.key], args=[slot.member, limit, lease]))
        if granted is None:
            return slot  # Redis away: allowed, and renew/release will be no-ops until it returns
        return slot if int(granted) == 1 else None

    def open_streams(self, principal: str) -> int:
        """How many streams ``principal`` holds now (for tests and diagnostics)."""
        key = f"{KEY_PREFIX}streams:{principal}"
        return cast(int, self.redis.zcount(key, f"({_redis_now(self.redis)}", "+inf"))  # sync client: an int


def _redis_now(client: redis.Redis) -> float:
    seconds, micros = cast(tuple[int, int], client.time())  # sync client: (seconds, microseconds)
    return float(seconds) + micros / 1e6


@dataclass
class StreamSlot:
    """One open stream's place in its principal's count: renew it while open, release it at the end."""

    store: LimitStore
    key: str
    member: str
    lease: float

    def renew(self) -> None:
        self.store._call(lambda: self.store._renew(keys=[self.key], args=[self.member, self.lease]))

    def release(self) -> None:
        self.store._call(lambda: self.store.redis.zrem(self.key, self.member))
