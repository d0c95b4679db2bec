"""Blobs in an S3 bucket (or any S3-compatible store: MinIO, moto, R2 via ``blob_s3_endpoint_url``).

Credentials come from boto3's default chain (environment, shared config, the instance or task
role), never from tasklift's settings. Downloads are presigned GET URLs (SigV4; at most 7 days).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar

from tasklift.blobs.store import CHUNK_BYTES, BlobNotFound, BlobStoreError

T = TypeVar("T")

#: The codes S3 answers for a key or bucket that is not there (GetObject, HeadObject).
MISSING = {"404", "NoSuchKey", "NotFound"}


class S3BlobStore:
    """A :class:`~tasklift.blobs.store.BlobStore` over one bucket."""

    def __init__(self, bucket: str, *, endpoint_url: str | None = None, region: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        # An explicit endpoint is usually an S3-compatible server on a plain host name or IP, where
        # virtual-hosted addressing (bucket.host) cannot resolve; AWS itself prefers virtual hosts.
        config = Config(
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
        )
        self.bucket = bucket
        self._client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)

    def _call(self, key: str, action: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return action()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in MISSING:
                raise BlobNotFound(key) from None
            raise BlobStoreError(f"S3 refused {key}: {code}") from exc
        except BotoCoreError as exc:
            raise BlobStoreError(f"S3 unavailable for {key}: {type(exc).__name__}") from exc

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str = "application/json") -> None:
        stream = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
        # upload_fileobj switches to a multipart upload past 8 MiB and retries parts on its own.
        self._call(
            key,
            lambda: self._client.upload_fileobj(stream, self.bucket, key, ExtraArgs={"ContentType": content_type}),
        )

    def get(self, key: str) -> bytes:
        return b"".join(self.chunks(key))

    def chunks(self, key: str) -> Iterator[bytes]:
        body = self._call(key, lambda: self._client.get_object(Bucket=self.bucket, Key=key)["Body"])
        return self._iterate(key, body)

    def _iterate(self, key: str, body: Any) -> Iterator[bytes]:
        with body:
            try:
                yield from body.iter_chunks(CHUNK_BYTES)
            except Exception as exc:  # noqa: BLE001 - botocore and urllib3 both raise mid-stream
                raise BlobStoreError(f"S3 read of {key} broke off: {type(exc).__name__}") from exc

    def delete(self, key: str) -> None:
        # DeleteObject answers 204 for a key that is not there: purges may repeat.
        self._call(key, lambda: self._client.delete_object(Bucket=self.bucket, Key=key))

    def exists(self, key: str) -> bool:
        try:
            self._call(key, lambda: self._client.head_object(Bucket=self.bucket, Key=key))
        except BlobNotFound:
            return False
        return True

    def keys(self, prefix: str) -> Iterator[str]:
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in self._call(prefix, lambda: list(pages)):
            for item in page.get("Contents", []):
                yield item["Key"]

    def url(self, key: str, ttl_seconds: int) -> str | None:
        url: str = self._call(
            key,
            lambda: self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=ttl_seconds
            ),
        )
        return url
