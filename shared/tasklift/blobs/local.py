"""Blobs in a local folder: the development default (``TASKLIFT_DATA_DIR/blobs``).

The API and the workers must see the same folder (one machine, or a shared volume). There is no
download URL: the API streams a large result itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tasklift.blobs.store import CHUNK_BYTES, BlobNotFound, BlobStoreError


class LocalBlobStore:
    """A :class:`~tasklift.blobs.store.BlobStore` over a folder; a key is a relative path in it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not key or not path.is_relative_to(self.root) or path == self.root:
            raise BlobStoreError(f"blob key {key!r} leaves the blob folder")
        return path

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str = "application/json") -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write aside, then rename: a reader never sees half a blob, a crash leaves only a temp file.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                with os.fdopen(fd, "wb") as out:
                    if isinstance(data, bytes | bytearray | memoryview):
                        out.write(data)
                    else:
                        shutil.copyfileobj(data, out, CHUNK_BYTES)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise BlobStoreError(f"cannot write blob {key}: {exc.strerror or exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        except OSError as exc:
            raise BlobStoreError(f"cannot read blob {key}: {exc.strerror or exc}") from exc

    def chunks(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        except OSError as exc:
            raise BlobStoreError(f"cannot read blob {key}: {exc.strerror or exc}") from exc
        return _read_chunks(handle)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise BlobStoreError(f"cannot delete blob {key}: {exc.strerror or exc}") from exc
        with contextlib.suppress(OSError):  # tidy the task's folder once it is empty
            path.parent.rmdir()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self, prefix: str) -> Iterator[str]:
        # Keys are paths: walk only the folder the prefix names, not the whole store.
        folder = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not folder.is_dir():
            return
        for path in sorted(folder.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix):  # with crashed writers' temp files: purges are complete
                yield key

    def url(self, key: str, ttl_seconds: int) -> str | None:
        return None


def _read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk
