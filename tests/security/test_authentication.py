"""Authentication: API keys (Bearer or X-API-Key), 401 + WWW-Authenticate without them, public endpoints."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import httpx
import pytest
import sqlalchemy as sa

from tasklift.security.api_keys import KEY_PREFIX, generate_secret
from tests.security.conftest import submit

TASK = "/tasks/00000000-0000-0000-0000-000000000001"
PROTECTED = [
    ("POST", "/tasks"),
    ("GET", "/tasks"),
    ("GET", TASK),
    ("DELETE", TASK),
    ("GET", f"{TASK}/logs"),
    ("GET", f"{TASK}/output"),
    ("GET", f"{TASK}/stream"),
    ("POST", f"{TASK}/retry"),
    ("GET", "/task-types"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_task_endpoint_without_credentials_is_401_problem_with_a_bearer_challenge(
    client_for: Callable[..., httpx.Client], method: str, path: str
) -> None:
    resp = client_for().request(method, path, json={"task_type": "test_noop"} if method == "POST" else None)
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"] == 'Bearer realm="tasklift"'
    assert resp.json()["status"] == 401 and resp.json()["instance"] == path


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/docs", "/", "/static/app.js"])
def test_health_docs_and_the_dashboard_stay_public(client_for: Callable[..., httpx.Client], path: str) -> None:
    assert client_for().get(path).status_code == 200


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_an_api_key_authenticates_as_bearer_and_as_x_api_key(
    make_key: Callable[..., str], client_for: Callable[..., httpx.Client], header: str
) -> None:
    http = client_for(make_key("alice"), header=header)
    task = submit(http)
    assert http.get(f"/tasks/{task['task_id']}").status_code == 200
    assert [t["task_id"] for t in http.get("/tasks").json()["items"]] == [task["task_id"]]


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {KEY_PREFIX}not-a-real-key-0000000000000000000000000", "Bearer eyJhbGciOi.not.ajwt", "Bearer"],
)
def test_a_wrong_credential_is_401_invalid_token(secure_api: str, authorization: str) -> None:
    resp = httpx.get(f"{secure_api}/tasks", headers={"Authorization": authorization})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith('Bearer realm="tasklift", error="invalid_')


def test_another_authorization_scheme_is_401_invalid_request(make_key: Callable[..., str], secure_api: str) -> None:
    key = make_key("alice")
    resp = httpx.get(f"{secure_api}/tasks", headers={"Authorization": f"Basic {key}"})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == 'Bearer realm="tasklift", error="invalid_request"'


def test_a_revoked_key_is_refused_at_once(
    make_key: Callable[..., str], client_for: Callable[..., httpx.Client], db: sa.Engine
) -> None:
    http = client_for(make_key("alice"))
    assert http.get("/tasks").status_code == 200
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE api_keys SET revoked_at = now() WHERE name = 'alice'"))
    resp = http.get("/tasks")
    assert resp.status_code == 401 and "revoked" in resp.json()["detail"]


def test_keys_are_stored_only_as_a_sha256_digest_and_a_short_prefix(
    make_key: Callable[..., str], db: sa.Engine
) -> None:
    key = make_key("alice")
    with db.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM api_keys WHERE name = 'alice'")).mappings().one()
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["prefix"] == key[:10]
    assert all(key not in str(value) for value in row.values())


def test_generated_keys_are_prefixed_high_entropy_and_unique() -> None:
    keys = {generate_secret() for _ in range(1000)}
    assert len(keys) == 1000
    assert all(k.startswith("tl_") and len(k) == 46 for k in keys)  # tl_ + 43 chars of base64url = 256 bits


def test_use_of_a_key_is_recorded_in_last_used_at(
    make_key: Callable[..., str], client_for: Callable[..., httpx.Client], db: sa.Engine
) -> None:
    http = client_for(make_key("alice"))
    http.get("/tasks")
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT last_used_at FROM api_keys WHERE name = 'alice'")).scalar() is not None


def test_anonymous_access_only_when_the_setting_is_on_and_never_with_a_bad_credential(
    configure: Callable[..., None], client_for: Callable[..., httpx.Client]
) -> None:
    anonymous = client_for()
    assert anonymous.get("/tasks").status_code == 401
    configure(anonymous="true")
    task = submit(anonymous)
    assert anonymous.get(f"/tasks/{task['task_id']}").status_code == 200
    # Presented credentials are checked even then: a wrong key is not silently anonymous.
    assert client_for("tl_wrong-key-000000000000000000000000000").get("/tasks").status_code == 401
