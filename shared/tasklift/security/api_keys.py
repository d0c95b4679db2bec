"""API keys: random secrets of which only a SHA-256 digest is stored.

A key is ``tl_`` followed by 43 URL-safe characters (32 random bytes from :mod:`secrets`), so a
leaked key is easy to recognise (secret scanners, the log redaction) and impossible to guess. A
fast unsalted hash is enough for a 256-bit random secret: there is nothing to brute-force, and it
lets a key be found by an indexed lookup of its digest instead of trying every stored hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from tasklift.security.identity import Identity
from tasklift.store.aio import AsyncStore

KEY_PREFIX = "tl_"
SHOWN_PREFIX = 10  #: characters of a key kept in clear (``tl_`` + 7) to tell keys apart in lists
LAST_USED_RESOLUTION_SECONDS = 60  #: ``last_used_at`` is written at most this often per key


def generate_secret() -> str:
    """A new random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(credential: str) -> bool:
    """True when ``credential`` has the shape of a tasklift API key (not a JWT)."""
    return credential.startswith(KEY_PREFIX)


#: The key whose digest is ``:key_hash`` (the unique index on key_hash).
KEY_BY_DIGEST_SQL = (
    "SELECT id, principal, admin, key_hash, revoked_at, last_used_at FROM api_keys WHERE key_hash = :key_hash"
)
TOUCH_KEY_SQL = "UPDATE api_keys SET last_used_at = now() WHERE id = :id"
#: Of the ids ``:ids``, those of unrevoked keys (ONE query however many are asked).
ACTIVE_KEYS_SQL = "SELECT id FROM api_keys WHERE id = ANY(CAST(:ids AS uuid[])) AND revoked_at IS NULL"


async def authenticate_key(store: AsyncStore, secret: str) -> Identity | None:
    """The identity of a valid, unrevoked key, or None (on the API's store)."""
    wanted = digest(secret)
    row = await store.fetchrow(KEY_BY_DIGEST_SQL, {"key_hash": wanted})
    # The lookup is by digest; comparing again in constant time costs nothing and keeps the check
    # independent of how the database compares strings.
    if row is None or row["revoked_at"] is not None or not hmac.compare_digest(row["key_hash"], wanted):
        return None
    last_used = row["last_used_at"]
    if last_used is None or (datetime.now(UTC) - last_used).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        await store.execute(TOUCH_KEY_SQL, {"id": row["id"]})
    return Identity(row["principal"], admin=row["admin"], method="api-key", key_id=str(row["id"]))


async def active_key_ids(store: AsyncStore, key_ids: Iterable[str]) -> set[str]:
    """Those of ``key_ids`` that name an existing, unrevoked key: ONE query however many are asked.

    What stream tokens re-check (:mod:`tasklift.security.stream_tokens`), when a stream opens and,
    for every open stream of a process at once, while it runs (:mod:`tasklift.events.hub`).
    """
    wanted = set()
    for key_id in key_ids:
        with contextlib.suppress(ValueError):  # not a UUID: names no key (tokens are signed; never expected)
            wanted.add(uuid.UUID(key_id))
    if not wanted:
        return set()
    rows = await store.fetch(ACTIVE_KEYS_SQL, {"ids": list(wanted)})
    return {str(row["id"]) for row in rows}
