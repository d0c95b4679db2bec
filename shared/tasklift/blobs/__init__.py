"""Blob storage for large task inputs and results (the claim check; docs/large-payloads.md).

``blob_backend`` picks the store: ``local`` (a folder, the default), ``s3`` or ``azure``. The SDKs
of the cloud backends are the ``blobs`` extra (``pip install tasklift[blobs]``) and are imported
only when chosen.
"""

from __future__ import annotations

import os
import threading

from tasklift.blobs.store import BlobNotFound, BlobStore, BlobStoreError
from tasklift.settings import Settings, get_settings

__all__ = ["BlobNotFound", "BlobStore", "BlobStoreError", "create_blob_store", "get_blob_store"]

_lock = threading.Lock()
_store: tuple[int, Settings, BlobStore] | None = None


def create_blob_store(settings: Settings) -> BlobStore:
    """A new store for ``settings``.

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


def get_blob_store() -> BlobStore:
    """This process's store (one per forked worker child: SDK clients must not cross a fork)."""
    global _store
    settings = get_settings()
    with _lock:
        if _store is None or _store[0] != os.getpid() or _store[1] is not settings:
            _store = (os.getpid(), settings, create_blob_store(settings))
        return _store[2]
