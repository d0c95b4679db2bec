"""The pure parts of durable steps and output: step naming and the version check
(tasklift.tasks.steps), chunk validation and the coalescing buffer (tasklift.tasks.output)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from tasklift.store.repository import RecordedStep
from tasklift.tasks.output import MAX_CHUNK_BYTES, OutputBuffer, chunk_value
from tasklift.tasks.steps import StepJournal, StepMismatch, StepVersionChanged


def journal(version: str = "1") -> StepJournal:
    return StepJournal(uuid.uuid4(), "report", version, None)


def test_a_repeated_step_name_is_numbered_and_positions_count_every_call() -> None:
    steps = journal()
    assert [steps.name_call(n) for n in ("a", "b", "a", "a")] == [("a", 1), ("b", 2), ("a#2", 3), ("a#3", 4)]
    for bad in ("", "x#2", None, 3):
        with pytest.raises(ValueError, match="step name"):
            steps.name_call(bad)  # type: ignore[arg-type]


def test_recorded_steps_replay_by_name_and_another_name_at_a_recorded_position_is_a_mismatch() -> None:
    steps = journal()
    steps.load([RecordedStep("a", 1, "1", 1, {"x": 1}), RecordedStep("b", 2, "1", 1, [1, 2])])
    assert steps.replay("a", 1) == (True, {"x": 1})
    assert steps.replay("c", 3) == (False, None)
    with pytest.raises(StepMismatch, match="recorded as 'b'"):
        steps.replay("c", 2)


def test_steps_of_another_version_are_refused_naming_both_versions() -> None:
    steps = journal(version="2")
    with pytest.raises(StepVersionChanged, match=r"now version '2'.*steps a were recorded by version '1'"):
        steps.load([RecordedStep("a", 1, "1", 1, None)])
    journal(version="2").load([])  # nothing recorded yet: any version starts


def test_a_step_result_is_recorded_and_returned_as_its_json_value() -> None:
    record, returned = journal().prepare("a", 1, 1, {"t": (1, 2), 3: "three"})
    assert returned == {"t": [1, 2], "3": "three"} == record.result
    assert (record.name, record.position, record.version, record.attempt) == ("a", 1, "1", 1)
    with pytest.raises(TypeError, match="JSON"):
        journal().prepare("a", 1, 1, object())


def test_chunks_are_text_or_json_values_within_the_size_limit() -> None:
    assert chunk_value("héllo") == ("héllo", 6)
    assert chunk_value({"row": (1, 2)}) == ({"row": [1, 2]}, len('{"row":[1,2]}'))
    for bad in (object(), float("nan"), {1j: 2}):
        with pytest.raises(TypeError):
            chunk_value(bad)
    with pytest.raises(ValueError, match="at most"):
        chunk_value("x" * (MAX_CHUNK_BYTES + 1))


class Written:
    """What the buffer hands to its writer, batch by batch (the role of ``TaskContext._write_output``)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.batches: list[list[Any]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, batch: list[Any]) -> None:
        with self.lock:
            if self.fail_first:
                self.fail_first -= 1
                raise ConnectionError("database away")
            self.batches.append(list(batch))


def test_chunks_emitted_together_go_out_as_few_batches_in_order() -> None:
    written = Written()
    buffer = OutputBuffer(written, interval=0.05, max_bytes=1 << 20)
    for i in range(1000):
        buffer.add(f"t{i}")
    time.sleep(0.2)
    assert 1 <= len(written.batches) <= 3, "coalesced by time"
    buffer.add("last")
    buffer.close()
    assert [c for b in written.batches for c in b] == [f"t{i}" for i in range(1000)] + ["last"]


def test_a_full_batch_goes_out_at_once_and_close_writes_the_rest() -> None:
    written = Written()
    buffer = OutputBuffer(written, interval=60, max_bytes=10)
    buffer.add("12345")
    assert written.batches == []
    buffer.add("67890")  # 10 bytes: full
    assert written.batches == [["12345", "67890"]]
    buffer.add("x")
    buffer.close()
    assert written.batches == [["12345", "67890"], ["x"]]
    buffer.add("after")  # a thread the task left running: written at once
    assert written.batches[-1] == ["after"]


def test_a_failed_write_keeps_its_chunks_in_front_for_the_next_one() -> None:
    written = Written(fail_first=1)
    buffer = OutputBuffer(written, interval=60, max_bytes=1 << 20)
    buffer.add("a")
    with pytest.raises(ConnectionError):
        buffer.flush()
    buffer.add("b")
    buffer.close()
    assert written.batches == [["a", "b"]]


def batch(seq: int, first: int, chunks: list[Any]) -> dict[str, Any]:
    return {"seq": seq, "data": {"attempt": 1, "first": first, "last": first + len(chunks) - 1, "chunks": chunks}}


def test_a_page_takes_chunks_after_its_index_up_to_the_limit_and_knows_when_more_exist() -> None:
    from tasklift.http.output import Page

    batches = [batch(5, 1, ["a", "b", "c"]), batch(7, 4, ["d", "e"])]
    page = Page(after=2, limit=2)
    page.take(batches)
    assert [(c["index"], c["seq"], c["data"]) for c in page.chunks] == [(3, 5, "c"), (4, 7, "d")]
    assert page.full and page.after == 4
    rest = Page(after=4, limit=10)
    rest.take(batches)
    assert [c["data"] for c in rest.chunks] == ["e"] and not rest.full


def test_a_page_stops_at_its_byte_budget_but_always_holds_one_chunk() -> None:
    from tasklift.http.output import Page

    page = Page(after=0, limit=100, max_bytes=10)
    page.take([batch(1, 1, ["12345678", "x", "y"])])  # "12345678" is 10 bytes as JSON
    assert [c["data"] for c in page.chunks] == ["12345678"] and page.full
    huge = Page(after=0, limit=100, max_bytes=1)
    huge.take([batch(1, 1, ["too big for the budget"])])
    assert len(huge.chunks) == 1 and not huge.full
