"""What a stream shows of an event: the store holds a large result's reference, clients see its URL."""

from __future__ import annotations

import json

from tasklift.blobs import claims
from tasklift.events.sse import encode_event
from tasklift.store.repository import Event

TASK = "6f1c2a1e-0c8b-4a51-9f55-6b1d0a7c3e10"


def data_line(event: Event) -> dict[str, object]:
    line = next(line for line in encode_event(event).decode().splitlines() if line.startswith("data: "))
    return json.loads(line[len("data: ") :])  # type: ignore[no-any-return]


def test_a_result_in_blob_storage_is_shown_as_null_and_its_url() -> None:
    ref = {claims.REF: {"key": f"tasks/{TASK}/result-1", "size": 9, "sha256": "0" * 64}}
    event = Event(TASK, 3, "status", {"status": "SUCCESS", "progress": None, "attempts": 1, "result": ref})
    shown = data_line(event)
    assert shown["result"] is None and shown["result_url"] == f"/tasks/{TASK}/result"
    assert shown["task_id"] == TASK and claims.REF not in json.dumps(shown)
    assert event.data["result"] == ref  # the stored event is left as it is


def test_an_inline_result_and_other_events_are_shown_as_stored() -> None:
    inline = Event(TASK, 3, "status", {"status": "SUCCESS", "result": {"n": 1}})
    assert data_line(inline) == {"task_id": TASK, "status": "SUCCESS", "result": {"n": 1}}
    log = Event(TASK, 4, "log", {"status": "RUNNING", "level": "INFO", "message": "hi"})
    assert data_line(log) == {"task_id": TASK, "status": "RUNNING", "level": "INFO", "message": "hi"}
