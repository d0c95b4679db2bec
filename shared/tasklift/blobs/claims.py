"""The claim check: a JSON value too large for Redis and the tasks table goes to blob storage, and
the task keeps a reference to it in the same JSONB column (docs/large-payloads.md).

A reference is a JSON object with the single member ``$blob``::

    {"$blob": {"key": "tasks/<task id>/input.json", "size": 10485760, "sha256": "9f86d0…"}}

``size`` and ``sha256`` describe the stored bytes (the value as compact UTF-8 JSON) and are
checked when the value is read back. Keys are per task (``tasks/<id>/``), with one result key per
attempt, so that a purge can delete everything a task ever stored by listing its prefix, and an
attempt whose lease was taken over can never overwrite the result of the attempt that replaced it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from typing import Any

import orjson

from tasklift.blobs.store import BlobStore, BlobStoreError
from tasklift.settings import get_settings

log = logging.getLogger(__name__)

#: The member that marks a reference; a task input may not use it as a field name.
REF = "$blob"


def is_ref(value: Any) -> bool:
    """Whether ``value`` is a blob reference (and not data)."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(REF), dict)


def encode(value: Any) -> bytes:
    """The bytes a value is stored and measured as: compact UTF-8 JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def task_prefix(task_id: uuid.UUID | str) -> str:
    """Where every blob of one task lives."""
    return f"{get_settings().blob_prefix}tasks/{task_id}/"


def input_key(task_id: uuid.UUID | str) -> str:
    """The key of a task's large input."""
    return f"{task_prefix(task_id)}input.json"


def result_key(task_id: uuid.UUID | str, attempt: int) -> str:
    """The key of the large result of one attempt."""
    return f"{task_prefix(task_id)}result-{attempt}.json"


def result_url(task_id: uuid.UUID | str) -> str:
    """The API path that serves a task's result (GET /tasks/{id}/result)."""
    return f"/tasks/{task_id}/result"


def fits_inline(value: Any) -> bool:
    """True if :func:`check_in` would keep ``value`` itself (no blob store involved)."""
    limit = get_settings().blob_threshold_bytes
    try:
        # orjson's JSON differs from encode()'s only in shorter exponents ("1e-7" for "1e-07",
        # at most 5 bytes for 4): at half the limit, the exact length need not be computed.
        if 2 * len(orjson.dumps(value)) <= limit:
            return True
    except TypeError:  # integers beyond 64 bits, non-text keys, lone surrogates: encode() decides
        pass
    return len(encode(value)) <= limit


def check_in(value: Any, key: str, store: BlobStore, threshold: int | None = None) -> Any:
    """``value`` itself if its JSON is at most ``threshold`` bytes, else a reference to it, stored under ``key``.

    The store (the runtime's) is only touched for a large value, so a misconfigured blob
    backend fails large payloads alone.

    Raises:
        BlobStoreError: the value is large and the blob store could not take it.
    """
    data = encode(value)
    limit = get_settings().blob_threshold_bytes if threshold is None else threshold
    if len(data) <= limit:
        return value
    store.put(key, data)
    return {REF: {"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}}


def check_out(value: Any, store: BlobStore) -> Any:
    """The value a reference stands for (anything else is returned as it is).

    Raises:
        BlobNotFound: the blob is gone.
        BlobStoreError: the store failed, or the blob is not the one the reference describes.
    """
    if not is_ref(value):
        return value
    ref = value[REF]
    data = store.get(ref["key"])
    if len(data) != ref.get("size") or hashlib.sha256(data).hexdigest() != ref.get("sha256"):
        raise BlobStoreError(f"blob {ref['key']} does not match its reference (size or sha256)")
    return json.loads(data)


def discard(value: Any, store: BlobStore) -> None:
    """Delete the blob behind a reference that nothing will point to; failures are only logged.

    A blob this misses is still found by the retention purge, which deletes a task's whole prefix.
    """
    if not is_ref(value):
        return
    try:
        store.delete(value[REF]["key"])
    except BlobStoreError as exc:
        log.warning("could not delete unused blob %s: %s", value[REF]["key"], exc)


def public_result(task_id: uuid.UUID | str, result: Any) -> dict[str, Any]:
    """How a result is shown to clients: inline, or ``result: null`` and the URL that serves it."""
    if is_ref(result):
        return {"result": None, "result_url": result_url(task_id)}
    return {"result": result, "result_url": None}


class Claim:
    """A value checked in for a row about to be written; its blob is deleted again unless kept.

    Use it around the transaction that stores the reference, and call :meth:`keep` once the row is
    written: an error (the commit included) or an early return leaves no blob behind.
    """

    def __init__(self, value: Any, store: BlobStore) -> None:
        self.value = value
        self.store = store
        self.kept = False

    @classmethod
    def check_in(cls, value: Any, key: str, store: BlobStore) -> Claim:
        """:func:`check_in` ``value`` under ``key``; raises :class:`BlobStoreError` if the store fails."""
        return cls(check_in(value, key, store), store)

    def keep(self) -> None:
        self.kept = True

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or not self.kept:
            discard(self.value, self.store)
