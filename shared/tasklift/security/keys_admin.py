"""Creating, revoking and listing API keys: the ``tasklift keys`` commands (SQLAlchemy, like the CLI).

Checking a key is the API's (:mod:`tasklift.security.api_keys`, on its asyncpg store); the keys are
made here, and only a digest of each is stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, RowMapping, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tasklift.security.api_keys import SHOWN_PREFIX, digest, generate_secret
from tasklift.store.tables import ApiKey, api_keys


class KeyExists(ValueError):
    """A key with this name already exists (revoked keys keep their name)."""


@dataclass(frozen=True)
class NewKey:
    """A key just created: ``secret`` is shown once and never stored."""

    name: str
    principal: str
    admin: bool
    secret: str


def create_key(conn: Connection, name: str, *, admin: bool = False, principal: str | None = None) -> NewKey:
    """Store a new key named ``name``; its tasks belong to ``key:<principal or name>``.

    Raises:
        KeyExists: the name is taken.
    """
    secret = generate_secret()
    owner = f"key:{principal or name}"
    try:
        with conn.begin_nested():
            conn.execute(
                insert(ApiKey).values(
                    id=uuid.uuid4(),
                    name=name,
                    principal=owner,
                    prefix=secret[:SHOWN_PREFIX],
                    key_hash=digest(secret),
                    admin=admin,
                )
            )
    except IntegrityError:
        raise KeyExists(f"a key named {name!r} already exists") from None
    return NewKey(name, owner, admin, secret)


def revoke_key(conn: Connection, name: str) -> RowMapping | None:
    """Revoke the key named ``name`` (idempotent); None if there is no such key."""
    conn.execute(update(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)).values(revoked_at=func.now()))
    return conn.execute(select(api_keys).where(api_keys.c.name == name)).mappings().first()


def list_keys(conn: Connection) -> list[RowMapping]:
    """Every key, oldest first (digests included; callers must not print them)."""
    return list(conn.execute(select(api_keys).order_by(api_keys.c.created_at, api_keys.c.name)).mappings())
