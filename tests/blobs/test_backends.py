"""The BlobStore contract on each backend (local folder, S3 on moto, Azure Blob on Azurite), and the
claim-check helpers over it."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tasklift.blobs import BlobNotFound, BlobStoreError, claims
from tasklift.blobs.local import LocalBlobStore
from tests.blobs.conftest import Backend


def test_every_backend_stores_streams_lists_and_deletes_blobs(backend: Backend) -> None:
    store = backend.store()
    big = bytes(range(256)) * 12_000  # ~3 MB: past S3's and Azure's single-request upload sizes
    store.put("tasks/a/input.json", b'{"x":1}')
    store.put("tasks/a/result-1.json", io.BytesIO(big))  # a stream, uploaded in parts
    store.put("tasks/b/input.json", b"{}")
    assert store.get("tasks/a/input.json") == b'{"x":1}'
    assert b"".join(store.chunks("tasks/a/result-1.json")) == big
    assert store.exists("tasks/a/input.json") and not store.exists("tasks/a/nothing.json")
    assert sorted(store.keys("tasks/a/")) == ["tasks/a/input.json", "tasks/a/result-1.json"]
    store.put("tasks/a/input.json", b'{"x":2}')  # overwrite
    assert store.get("tasks/a/input.json") == b'{"x":2}'
    store.delete("tasks/a/input.json")
    store.delete("tasks/a/input.json")  # deleting twice is fine: purges repeat
    assert not store.exists("tasks/a/input.json")
    with pytest.raises(BlobNotFound):
        store.get("tasks/a/input.json")
    with pytest.raises(BlobNotFound):
        store.chunks("tasks/a/input.json")
    assert list(store.keys("tasks/b/")) == ["tasks/b/input.json"]


def test_cloud_backends_sign_short_lived_download_urls_and_local_has_none(backend: Backend) -> None:
    store = backend.store()
    store.put("tasks/c/result-1.json", b'{"answer": 42}')
    url = store.url("tasks/c/result-1.json", 120)
    if backend.name == "local":
        assert url is None  # the API streams local blobs itself
        return
    assert url is not None
    query = parse_qs(urlsplit(url).query)
    if backend.name == "s3":
        assert query["X-Amz-Expires"] == ["120"] and "X-Amz-Signature" in query
    else:
        expiry = datetime.fromisoformat(query["se"][0].replace("Z", "+00:00"))
        assert 0 < (expiry - datetime.now(UTC)).total_seconds() <= 121 and query["sp"] == ["r"] and "sig" in query
    resp = httpx.get(url)  # no credentials: the signature is the permission
    assert resp.status_code == 200 and resp.json() == {"answer": 42}
    tampered = url.replace("result-1.json", "result-2.json")
    assert httpx.get(tampered).status_code in (403, 404)


def test_check_in_keeps_small_values_inline_and_stores_large_ones_as_a_reference(backend: Backend) -> None:
    store = backend.store()
    small = {"n": 1}
    assert claims.check_in(small, "tasks/d/input.json", store, threshold=100) == small
    assert not store.exists("tasks/d/input.json")
    large = {"data": "x" * 500}
    ref = claims.check_in(large, "tasks/d/input.json", store, threshold=100)
    assert claims.is_ref(ref) and ref["$blob"]["key"] == "tasks/d/input.json"
    assert ref["$blob"]["size"] == len(claims.encode(large)) and len(ref["$blob"]["sha256"]) == 64
    assert claims.check_out(ref, store) == large
    assert claims.check_out(small, store) == small


def test_a_blob_that_does_not_match_its_reference_is_refused(local_backend: Backend) -> None:
    store = local_backend.store()
    ref = claims.check_in({"data": "y" * 500}, "tasks/e/input.json", store, threshold=10)
    store.put("tasks/e/input.json", claims.encode({"data": "z" * 500}))  # same size, other bytes
    with pytest.raises(BlobStoreError, match="does not match"):
        claims.check_out(ref, store)


def test_the_local_store_keeps_keys_inside_its_folder(tmp_path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    for key in ("../escape.json", "tasks/../../escape.json", ""):
        with pytest.raises(BlobStoreError):
            store.put(key, b"{}")
    assert not (tmp_path / "escape.json").exists()


def test_a_claim_deletes_its_blob_again_unless_the_row_was_written(local_backend: Backend) -> None:
    store = local_backend.store()
    large = {"data": "z" * 300_000}  # over the 256 KiB default threshold
    with pytest.raises(RuntimeError), claims.Claim.check_in(large, "tasks/f/input.json", store) as claim:
        assert claims.is_ref(claim.value) and store.exists("tasks/f/input.json")
        raise RuntimeError("the commit failed")
    assert not store.exists("tasks/f/input.json")
    with claims.Claim.check_in(large, "tasks/g/input.json", store) as claim:
        pass  # returned early (an idempotent replay): nothing kept it
    assert not store.exists("tasks/g/input.json")
    with claims.Claim.check_in(large, "tasks/h/input.json", store) as claim:
        claim.keep()
    assert store.exists("tasks/h/input.json")
