"""Request handling on the ASGI host: bad input, listing, ETags, health, OpenAPI."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import THROUGH_PGBOUNCER, wait_for_status


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400),
        # NaN and Infinity are not JSON (RFC 8259); PostgreSQL's JSONB refuses them too.
        (b'{"metadata": {"x": NaN}}', {"Content-Type": "application/json"}, 400),
        (b'{"vector_data": [1, -Infinity]}', {"Content-Type": "application/json"}, 400),
        (b"vector_data=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        (b'{"task_type": "nope"}', {"Content-Type": "application/json"}, 422),
        (b'{"duration": "x"}', {"Content-Type": "application/json"}, 422),
        (b"[1, 2]", {"Content-Type": "application/json"}, 422),
    ],
)
def test_bad_bodies_get_problem_json_and_create_nothing(
    client: httpx.Client, content: bytes, headers: dict, status: int
) -> None:
    resp = client.post("/tasks", content=content, headers=headers)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["status"] == status and problem["instance"] == "/tasks" and problem["detail"]
    assert client.get("/tasks").json()["items"] == []


def test_422_lists_every_bad_field(client: httpx.Client) -> None:
    problem = client.post("/tasks", json={"duration": -5, "vector_data": "x"}).json()
    assert {tuple(e["loc"]) for e in problem["errors"]} >= {("body", "duration"), ("body", "vector_data")}


def test_oversized_body_is_413_and_creates_nothing(client: httpx.Client) -> None:
    big = {"vector_data": [0.5] * 300_000}  # ~1.5 MB of JSON, over the 1 MiB default
    resp = client.post("/tasks", json=big)
    assert resp.status_code == 413 and resp.json()["status"] == 413
    assert client.get("/tasks").json()["items"] == []


def test_list_is_newest_first_filtered_and_paged(client: httpx.Client) -> None:
    ids = [client.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"] for _ in range(5)]
    client.post("/tasks", json={"duration": 1})
    page = client.get("/tasks", params={"limit": 2, "task_type": "test_noop"}).json()
    assert [t["task_id"] for t in page["items"]] == ids[::-1][:2]
    seen = [t["task_id"] for t in page["items"]]
    while page["next_cursor"]:
        page = client.get("/tasks", params={"limit": 2, "task_type": "test_noop", "cursor": page["next_cursor"]}).json()
        seen += [t["task_id"] for t in page["items"]]
    assert seen == ids[::-1]
    assert len(client.get("/tasks", params={"status": "PENDING"}).json()["items"]) == 6
    assert client.get("/tasks", params={"status": "SUCCESS"}).json()["items"] == []


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"status": "DONE"}, {"cursor": "zz"}])
def test_list_rejects_bad_query_parameters(client: httpx.Client, params: dict) -> None:
    resp = client.get("/tasks", params=params)
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json"


def test_status_has_etag_and_answers_304_until_the_task_changes(client: httpx.Client, start_worker) -> None:
    task = client.post("/tasks", json={"task_type": "test_noop"}).json()
    first = client.get(f"/tasks/{task['task_id']}")
    assert first.headers["Cache-Control"] == "no-store" and first.headers["Retry-After"] == "1"
    tag = first.headers["ETag"]
    assert client.get(f"/tasks/{task['task_id']}", headers={"If-None-Match": tag}).status_code == 304
    start_worker()
    wait_for_status(client, task["task_id"], "SUCCESS")
    changed = client.get(f"/tasks/{task['task_id']}", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag


def test_task_types_publish_their_input_schemas(client: httpx.Client) -> None:
    types = {t["name"]: t for t in client.get("/task-types").json()}
    assert {"vector_processing", "web_scrape"} <= set(types)
    assert "vector_data" in types["vector_processing"]["input_schema"]["properties"]
    assert types["web_scrape"]["input_schema"]["required"] == ["url"]
    assert types["web_scrape"]["queue"] == "tasklift.io"


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_unknown_paths_and_methods_are_problems(client: httpx.Client) -> None:
    resp = client.get("/nowhere")
    assert resp.status_code == 404 and resp.headers["content-type"] == "application/problem+json"
    resp = client.put("/tasks")
    assert resp.status_code == 405 and resp.headers["content-type"] == "application/problem+json"


def test_openapi_describes_every_endpoint_and_docs_render(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert {"/tasks", "/tasks/{task_id}", "/tasks/{task_id}/logs", "/task-types", "/healthz", "/readyz"} <= set(
        spec["paths"]
    )
    assert "202" in spec["paths"]["/tasks"]["post"]["responses"]
    assert "swagger" in client.get("/docs").text.lower()


def test_the_store_being_down_is_503_with_retry_after_and_no_task(client: httpx.Client, pg_server, db) -> None:
    import sqlalchemy as sa

    with db.connect() as conn:
        name = conn.execute(sa.text("SELECT current_database()")).scalar()
    admin = sa.create_engine(pg_server.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    try:
        resp = client.post("/tasks", json={"task_type": "test_noop"})
        assert resp.status_code == 503 and resp.headers["Retry-After"]
        assert resp.headers["content-type"] == "application/problem+json"
        assert "psycopg" not in resp.text and "SELECT" not in resp.text
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        admin.dispose()
    ok = client.post("/tasks", json={"task_type": "test_noop"})
    # Through PgBouncer (TASKLIFT_TEST_PGBOUNCER=1) the pool logs in to the server again first: the
    # API answers 503 (no task) until it has, a moment later. Directly, the next request succeeds.
    deadline = time.monotonic() + (5 if THROUGH_PGBOUNCER else 0)
    while ok.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
        ok = client.post("/tasks", json={"task_type": "test_noop"})
    assert ok.status_code == 202
    assert [t["task_id"] for t in client.get("/tasks").json()["items"]] == [ok.json()["task_id"]]
