"""The blob store interface every backend implements, and its errors.

Keys are ``/``-separated paths (``tasks/<id>/input.json``). Backends translate their SDK's errors
into :class:`BlobStoreError` so the core can answer 503 without knowing which cloud it runs on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol

#: Read and upload in pieces of this size, so a 64 MiB payload is never copied whole twice.
CHUNK_BYTES = 1024 * 1024


class BlobStoreError(Exception):
    """The blob store could not do what was asked (unreachable, refused, misconfigured)."""


class BlobNotFound(BlobStoreError):  # noqa: N818
    """No blob under that key."""


class BlobStore(Protocol):
    """Where large inputs and results live (the claim check pattern's "check room")."""

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str = "application/json") -> None:
        """Store ``data`` (bytes or a readable binary stream) under ``key``, replacing any blob there."""
        ...

    def get(self, key: str) -> bytes:
        """The whole blob; :class:`BlobNotFound` if there is none."""
        ...

    def chunks(self, key: str) -> Iterator[bytes]:
        """The blob in pieces, for streaming it to a client; :class:`BlobNotFound` if there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; deleting a missing blob is not an error (purges are retried)."""
        ...

    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""
        ...

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key that starts with ``prefix`` (to purge a task's blobs, strays included)."""
        ...

    def url(self, key: str, ttl_seconds: int) -> str | None:
        """A short-lived URL that downloads the blob without credentials, or None if this backend has none."""
        ...
