"""Hostile input (issue 20): bounds are checked before anything is stored, a client's bad value is
a 4xx problem (never a 500 or a 503), and whatever was accepted can be read back everywhere."""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tasklift.settings import get_settings
from tasklift.store import aio
from tasklift.store import repository as repo
from tests.conftest import wait_for_status
from tests.integration.test_stream import parse, raw_stream

MAX_DEPTH = 32  #: the default max_json_depth (settings.py): the body object is level 1


def nested(levels: int, leaf: Any = "bottom") -> Any:
    """``leaf`` inside ``levels`` arrays."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["status"] == status and problem["detail"]
    return problem


def stored_tasks(db: sa.Engine) -> int:
    with db.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM tasks")).scalar() or 0)


# --- defect 1 and 4: nesting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "where"),
    [
        # 950 deep on a type that does not model metadata: was committed, then unreadable (500s).
        (b'{"task_type": "test_noop", "metadata": {"x": ' + b"[" * 950 + b"]" * 950 + b"}}", "metadata"),
        # 260 deep on vector_processing (its input models metadata): was a 500.
        (b'{"metadata": {"x": ' + b"[" * 260 + b"]" * 260 + b"}}", "metadata"),
        # 10,000 deep: the parser itself recursed too deep (a 500).
        (b"[" * 10_000 + b"]" * 10_000, None),
        # One level over the limit.
        (json.dumps({"metadata": {"x": nested(MAX_DEPTH - 1)}}).encode(), "metadata"),
    ],
)
def test_nesting_beyond_the_limit_is_422_naming_it_and_nothing_is_stored(
    client: httpx.Client, db: sa.Engine, body: bytes, where: str | None
) -> None:
    problem = assert_problem(client.post("/tasks", content=body, headers={"Content-Type": "application/json"}), 422)
    assert "max_json_depth" in problem["detail"]
    assert problem["errors"][0]["limit"] == "max_json_depth"
    if where is not None:
        assert problem["errors"][0]["loc"][:2] == ["body", where]
    assert stored_tasks(db) == 0
    # Nothing poisoned the reads.
    assert client.get("/tasks").status_code == 200


# --- defect 3: numbers beyond a double ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"metadata": {"big": 1e400}}', ["body", "metadata", "big"]),
        (b'{"metadata": {"n": [1, -1E+0400]}}', ["body", "metadata", "n", 1]),
        (b'{"vector_data": [0.5, 1e400]}', ["body", "vector_data", 1]),
        (b'{"metadata": {"huge": 1' + b"0" * 400 + b"}}", ["body", "metadata", "huge"]),
        (b'{"metadata": {"m": 1' + b"0" * 300 + b"e10}}", ["body", "metadata", "m"]),
    ],
)
def test_numbers_beyond_a_double_are_422_naming_the_field(
    client: httpx.Client, db: sa.Engine, body: bytes, loc: list[Any]
) -> None:
    problem = assert_problem(client.post("/tasks", content=body, headers={"Content-Type": "application/json"}), 422)
    assert problem["errors"][0]["loc"] == loc
    assert stored_tasks(db) == 0


def test_an_overflowing_number_with_an_idempotency_key_is_422_not_503(client: httpx.Client, db: sa.Engine) -> None:
    headers = {"Content-Type": "application/json", "Idempotency-Key": "overflow-1"}
    for _ in range(2):  # a client retrying gets the same answer: nothing was reserved
        resp = client.post("/tasks", content=b'{"metadata": {"big": 1e400}}', headers=headers)
        assert_problem(resp, 422)
    assert stored_tasks(db) == 0


# --- defect 4: text and headers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [{"task_type": "\x00"}, {"status": "PENDING\x00"}, {"cursor": "\x00"}, {"created_after": "2024\x00"}],
)
def test_nul_in_a_query_parameter_is_422(client: httpx.Client, params: dict[str, str]) -> None:
    problem = assert_problem(client.get("/tasks", params=params), 422)
    assert problem["errors"][0]["loc"] == ["query", next(iter(params))]


def test_a_query_parameter_given_twice_is_422_naming_it(client: httpx.Client) -> None:
    """Found by the stateful schemathesis run: ``?wait=true&wait=`` answered 200 (the last value won,
    empty, read as no wait). No parameter of the API is a list, so which value counts is refused."""
    task = client.post("/tasks", json={"task_type": "test_noop"}).json()
    for path, query in ((f"/tasks/{task['task_id']}", "wait=true&wait="), ("/tasks", "status=PENDING&status=FAILED")):
        problem = assert_problem(client.get(f"{path}?{query}"), 422)
        assert problem["errors"][0]["loc"] == ["query", query.split("=", 1)[0]]
    assert client.get("/tasks?status=PENDING&task_type=test_noop").status_code == 200  # different names: fine


def test_nul_in_a_key_or_string_is_422_and_nothing_is_stored(client: httpx.Client, db: sa.Engine) -> None:
    bodies = (b'{"metadata": {"k\\u0000": 1}}', b'{"metadata": {"k": "a\\u0000b"}}', b'{"metadata": {"k": "\\ud800"}}')
    for body in bodies:
        assert_problem(client.post("/tasks", content=body, headers={"Content-Type": "application/json"}), 422)
    assert stored_tasks(db) == 0


@pytest.mark.parametrize("last_event_id", ["²", "٣", "1²", "-1", "99999999999999999999", "1e3"])
def test_a_last_event_id_that_is_not_an_ascii_event_id_is_422(client: httpx.Client, last_event_id: str) -> None:
    task = client.post("/tasks", json={"task_type": "test_noop"}).json()
    path = f"/tasks/{task['task_id']}/stream"
    # "²" and "٣" are str.isdigit() but not ASCII; latin-1 cannot carry "٣" in a header: the query does.
    resp = client.get(path, params={"last_event_id": last_event_id})
    problem = assert_problem(resp, 422)
    assert problem["errors"][0]["loc"] == ["query", "last_event_id"]
    # The header wins when both are given, but a malformed query parameter is still refused.
    problem = assert_problem(
        client.get(path, params={"last_event_id": last_event_id}, headers={"Last-Event-ID": "1"}), 422
    )
    assert problem["errors"][0]["loc"] == ["query", "last_event_id"]
    if last_event_id.isascii() or last_event_id == "²":
        header = last_event_id.encode("latin-1")
        problem = assert_problem(client.get(path, headers={"Last-Event-ID": header}), 422)  # type: ignore[dict-item]
        assert problem["errors"][0]["loc"] == ["header", "Last-Event-ID"]


# --- defect 5: times and cursors ----------------------------------------------------------------------


def test_created_after_with_any_rfc3339_offset_filters_instead_of_503(client: httpx.Client) -> None:
    task = client.post("/tasks", json={"task_type": "test_noop"}).json()
    # -23:59 is a valid RFC 3339 offset that PostgreSQL's timestamptz refuses (it stops at ±15:59).
    before = client.get("/tasks", params={"created_after": "2000-01-01T00:00:00-23:59"})
    assert before.status_code == 200, before.text
    assert [t["task_id"] for t in before.json()["items"]] == [task["task_id"]]
    after = client.get("/tasks", params={"created_after": "9000-01-01T00:00:00+23:59"})
    assert after.status_code == 200 and after.json()["items"] == []


@pytest.mark.parametrize("created_after", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59", "yesterday"])
def test_created_after_outside_what_utc_can_hold_is_422(client: httpx.Client, created_after: str) -> None:
    problem = assert_problem(client.get("/tasks", params={"created_after": created_after}), 422)
    assert problem["errors"][0]["loc"] == ["query", "created_after"]


def _cursor(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_forged_cursors_are_pages_or_422_never_503(client: httpx.Client) -> None:
    task = client.post("/tasks", json={"task_type": "test_noop"}).json()
    later = _cursor("9000-01-01T00:00:00-23:59|00000000-0000-0000-0000-000000000000")
    page = client.get("/tasks", params={"cursor": later})
    assert page.status_code == 200, page.text
    assert [t["task_id"] for t in page.json()["items"]] == [task["task_id"]]
    for forged in (_cursor("0001-01-01T00:00:00+23:59|00000000-0000-0000-0000-000000000000"), _cursor("x|y"), "%%"):
        assert_problem(client.get("/tasks", params={"cursor": forged}), 422)


async def test_the_store_refusing_a_value_is_classified_apart_from_the_store_being_down(
    tasklift_env: dict[str, str],
) -> None:
    """A data exception (SQLSTATE 22) is the request's fault: routes.handle answers 400 for it, and
    keeps 503 for a store that cannot be reached. Both through the API's store (asyncpg)."""
    store = aio.AsyncStore(get_settings())
    try:
        with pytest.raises(aio.DatabaseError) as refused:
            await store.fetch("SELECT CAST(CAST(:t AS text) AS timestamptz)", {"t": "2000-01-01T00:00:00-23:59"})
        assert repo.refused_value(refused.value)
    finally:
        await store.close()
    unreachable = aio.AsyncStore(
        get_settings().model_copy(update={"database_url": "postgresql://nobody@127.0.0.1:1/none"})
    )
    try:
        with pytest.raises(aio.DatabaseError) as down:
            await unreachable.ping()
        assert not repo.refused_value(down.value)
    finally:
        await unreachable.close()


