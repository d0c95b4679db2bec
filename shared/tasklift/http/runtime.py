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
(it writes its last outbox marks through the store), then the store, the sync Redis clients last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tasklift import telemetry
from tasklift.blobs import BlobStore, open_blob_store
from tasklift.events.bus import EventAnnouncer
from tasklift.events.hub import EventHub
from tasklift.queue.dispatch import BrokerEpoch, Enqueuer
from tasklift.security.api_keys import active_key_ids
from tasklift.security.limits import LimitStore
from tasklift.security.oidc import OidcVerifier, verifier_for
from tasklift.settings import Settings, get_settings, redis_url
from tasklift.store.aio import AsyncStore
from tasklift.tasks.service import TaskService

#: The key of the runtime in Starlette's lifespan state (``scope["state"]``).
STATE_KEY = "runtime"


class RuntimeMissing(RuntimeError):
    """A request reached a handler without an API runtime: the host did not build one."""


@dataclass(eq=False)
class ApiRuntime:
    """What an API process holds: see the module docstring. Make it with :meth:`open`."""

    settings: Settings
    store: AsyncStore  #: asyncpg: every statement of the API (submit, read, list, cancel, retry, auth)
    enqueuer: Enqueuer  #: async Redis, for the publish of submits and manual retries
    announcer: EventAnnouncer  #: sync Redis PUBLISH of the API's own events (cancel, retry)
    hub: EventHub  #: the one Redis pub/sub connection of the streams and long polls
    blobs: BlobStore
    limits: LimitStore  #: sync Redis, for the rate limit and the stream slots (security/limits.py)
    oidc: OidcVerifier | None  #: bearer JWTs of the configured issuer (its signing keys cached); None: OIDC off
    service: TaskService
    _uncount: Any = field(default=None, repr=False)  #: removes the hub from the open-streams gauge

    @classmethod
    def open(cls, settings: Settings) -> ApiRuntime:
        """Build the runtime on the running event loop. Connections are made lazily, on first use."""
        url = redis_url()
        store = AsyncStore(settings)
        enqueuer = Enqueuer(url, store, BrokerEpoch())
        announcer = EventAnnouncer(url)
        hub = EventHub(
            url,
            store,
            check_seconds=settings.stream_resync_seconds,
            active_keys=partial(active_key_ids, store),
            key_check_seconds=settings.stream_token_key_check_seconds,
        )
        blobs = open_blob_store(settings)
        limits = LimitStore(url)
        service = TaskService(store, enqueuer, blobs, announce=announcer.announce)
        oidc = verifier_for(settings)
        runtime = cls(settings, store, enqueuer, announcer, hub, blobs, limits, oidc, service)
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
