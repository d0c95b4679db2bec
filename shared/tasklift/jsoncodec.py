"""Compact JSON encoding on the hot paths: orjson, with the standard library where orjson stops.

orjson writes the same compact UTF-8 JSON as ``json.dumps(..., separators=(",", ":"),
ensure_ascii=False)`` about ten times faster. It refuses integers beyond 64 bits, which JSON and
PostgreSQL's JSONB allow (a task may return one): those values are encoded by the standard library
instead, so nothing a task or a client sends is ever refused or rounded here. Decoding stays with
``json.loads``: orjson would read such integers as floats.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """``value`` as compact JSON bytes; ``default`` renders what JSON has no type for (datetimes too)."""
    try:
        return orjson.dumps(value, default=default, option=_OPTIONS)
    except TypeError:  # an integer beyond 64 bits, say: the standard library writes it exactly
        fallback = default or _as_orjson_would
        return json.dumps(value, default=fallback, separators=(",", ":"), ensure_ascii=False).encode()


def _as_orjson_would(value: Any) -> Any:
    """What orjson writes natively for the types the standard library refuses."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_text(value: Any) -> str:
    """:func:`dumps` as ``str`` (what asyncpg's JSONB codec takes)."""
    return dumps(value).decode()


def rfc3339(value: datetime | None) -> str | None:
    """RFC 3339 UTC with a ``Z``, as API.md requires."""
    if value is None:
        return None
    if value.tzinfo is not UTC:  # asyncpg already returns UTC; psycopg the session's zone
        value = value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")
