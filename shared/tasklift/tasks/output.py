"""Coalescing of ``ctx.emit(chunk)``: chunks are buffered and written as one batch per flush.

A batch goes out when its oldest chunk has waited ``interval`` seconds (a flusher thread per task,
started at its first chunk), when it holds ``max_bytes``, and when the task ends; so a task that
emits 1,000 chunks a second writes about 1 / ``interval`` rows a second, not 1,000. Batches are
written one at a time, in order (``write`` runs under a lock), which keeps chunk indexes and event
sequence numbers in the same order.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: The largest chunk ``ctx.emit`` takes, as compact JSON (a chunk travels in one Redis message).
MAX_CHUNK_BYTES = 256 * 1024


def chunk_value(chunk: Any) -> tuple[Any, int]:
    """A chunk as it is stored (text as it is; anything else as its JSON value) and its size in bytes.

    Raises:
        TypeError: the chunk is not text or a JSON value.
        ValueError: it is larger than :data:`MAX_CHUNK_BYTES`.
    """
    if isinstance(chunk, str):
        value, size = chunk, len(chunk.encode())
    else:
        try:
            encoded = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"an output chunk is text or a JSON value: {exc}") from exc
        value, size = json.loads(encoded), len(encoded.encode())
    if size > MAX_CHUNK_BYTES:
        raise ValueError(f"an output chunk may hold at most {MAX_CHUNK_BYTES} bytes, not {size}")
    return value, size


class OutputBuffer:
    """The chunks not yet written, and the thread that writes them ``interval`` after the first."""

    def __init__(self, write: Callable[[list[Any]], None], interval: float, max_bytes: int) -> None:
        self._write = write
        self._interval = interval
        self._max_bytes = max_bytes
        self._cond = threading.Condition()
        self._chunks: list[Any] = []
        self._bytes = 0
        self._oldest = 0.0  #: monotonic time of the oldest buffered chunk
        self._closed = False
        self._thread: threading.Thread | None = None
        self._writing = threading.Lock()  #: one batch at a time, in order

    def add(self, chunk: Any) -> None:
        """Buffer one chunk (already checked by :func:`chunk_value`); write at once if the batch is full."""
        value, size = chunk_value(chunk)
        with self._cond:
            if not self._chunks:
                self._oldest = time.monotonic()
                self._cond.notify()
            self._chunks.append(value)
            self._bytes += size
            # Full, or emitted after the task function returned (from a thread it left running).
            full = self._bytes >= self._max_bytes or self._closed
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="tasklift-output", daemon=True)
                self._thread.start()
        if full:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered as one batch (nothing if empty); an error keeps it for the next flush."""
        with self._writing:
            with self._cond:
                batch, self._chunks, self._bytes = self._chunks, [], 0
            if not batch:
                return
            try:
                self._write(batch)
            except Exception:
                with self._cond:  # in front of what came meanwhile: the order stays
                    self._chunks[:0] = batch
                    self._bytes += sum(len(json.dumps(c)) for c in batch)
                raise

    def close(self) -> None:
        """Stop the flusher and write the rest (the task ended); errors are logged, not raised."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(10)
        try:
            self.flush()
        except Exception:
            with self._cond:
                lost = len(self._chunks)
            log.exception("%d output chunks could not be written at the end of the task", lost)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                due = self._oldest + self._interval - time.monotonic()
                if due > 0:
                    self._cond.wait(due)
                    continue
            try:
                self.flush()
            except Exception:
                log.exception("output chunks not written yet; retrying")
                time.sleep(self._interval)
