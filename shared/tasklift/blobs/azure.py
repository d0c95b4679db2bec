"""Blobs in an Azure Storage container (or Azurite, its local emulator).

Two ways in: ``blob_azure_connection_string`` (shared key; Azurite, or accounts that allow keys)
or ``blob_azure_account_url`` with Microsoft Entra ID through ``DefaultAzureCredential`` (managed
identity in Azure, ``az login`` on a laptop). Download URLs are read-only blob SAS tokens: signed
with the account key, or with a *user delegation key* under Entra ID (the only SAS an identity
without keys can make; it needs the "Storage Blob Delegator" action, which "Storage Blob Data
Reader/Contributor" include). A connection string that carries a SAS instead of a key can sign
nothing, so :meth:`AzureBlobStore.url` answers None and the API streams the blob itself.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, TypeVar

from tasklift.blobs.store import BlobNotFound, BlobStoreError

T = TypeVar("T")

#: A user delegation key may live up to 7 days; one is fetched per day and reused for every SAS.
DELEGATION_KEY_LIFETIME = timedelta(days=1)
#: SAS start times are backdated a little: the storage service's clock may be behind ours.
CLOCK_SKEW = timedelta(minutes=5)


class AzureBlobStore:
    """A :class:`~tasklift.blobs.store.BlobStore` over one container."""

    def __init__(self, container: str, *, connection_string: str | None = None, account_url: str | None = None) -> None:
        from azure.storage.blob import BlobServiceClient

        if connection_string:
            self._service = BlobServiceClient.from_connection_string(connection_string)
        elif account_url:
            from azure.identity import DefaultAzureCredential

            self._service = BlobServiceClient(account_url, credential=DefaultAzureCredential())
        else:
            raise BlobStoreError("blob_backend=azure needs blob_azure_connection_string or blob_azure_account_url")
        self.container = container
        self._container = self._service.get_container_client(container)
        self._delegation: tuple[datetime, Any] | None = None
        self._lock = threading.Lock()

    def _call(self, key: str, action: Callable[[], T]) -> T:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return action()
        except ResourceNotFoundError:
            raise BlobNotFound(key) from None
        except AzureError as exc:
            raise BlobStoreError(f"Azure Blob Storage failed for {key}: {type(exc).__name__}") from exc

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str = "application/json") -> None:
        from azure.storage.blob import ContentSettings

        blob = self._container.get_blob_client(key)
        # Above 4 MiB the SDK uploads blocks (Put Block + Put Block List), two at a time.
        self._call(
            key,
            lambda: blob.upload_blob(
                data, overwrite=True, content_settings=ContentSettings(content_type=content_type), max_concurrency=2
            ),
        )

    def get(self, key: str) -> bytes:
        blob = self._container.get_blob_client(key)
        return self._call(key, lambda: blob.download_blob().readall())

    def chunks(self, key: str) -> Iterator[bytes]:
        blob = self._container.get_blob_client(key)
        download = self._call(key, blob.download_blob)
        return self._iterate(key, download)

    def _iterate(self, key: str, download: Any) -> Iterator[bytes]:
        from azure.core.exceptions import AzureError

        try:
            yield from download.chunks()
        except AzureError as exc:
            raise BlobStoreError(f"Azure read of {key} broke off: {type(exc).__name__}") from exc

    def delete(self, key: str) -> None:
        blob = self._container.get_blob_client(key)
        with contextlib.suppress(BlobNotFound):  # already gone: purges may repeat
            self._call(key, lambda: blob.delete_blob(delete_snapshots="include"))

    def exists(self, key: str) -> bool:
        blob = self._container.get_blob_client(key)
        return self._call(key, blob.exists)

    def keys(self, prefix: str) -> Iterator[str]:
        yield from self._call(prefix, lambda: list(self._container.list_blob_names(name_starts_with=prefix)))

    def url(self, key: str, ttl_seconds: int) -> str | None:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        now = datetime.now(UTC)
        signing: dict[str, Any] = {}
        account_key = getattr(self._service.credential, "account_key", None)
        if account_key:
            signing["account_key"] = account_key
        elif hasattr(self._service.credential, "get_token"):  # Entra ID (managed identity, az login)
            signing["user_delegation_key"] = self._delegation_key(now)
        else:
            return None  # a SAS connection string: nothing to sign with
        blob = self._container.get_blob_client(key)
        sas = generate_blob_sas(
            account_name=str(self._service.account_name),
            container_name=self.container,
            blob_name=key,
            permission=BlobSasPermissions(read=True),
            start=now - CLOCK_SKEW,
            expiry=now + timedelta(seconds=ttl_seconds),
            **signing,
        )
        return f"{blob.url}?{sas}"

    def _delegation_key(self, now: datetime) -> Any:
        """A user delegation key valid for at least the next hour (fetched at most once a day)."""
        with self._lock:
            if self._delegation is None or self._delegation[0] - now < timedelta(hours=1):
                expiry = now + DELEGATION_KEY_LIFETIME
                key = self._call(
                    "user delegation key", lambda: self._service.get_user_delegation_key(now - CLOCK_SKEW, expiry)
                )
                self._delegation = (expiry, key)
            return self._delegation[1]
