"""Webhook signing and the callback fields, without engines: our signature is the one the
``standardwebhooks`` library computes, each secret of a rotation signs, bad shapes are refused."""

from __future__ import annotations

import base64
import json
from datetime import datetime

import pytest
from standardwebhooks.webhooks import Webhook

from tasklift.queue.webhooks import render, secret_key, sign
from tasklift.tasks import callbacks
from tasklift.tasks.registry import get_task_type, load_task_types

A = "whsec_" + base64.b64encode(b"a" * 24).decode()
B = "whsec_" + base64.b64encode(b"b" * 24).decode()


def test_each_secret_of_a_rotation_signs_and_the_library_accepts_either() -> None:
    body, timestamp = b'{"type":"task.succeeded"}', 1_700_000_000
    header = sign([secret_key(A), secret_key(B)], "msg_1", timestamp, body)
    ours = header.split(" ")
    assert ours == [Webhook(A).sign("msg_1", datetime.fromtimestamp(timestamp), body.decode())] + [
        Webhook(B).sign("msg_1", datetime.fromtimestamp(timestamp), body.decode())
    ]


def test_a_secret_that_is_not_base64_is_refused() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        secret_key("whsec_not base64!")


def test_the_body_is_the_standard_webhooks_envelope_around_the_task_resource() -> None:
    snapshot = {
        "id": "0b6c3f2e-1d1a-4b7e-9a55-0d3c2f5e9a10",
        "task_type": "t",
        "status": "SUCCESS",
        "progress": None,
        "result": {"x": 1},
        "error": None,
        "attempts": 1,
        "cancel_requested": False,
        "metadata": {},
        "created_at": "2026-12-07T17:00:00.5+01:00",  # to_jsonb writes the session's zone, fewer digits
        "started_at": "2026-12-07T16:00:01.123456+00:00",
        "updated_at": "2026-12-07T16:00:02+00:00",
        "completed_at": "2026-12-07T16:00:02+00:00",
        "trace_id": None,
        "priority": 0,
        "scheduled_for": None,
        "expires_at": None,
        "concurrency_key": None,
        "fairness_key": None,
    }
    body = json.loads(render({"event_type": "task.succeeded", "task": snapshot}))
    assert body["type"] == "task.succeeded" and body["timestamp"] == "2026-12-07T16:00:02Z"
    data = body["data"]
    assert data["task_id"] == snapshot["id"] and data["result"] == {"x": 1} and data["result_url"] is None
    assert data["created_at"] == "2026-12-07T16:00:00.500000Z"
    assert data["links"]["deliveries"] == f"/tasks/{snapshot['id']}/deliveries"


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ({"callback_url": 1}, "callback_url"),
        ({"callback_url": ""}, "callback_url"),
        ({"callback_url": "https://x/" + "a" * 2048}, "callback_url"),
        ({"callback_url": "https://x/", "callback_events": ["terminal", "nope"]}, "callback_events"),
        ({"callback_url": "https://x/", "callback_events": {"terminal": True}}, "callback_events"),
        ({"callback_events": ["progress"]}, "callback_events"),
    ],
)
def test_callback_fields_of_the_wrong_shape_are_refused(fields: dict[str, object], refused: str) -> None:
    load_task_types()
    ttype = get_task_type("vector_processing")
    assert ttype is not None
    with pytest.raises(callbacks.BadCallback) as exc:
        callbacks.requested(fields, ttype)
    assert exc.value.field == refused


def test_events_default_to_terminal_and_repeats_are_dropped() -> None:
    load_task_types()
    ttype = get_task_type("vector_processing")
    assert ttype is not None
    assert callbacks.requested({}, ttype) is None
    assert callbacks.requested({"callback_url": "https://x/"}, ttype) == callbacks.Callback("https://x/", ("terminal",))
    both = callbacks.requested({"callback_url": "https://x/", "callback_events": ["progress", "progress"]}, ttype)
    assert both == callbacks.Callback("https://x/", ("progress",))
    assert callbacks.split({"a": 1, "callback_url": "u"}) == ({"a": 1}, {"callback_url": "u"})
    assert callbacks.split([1]) == ([1], {})
