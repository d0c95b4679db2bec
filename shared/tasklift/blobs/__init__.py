"""Blob storage for large task inputs and results (the claim check; docs/large-payloads.md).

``blob_backend`` picks the store: ``local`` (a folder, the default), ``s3`` or ``azure``. The SDKs
of the cloud backends are the ``blobs`` extra (``pip install tasklift[blobs]``) and are imported
only when chosen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import BinaryIO, NoReturn

from tasklift.blobs.store import BlobNotFound, BlobStore, BlobStoreError
from tasklift.settings import Settings

__all__ = ["BlobNotFound", "BlobStore", "BlobStoreError", "Unconfigured", "create_blob_store", "open_blob_store"]

log = logging.getLogger(__name__)


def create_blob_store(settings: Settings) -> BlobStore:
    """A new store for ``settings`` (a runtime makes one per process: SDK clients must not cross a fork).

    Raises:
        BlobStoreError: the chosen backend is not configured or its SDK is not installed.
    """
    try:
        if settings.blob_backend == "s3":
            from tasklift.blobs.s3 import S3BlobStore

            if not settings.blob_s3_bucket:
                raise BlobStoreError("blob_backend=s3 needs blob_s3_bucket")
            return S3BlobStore(
                settings.blob_s3_bucket, endpoint_url=settings.blob_s3_endpoint_url, region=settings.blob_s3_region
            )
        if settings.blob_backend == "azure":
            from tasklift.blobs.azure import AzureBlobStore

            secret = settings.blob_azure_connection_string
            return AzureBlobStore(
                settings.blob_azure_container,
                connection_string=secret.get_secret_value() if secret else None,
                account_url=settings.blob_azure_account_url,
            )
    except ImportError as exc:
        hint = f"blob_backend={settings.blob_backend} needs `pip install tasklift[blobs]` ({exc.name})"
        raise BlobStoreError(hint) from exc
    from tasklift.blobs.local import LocalBlobStore

    return LocalBlobStore(settings.blob_local_dir or settings.data_dir / "blobs")


class Unconfigured:
    """The store of a process whose blob backend could not be made: every use raises the error
    that prevented it (:class:`BlobStoreError`), so only large payloads fail, each with a 503."""

    def __init__(self, error: BlobStoreError) -> None:
        self.error = error

    def _fail(self) -> NoReturn:
        raise BlobStoreError(str(self.error)) from self.error

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str = "application/json") -> None:
        self._fail()

    def get(self, key: str) -> bytes:
        self._fail()

    def chunks(self, key: str) -> Iterator[bytes]:
        self._fail()

    def delete(self, key: str) -> None:
        self._fail()

    def exists(self, key: str) -> bool:
        self._fail()

    def keys(self, prefix: str) -> Iterator[str]:
        self._fail()

    def url(self, key: str, ttl_seconds: int) -> str | None:
        self._fail()


def open_blob_store(settings: Settings) -> BlobStore:
    """:func:`create_blob_store`, or :class:`Unconfigured` if it fails: a runtime starts whatever the
    blob configuration, and a misconfigured backend fails only the payloads that need it."""
    try:
        return create_blob_store(settings)
    except BlobStoreError as exc:
        log.warning("blob storage is unavailable (large inputs and results will fail): %s", exc)
        return Unconfigured(exc)
