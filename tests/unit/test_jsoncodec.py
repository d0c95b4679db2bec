"""Hot-path JSON: orjson's speed, the standard library's range, the API's rendering of times."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

from tasklift import jsoncodec
from tasklift.http.types import dumps


def test_output_is_compact_utf8_json_like_the_standard_library() -> None:
    value = {"name": "café ☕", "n": [1, 2.5, None, True], "nested": {"a": {}}}
    assert jsoncodec.dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_integers_beyond_64_bits_are_written_exactly() -> None:
    value = {"big": 2**70, "negative": -(2**64) - 1}
    assert json.loads(jsoncodec.dumps(value)) == value
    assert jsoncodec.json_text(value) == '{"big":1180591620717411303424,"negative":-18446744073709551617}'


def test_the_api_renders_times_in_utc_with_z_and_uuids_as_strings() -> None:
    tid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    local = datetime(2026, 11, 24, 5, 30, tzinfo=timezone(timedelta(hours=2)))
    body = json.loads(dumps({"at": local, "utc": datetime(2026, 1, 1, tzinfo=UTC), "id": tid}))
    assert body == {"at": "2026-11-24T03:30:00Z", "utc": "2026-01-01T00:00:00Z", "id": str(tid)}
    assert json.loads(dumps({"big": 2**80, "at": local}))["at"] == "2026-11-24T03:30:00Z"  # the fallback too


def test_the_fallback_writes_uuids_and_times_as_orjson_does() -> None:
    tid = uuid.uuid4()
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    value = {"id": tid, "at": at, "big": 2**65}
    assert json.loads(jsoncodec.dumps(value)) == {"id": str(tid), "at": at.isoformat(), "big": 2**65}
    fast = json.loads(jsoncodec.dumps({"id": tid, "at": at}))  # orjson itself, no big integer
    assert fast == {"id": str(tid), "at": at.isoformat()}