# --- defect 7: strict validation as the schema reads ------------------------------------------------


@pytest.mark.parametrize("duration", [True, "0", 1.5, [1]])
def test_an_integer_field_takes_only_an_integer(client: httpx.Client, db: sa.Engine, duration: Any) -> None:
    schema = {t["name"]: t for t in client.get("/task-types").json()}["vector_processing"]["input_schema"]
    assert schema["properties"]["duration"]["type"] == "integer"
    problem = assert_problem(client.post("/tasks", json={"duration": duration}), 422)
    assert problem["errors"][0]["loc"] == ["body", "duration"]
    assert stored_tasks(db) == 0


def test_an_integral_number_is_an_integer_as_in_json_schema(client: httpx.Client) -> None:
    created = client.post("/tasks", content=b'{"duration": 2.0}', headers={"Content-Type": "application/json"})
    assert created.status_code == 202, created.text


# --- whatever was accepted is readable everywhere ---------------------------------------------------


def nastiest_metadata() -> dict[str, Any]:
    """What the bounds still let through, at each bound."""
    return {
        "deep": nested(MAX_DEPTH - 2),  # metadata is level 2 of the body: its innermost array is level 32
        # 30,000 characters (90 KB of UTF-8): long, and still under blob_threshold_bytes (inline).
        "long": "é🎉\u2028\u2029\u200f" * 6_000,
        "": "empty key",
        'ключ 🔑 "quoted" \\ back\\slash': "\u0001\u001f\t\r\n\x7f",
        "numbers": [
            sys.float_info.max,
            -sys.float_info.max,
            5e-324,
            -0.0,
            2**64 + 1,  # beyond 64 bits (orjson's limit): the standard library encodes it exactly
            10**300,
            -(10**300),
        ],
        "bmp_and_astral": "\uffff\U0001f600\U0010ffff",
    }


