"""The API runtime: every long-lived object an API process serves requests with, in ONE object.

Built once per process on the event loop that serves the requests, and passed to the handlers
(``HttpRequest.runtime``); nothing here is a module-level singleton:

- uvicorn (``tasklift api``, the local emulators' ASGI app): the ASGI lifespan builds it
  (:func:`tasklift.http.asgi.lifespan`) and yields it as Starlette's lifespan state, so each
  request's ``scope["state"]["runtime"]`` is it (a dict lookup per request); the lifespan's end
  closes it.
- Hosts that run no lifespan for the process (Azure Functions' worker, Mangum on Lambda: Mangum's
  lifespan would run startup and shutdown around every invocation): :class:`HostRuntime`, ONE
  place that builds it at the first request, on the loop the host runs every invocation on, and
  never closes it (the platform freezes or ends the process; there is no shutdown to hook).

A runtime belongs to one event loop (asyncpg and redis.asyncio connections are loop-bound) and one
process. :meth:`ApiRuntime.close` closes in reverse order of building: the hub, then the enqueuer
(it writes its last outbox marks through the store), then the store, the sync clients last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import Engine

from tasklift import telemetry
from tasklift.blobs import BlobStore, open_blob_store
from tasklift.events.bus import EventAnnouncer
from tasklift.events.hub import EventHub
from tasklift.queue.dispatch import Broker, BrokerEpoch, Enqueuer
from tasklift.security.limits import LimitStore
from tasklift.security.oidc import OidcVerifier, verifier_for
from tasklift.security.stream_tokens import active_keys
from tasklift.settings import Settings, get_settings, redis_url
from tasklift.store.aio import AsyncStore
from tasklift.store.db import database_url, make_engine
from tasklift.tasks.service import TaskService

#: The key of the runtime in Starlette's lifespan state (``scope["state"]``).
STATE_KEY = "runtime"


class RuntimeMissing(RuntimeError):
    """A request reached a handler without an API runtime: the host did not build one."""


@dataclass(eq=False)
class ApiRuntime:
    """What an API process holds: see the module docstring. Make it with :meth:`open`."""

    settings: Settings
    engine: Engine  #: SQLAlchemy, for the synchronous operations (list, logs, cancel, retry, auth)
    store: AsyncStore  #: asyncpg, for the hot path (submit, read)
    broker: Broker  #: sync Redis, for a manual retry's publish
    enqueuer: Enqueuer  #: async Redis, for the submits' publish
    announcer: EventAnnouncer  #: sync Redis PUBLISH of the API's own events (cancel, retry)
    hub: EventHub  #: the one Redis pub/sub connection of the streams and long polls
    blobs: BlobStore
    limits: LimitStore  #: sync Redis, for the rate limit and the stream slots (security/limits.py)
    oidc: OidcVerifier | None  #: bearer JWTs of the configured issuer (its signing keys cached); None: OIDC off
    service: TaskService
    _uncount: Any = field(default=None, repr=False)  #: removes the hub from the open-streams gauge

    def active_keys(self, key_ids: list[str]) -> set[str]:
        """Those of the API keys ``key_ids`` not revoked (blocking; :func:`stream_tokens.active_keys`)."""
        return active_keys(self.engine, key_ids)

    @classmethod
    def open(cls, settings: Settings) -> ApiRuntime:
        """Build the runtime on the running event loop. Connections are made lazily, on first use."""
        url = redis_url()
        engine = make_engine(database_url(settings), settings.db_pool_size)
        store = AsyncStore(settings)
        epochs = BrokerEpoch()  # one cache for the sync and the async client
        broker = Broker(url, epochs)
        enqueuer = Enqueuer(url, store, epochs)
        announcer = EventAnnouncer(url)
        hub = EventHub(
            url,
            store,
            check_seconds=settings.stream_resync_seconds,
            active_keys=partial(active_keys, engine),
            key_check_seconds=settings.stream_token_key_check_seconds,
        )
        blobs = open_blob_store(settings)
        limits = LimitStore(url)
        service = TaskService(engine, store, enqueuer, broker, blobs, announce=announcer.announce)
        oidc = verifier_for(settings)
        runtime = cls(settings, engine, store, broker, enqueuer, announcer, hub, blobs, limits, oidc, service)
        runtime._uncount = telemetry.count_open_streams(lambda: hub.subscriptions)
        return runtime

    async def close(self) -> None:
        """Close what :meth:`open` built, in reverse order (on the loop it was built on)."""
        if self._uncount is not None:
            self._uncount()
        await self.hub.close()
        await self.enqueuer.aclose()  # before the store: it writes the last outbox marks through it
        await self.store.close()
        self.limits.redis.close()
        self.announcer.close()
        self.broker.close()
        self.engine.dispose()


class HostRuntime:
    """The API runtime of a host that runs no ASGI lifespan (Azure Functions, Lambda), in ONE place.

    :meth:`get` builds it at the first request (its cold start) on the loop the host runs every
    invocation on, then returns it. It is not closed: the platform freezes or ends the process
    without a shutdown to run it against. Each such host holds exactly one of these.
    """

    def __init__(self) -> None:
        self._runtime: ApiRuntime | None = None

    def get(self) -> ApiRuntime:
        if self._runtime is None:
            self._runtime = ApiRuntime.open(get_settings())
        return self._runtime

    async def close(self) -> None:
        """Close the runtime if one was built (what the platforms never do; a test's end does)."""
        built, self._runtime = self._runtime, None
        if built is not None:
            await built.close()
