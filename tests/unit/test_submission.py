"""Validation of POST /tasks bodies (host-neutral, no database)."""

from typing import Any

import pytest

from tasklift.tasks.service import InvalidInput, decode_cursor, encode_cursor, parse_submission, request_fingerprint


def test_default_type_is_vector_processing_as_in_the_demo() -> None:
    ttype, inp, metadata = parse_submission({"vector_data": [1, 2], "metadata": {"k": "v"}, "duration": 3})
    assert ttype.name == "vector_processing"
    assert inp["vector_data"] == [1.0, 2.0] and inp["duration"] == 3 and inp["metadata"] == {"k": "v"}
    assert metadata == {"k": "v"}


def test_demo_body_with_null_fields_of_the_other_type_is_accepted() -> None:
    """The demo's single request model sends url: null with vector tasks."""
    ttype, inp, _ = parse_submission({"vector_data": [1], "metadata": {}, "duration": 1, "url": None})
    assert ttype.name == "vector_processing" and "url" not in inp


def test_web_scrape_takes_the_demo_url_field() -> None:
    ttype, inp, _ = parse_submission({"task_type": "web_scrape", "url": "https://example.com/", "metadata": {}})
    assert ttype.name == "web_scrape" and inp == {"url": "https://example.com/"}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"task_type": "nope"}, ["body", "task_type"]),
        # Only a missing or null task_type means the default type (found by schemathesis).
        ({"task_type": False}, ["body", "task_type"]),
        ({"task_type": ""}, ["body", "task_type"]),
        ({"duration": -1}, ["body", "duration"]),
        ({"duration": "soon"}, ["body", "duration"]),
        ({"vector_data": "x"}, ["body", "vector_data"]),
        ({"task_type": "web_scrape", "url": "ftp://example.com"}, ["body", "url"]),
        ({"task_type": "web_scrape"}, ["body", "url"]),
        ({"unknown_field": 1}, ["body", "unknown_field"]),
        ({"metadata": [1]}, ["body", "metadata"]),
    ],
)
def test_bad_bodies_name_the_offending_field(body: dict[str, Any], loc: list[str]) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_submission(body)
    assert any(e["loc"] == loc for e in err.value.errors), err.value.errors


@pytest.mark.parametrize("body", [[1, 2], "text", 3, None])
def test_body_must_be_an_object(body: Any) -> None:
    with pytest.raises(InvalidInput):
        parse_submission(body)


def test_fingerprint_ignores_key_order_but_not_values() -> None:
    assert request_fingerprint({"a": 1, "b": 2}) == request_fingerprint({"b": 2, "a": 1})
    assert request_fingerprint({"a": 1}) != request_fingerprint({"a": 2})


def test_cursor_round_trips_and_garbage_is_rejected() -> None:
    import uuid
    from datetime import UTC, datetime

    when, tid = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(when, tid)) == (when, tid)
    with pytest.raises(InvalidInput):
        decode_cursor("not-a-cursor")