def as_read(value: Any) -> Any:
    """``value`` as JSON semantics compare it: a number is its double, whatever its spelling.

    JSONB keeps numbers as decimals: ``1.7976931348623157e308`` comes back written out in 309
    digits (a JSON integer), ``-0.0`` as ``0``; every reader gets the same double from them.
    """
    if isinstance(value, dict):
        return {k: as_read(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_read(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def test_the_nastiest_accepted_input_reads_back_through_every_endpoint_the_worker_and_the_stream(
    api: str, client: httpx.Client, start_worker
) -> None:
    metadata = nastiest_metadata()
    vectors = [sys.float_info.max, -sys.float_info.max, 5e-324, 1e300, 0.0]
    body = {"task_type": "vector_processing", "vector_data": vectors, "metadata": metadata, "duration": 1}
    body["step_seconds"] = 0
    content = json.dumps(body, ensure_ascii=False).encode()
    assert len(content) < 1024 * 1024  # under max_body_bytes
    created = client.post("/tasks", content=content, headers={"Content-Type": "application/json"})
    assert created.status_code == 202, created.text
    task = created.json()
    assert as_read(task["metadata"]) == as_read(metadata)
    task_id = task["task_id"]
    assert as_read(client.get(f"/tasks/{task_id}").json()["metadata"]) == as_read(metadata)
    listed = client.get("/tasks")
    assert listed.status_code == 200 and as_read(listed.json()["items"][0]["metadata"]) == as_read(metadata)

    start_worker()
    done = wait_for_status(client, task_id, {"SUCCESS", "FAILED"})
    assert done["status"] == "SUCCESS", done["error"]
    expected = {"processed_vectors": 5, "status": "indexed", "metadata_processed": as_read(metadata)}
    assert as_read(done["result"]) == as_read(expected)
    assert as_read(done["metadata"]) == as_read(metadata)
    assert as_read(client.get(f"/tasks/{task_id}/result").json()) == as_read(expected)
    # The dashboard's reads: the list (filtered as its controls do), the task, its logs.
    filtered = client.get("/tasks", params={"status": "SUCCESS", "task_type": "vector_processing", "limit": 100})
    assert filtered.status_code == 200 and as_read(filtered.json()["items"][0]["result"]) == as_read(expected)
    logs = client.get(f"/tasks/{task_id}/logs")
    assert logs.status_code == 200 and logs.json()
    # The stream, replayed from the start: every event decodes, the terminal one carries the result.
    status, text = raw_stream(api, f"/tasks/{task_id}/stream", {"Last-Event-ID": "0"})
    assert status == 200
    events = parse(text)
    assert events[-1]["data"]["status"] == "SUCCESS"
    assert as_read(events[-1]["data"]["result"]) == as_read(expected)
    # A fresh stream's snapshot too.
    snap_status, snap = raw_stream(api, f"/tasks/{task_id}/stream")
    assert snap_status == 200 and as_read(parse(snap)[-1]["data"]["result"]) == as_read(expected)
