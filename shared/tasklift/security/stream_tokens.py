"""Stream links: short-lived, task-scoped tokens for ``GET /tasks/{id}/stream?access_token=``.

A browser's ``EventSource`` cannot send an ``Authorization`` header, so the task resource's
``links.stream`` carries a token instead of the caller's credentials. It is an HMAC-SHA256
signature over (task id, principal, expiry) and grants exactly one thing: opening that task's
stream until it expires (``stream_token_ttl_seconds``, default 10 minutes), and, when issued to an
API key, while that key is not revoked. The key is checked in the database each time a stream
opens (the same one indexed lookup an API key's own requests cost), so a revoked key's links are
refused at once; a stream already open when its key is revoked is ended by its process's event hub
within ``stream_token_key_check_seconds`` + ``stream_resync_seconds`` (one query per period for
every open stream's key: :func:`tasklift.security.api_keys.active_key_ids`). An API key or bearer
token never appears in a URL.

Format: ``v1.<kid>.<payload>.<signature>`` (base64url), where ``kid`` names the signing key so
that rotation works: sign with ``stream_signing_key``, also accept ``stream_signing_previous_keys``
for one token lifetime, then drop them (docs/security.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass

from tasklift.security.identity import Identity, current_identity
from tasklift.settings import Settings, get_settings

log = logging.getLogger(__name__)

VERSION = "v1"

#: Used only when no key is configured: valid in this process alone (one warning says so).
_process_key = secrets.token_bytes(32)
_warned = False


class BadStreamToken(Exception):
    """Malformed, forged, expired or for another task."""


@dataclass(frozen=True)
class StreamGrant:
    task_id: str
    principal: str
    expires_at: int
    key_id: str | None = None  #: the API key the link was issued to (revoking it ends the link)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(key: bytes) -> str:
    """A short, non-secret name of a signing key."""
    return hashlib.sha256(b"tasklift-stream-kid:" + key).hexdigest()[:8]


def _signing_keys(settings: Settings) -> list[bytes]:
    """The current key first, then the previous ones still accepted."""
    global _warned
    if settings.stream_signing_key is None:
        if not _warned:
            _warned = True
            log.warning(
                "TASKLIFT_STREAM_SIGNING_KEY is not set: stream links work only on the API process that issued them"
            )
        return [_process_key]
    keys = [settings.stream_signing_key, *settings.stream_signing_previous_keys]
    return [k.get_secret_value().encode() for k in keys]


def _sign(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


def issue(
    task_id: str,
    principal: str,
    settings: Settings | None = None,
    *,
    now: float | None = None,
    api_key: str | None = None,
) -> str:
    """A token that opens ``task_id``'s stream as ``principal`` for ``stream_token_ttl_seconds``;
    with ``api_key`` (an API key's id), only while that key is not revoked."""
    settings = settings or get_settings()
    key = _signing_keys(settings)[0]
    expires = int(now if now is not None else time.time()) + settings.stream_token_ttl_seconds
    claims: dict[str, object] = {"t": task_id, "p": principal, "e": expires}
    if api_key is not None:
        claims["k"] = api_key
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    message = f"{VERSION}.{key_id(key)}.{payload}"
    return f"{message}.{_sign(key, message)}"


def verify(
    token: str,
    task_id: str,
    settings: Settings | None = None,
    *,
    now: float | None = None,
) -> StreamGrant:
    """The grant of a validly signed, unexpired token for ``task_id``; :class:`BadStreamToken` otherwise.

    A grant with a ``key_id`` stands only while that API key is not revoked: the caller checks it
    (:func:`tasklift.security.api_keys.active_key_ids`, one query on the API's store).
    """
    settings = settings or get_settings()
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        raise BadStreamToken("malformed")
    version, kid, payload, signature = parts
    key = next((k for k in _signing_keys(settings) if hmac.compare_digest(key_id(k), kid)), None)
    if key is None or not hmac.compare_digest(_sign(key, f"{version}.{kid}.{payload}"), signature):
        raise BadStreamToken("bad signature")
    try:
        claims = json.loads(_unb64(payload))
        api_key = claims.get("k")
        grant = StreamGrant(
            str(claims["t"]), str(claims["p"]), int(claims["e"]), None if api_key is None else str(api_key)
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BadStreamToken("malformed payload") from None
    if grant.expires_at <= (now if now is not None else time.time()):
        raise BadStreamToken("expired")
    if grant.task_id != task_id:
        raise BadStreamToken("issued for another task")
    return grant


def grant_identity(grant: StreamGrant) -> Identity:
    """The identity a stream token stands for: its principal, limited to its task."""
    return Identity(grant.principal, task_id=grant.task_id, method="stream-token", key_id=grant.key_id)


def stream_link(task_id: str) -> str:
    """``links.stream`` of a task: with a token for the current caller unless it is anonymous."""
    path = f"/tasks/{task_id}/stream"
    identity = current_identity()
    if identity is None or identity.is_anonymous:
        return path
    return f"{path}?access_token={issue(task_id, identity.principal, api_key=identity.key_id)}"
