"""The webhook deliverer: POSTs the recorded deliveries, signed per Standard Webhooks (docs/webhooks.md).

It runs as a thread of the reaper process (:func:`tasklift.queue.reaper.run_forever`; ``tasklift
reaper`` and ``tasklift dev``), beside the outbox dispatcher, so a slow receiver never holds up a
sweep. Each round claims due rows (:func:`tasklift.store.webhooks.claim`: SKIP LOCKED, so several
reapers are safe) and sends them on a small thread pool:

- the body is the Standard Webhooks envelope ``{"type": "task.succeeded", "timestamp": …, "data":
  <the task resource as GET /tasks/{id} shows it>}``, rendered from the row the trigger recorded,
  so every retry carries the same bytes;
- headers ``webhook-id`` (the row's id, the same on every retry and redelivery), ``webhook-timestamp``
  (this attempt, Unix seconds) and ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of
  "{id}.{timestamp}.{body}">`` under each secret of ``webhook_secrets``, space-separated, so a
  receiver verifies while a secret rotates;
- the URL is vetted again (the SSRF rules, :func:`tasklift.tasks.callbacks.vet_url`) and the
  request goes to the vetted address (no second DNS answer), with no proxy from the environment,
  no redirect followed (a 3xx is a failure), ``webhook_timeout_seconds`` per connect and per read,
  and only a short excerpt of an error answer kept;
- a 2xx marks the row delivered; anything else schedules the next attempt from
  ``webhook_retry_schedule`` until ``webhook_retry_hours`` have passed, then gives it up.

At least once: a deliverer that dies after the POST and before its mark leaves the row to be sent
again; receivers dedupe by ``webhook-id`` (the Standard Webhooks rule).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import ssl
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import certifi
import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from tasklift import jsoncodec, telemetry
from tasklift.settings import Settings
from tasklift.store import webhooks as store
from tasklift.tasks import callbacks
from tasklift.tasks.resource import task_resource
from tasklift.version import __version__

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
EXCERPT_CHARS = 200  #: of an error answer, kept in ``last_error``; the rest is never read
_TIMESTAMPS = ("created_at", "started_at", "updated_at", "completed_at", "scheduled_for", "expires_at")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (Standard Webhooks; the prefix is optional)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError:
        raise ValueError("a webhook secret must be whsec_ followed by base64") from None


def sign(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<signature>`` per key, space-separated."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode() for key in keys)


def render(row: Mapping[str, Any]) -> bytes:
    """The webhook body of a delivery row: the Standard Webhooks envelope around the task resource."""
    task = dict(row["task"])  # the row as to_jsonb wrote it: times are ISO strings
    for name in _TIMESTAMPS:
        if task.get(name):
            task[name] = datetime.fromisoformat(task[name])
    resource = task_resource(task)
    return jsoncodec.dumps({"type": row["event_type"], "timestamp": resource["updated_at"], "data": resource})


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: the HTTP status (None: no answer) and, on failure, why."""

    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Deliverer:
    """Sends due webhooks from ``engine``'s ``webhook_deliveries`` under ``settings``."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.keys = [secret_key(s) for s in settings.webhook_signing_secrets()]
        cafile = str(settings.webhook_ca_bundle) if settings.webhook_ca_bundle else certifi.where()
        self.tls = ssl.create_default_context(cafile=cafile)
        self.pool = ThreadPoolExecutor(settings.webhook_concurrency, thread_name_prefix="tasklift-webhook")
        self._warned = False

    def round(self) -> int:
        """Claim the due deliveries and send them; returns how many were attempted."""
        if not self.keys:
            if not self._warned:
                with self.engine.connect() as conn:
                    if store.any_due(conn):
                        log.warning("webhooks wait: TASKLIFT_WEBHOOK_SECRETS is not set (docs/webhooks.md)")
                        self._warned = True
            return 0
        timeout = self.settings.webhook_timeout_seconds
        with self.engine.begin() as conn:
            # One wave: every claimed row's POST starts at once, so each claim outlives its POST
            # (connect, write, read: each up to the timeout; an error excerpt within two more) by a margin.
            rows = store.claim(conn, self.settings.webhook_concurrency, lease_seconds=timeout * 5 + 5)
        outcomes = list(self.pool.map(self.send, rows))
        with self.engine.begin() as conn:
            states = [self.record(conn, row, outcome) for row, outcome in zip(rows, outcomes, strict=True)]
        # tasklift_reaper_actions_total{action=…} (docs/observability.md)
        telemetry.reaper_acted("webhooks_delivered", states.count("delivered"))
        telemetry.reaper_acted("webhook_retries", states.count("pending"))
        telemetry.reaper_acted("webhooks_given_up", states.count("failed"))
        return len(rows)

    def record(self, conn: Any, row: Any, outcome: Outcome) -> str | None:
        """Record one attempt; the row's state after (None: the attempt was no longer the row's)."""
        attempts = row["attempts"]
        if outcome.delivered:
            assert outcome.status is not None
            return "delivered" if store.mark_delivered(conn, row["id"], attempts, outcome.status) else None
        schedule = self.settings.webhook_retry_schedule or [60.0]
        delay = schedule[min(attempts, len(schedule)) - 1]
        window = self.settings.webhook_retry_hours * 3600
        state = store.mark_failed(conn, row["id"], attempts, outcome.status, outcome.error or "", delay, window)
        level = logging.WARNING if state == "failed" else logging.INFO
        task_id, error = row["task_id"], outcome.error
        log.log(level, "webhook %s (task %s) attempt %d: %s → %s", row["id"], task_id, attempts, error, state)
        return state

    def send(self, row: Any) -> Outcome:
        """POST one delivery; never raises (an unexpected error is a failed attempt, logged)."""
        try:
            return self._post(row)
        except Exception as exc:
            log.exception("webhook %s: unexpected error", row["id"])
            return Outcome(None, f"internal error: {type(exc).__name__}")

    def _post(self, row: Any) -> Outcome:
        try:
            target = callbacks.vet_url(row["url"], self.settings)
        except callbacks.BadCallback as exc:
            return Outcome(None, f"refused: {exc.msg}")
        body = render(row)
        timestamp = int(time.time())
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": f"tasklift-webhooks/{__version__}",
            "webhook-id": row["id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.keys, row["id"], timestamp, body),
        }
        # As web_scrape: no proxies from the environment (the vetted address is the one connected to),
        # no pooled connection (one verified for another name), no redirects.
        with httpx.Client(
            verify=self.tls,
            trust_env=False,
            follow_redirects=False,
            timeout=self.settings.webhook_timeout_seconds,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            request = client.build_request(
                "POST", target.connect_url, content=body, headers=headers, extensions=target.extensions
            )
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException:
                return Outcome(None, "timed out")
            except httpx.HTTPError as exc:
                return Outcome(None, f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS])
            try:
                if 200 <= response.status_code < 300:
                    return Outcome(response.status_code)
                excerpt = _excerpt(response, time.monotonic() + self.settings.webhook_timeout_seconds)
                return Outcome(response.status_code, f"HTTP {response.status_code}: {excerpt}")
            finally:
                response.close()

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; a round that found work is followed by the next at once."""
        while not stop.is_set():
            try:
                busy = self.round()
            except DBAPIError as exc:
                log.warning("webhooks: database unavailable (%s); retrying", exc.__class__.__name__)
                busy = 0
            except Exception:
                log.exception("webhook round failed; retrying")
                busy = 0
            if not busy:
                stop.wait(self.settings.webhook_interval_seconds)

    def start(self, stop: threading.Event) -> threading.Thread:
        """Run :meth:`run` in a daemon thread."""
        thread = threading.Thread(target=self.run, args=(stop,), name="tasklift-webhooks", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _excerpt(response: httpx.Response, deadline: float) -> str:
    """The first characters of an answer's body, as many as arrive before ``deadline`` (it is never
    stored whole, nor read past this: a receiver dripping bytes does not hold the deliverer)."""
    data = b""
    try:
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= EXCERPT_CHARS or time.monotonic() > deadline:
                break
    except httpx.HTTPError:
        pass
    return data[:EXCERPT_CHARS].decode("utf-8", "replace")
