"""Durable steps: the bookkeeping behind ``ctx.step(name, fn, *args, **kwargs)``.

A step runs ``fn`` once per task. Its JSON result is recorded in ``task_steps`` (a claim-check
reference when it is large) by the attempt that holds the lease; every later run of the task (a
re-dispatch after a crash, an automatic retry, a manual retry after FAILED) gets the recorded
result back without calling ``fn`` and so continues from the first unfinished step.

Naming rules (docs/steps-and-output.md):

- a name is a non-empty string without ``#``; the n-th call with the same name in one run is
  recorded as ``name#n`` (``fetch``, ``fetch#2``, …), so a loop may reuse a name;
- the names and their order must be deterministic for the task's input: a run that asks, at the
  position where a recorded step stands, for a step of another name raises :class:`StepMismatch`;
- each step is recorded with the task type's ``version``; a run of a newer (or older) version
  that finds steps of another version raises :class:`StepVersionChanged` at its first step,
  instead of mixing results of two versions of the code.

A step that raises records nothing: the next run calls it again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from typing import Any

from tasklift.blobs import claims
from tasklift.blobs.store import BlobStore
from tasklift.store.repository import RecordedStep


class StepVersionChanged(Exception):  # noqa: N818 - reads as what happened
    """The task's recorded steps were made by another version of its task type."""


class StepMismatch(Exception):  # noqa: N818
    """The run asked for steps in another order (or by other names) than the recorded run."""


def _to_json(value: Any) -> Any:
    """``value`` as the JSON value it is recorded as (pydantic models dumped; tuples become lists)."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return json.loads(claims.encode(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a step must return a JSON value: {exc}") from exc


class StepJournal:
    """One run's view of its task's recorded steps: names the calls, finds and prepares records."""

    def __init__(self, task_id: uuid.UUID, task_type: str, version: str, blobs: BlobStore | None) -> None:
        self.task_id = task_id
        self.task_type = task_type
        self.version = version
        self.blobs = blobs
        self._by_name: dict[str, RecordedStep] | None = None  #: loaded at the run's first step
        self._by_position: dict[int, RecordedStep] = {}
        self._calls: Counter[str] = Counter()
        self.position = 0  #: how many ``ctx.step`` calls this run made

    @property
    def loaded(self) -> bool:
        return self._by_name is not None

    def name_call(self, name: str) -> tuple[str, int]:
        """The recorded name and the position of this run's next call of step ``name``."""
        if not isinstance(name, str) or not name or "#" in name:
            raise ValueError(f"a step name is a non-empty string without '#', not {name!r}")
        self._calls[name] += 1
        self.position += 1
        count = self._calls[name]
        return (name if count == 1 else f"{name}#{count}"), self.position

    def name_wait(self, base: str) -> tuple[str, int]:
        """Like :meth:`name_call` for a wait (``base`` holds ``#``, which no step name may: no clash).

        ``wait#approval``, ``wait#approval#2``, …; a ``base`` ending in ``#`` is numbered from 1
        (``sleep#1``, ``sleep#2``).
        """
        self._calls[base] += 1
        self.position += 1
        count = self._calls[base]
        if base.endswith("#"):
            return f"{base}{count}", self.position
        return (base if count == 1 else f"{base}#{count}"), self.position

    def load(self, recorded: list[RecordedStep]) -> None:
        """Take the task's recorded steps; raises :class:`StepVersionChanged` if another version made them."""
        others = sorted({step.version for step in recorded if step.version != self.version})
        if others:
            names = ", ".join(step.name for step in recorded if step.version != self.version)
            raise StepVersionChanged(
                f"task type {self.task_type} is now version {self.version!r}, but this task's steps {names} were"
                f" recorded by version {', '.join(map(repr, others))}; a task does not resume across versions"
                " (submit it again)"
            )
        self._by_name = {step.name: step for step in recorded}
        self._by_position = {step.position: step for step in recorded}

    def replay(self, name: str, position: int) -> tuple[bool, Any]:
        """``(True, result)`` if step ``name`` was recorded, else ``(False, None)``.

        Raises:
            StepMismatch: another step was recorded at this position (the names are not deterministic).
        """
        assert self._by_name is not None, "load() first"
        found = self._by_name.get(name)
        if found is not None:
            return True, claims.check_out(found.result, self._blobs()) if claims.is_ref(found.result) else found.result
        other = self._by_position.get(position)
        if other is not None:
            raise StepMismatch(
                f"step {position} of task type {self.task_type} was recorded as {other.name!r}, but this run asks for"
                f" {name!r}: step names and their order must be deterministic for the task's input"
            )
        return False, None

    def prepare(self, name: str, position: int, attempt: int, value: Any) -> tuple[RecordedStep, Any]:
        """The record of a finished step (its result checked in if large), and the value ``ctx.step`` returns."""
        returned = _to_json(value)
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        key = f"{claims.task_prefix(self.task_id)}step-{digest}-{attempt}.json"
        stored = returned if claims.fits_inline(returned) else claims.check_in(returned, key, self._blobs())
        return RecordedStep(name, position, self.version, attempt, stored), returned

    def _blobs(self) -> BlobStore:
        if self.blobs is None:
            raise RuntimeError("this context has no blob store for large step results")
        return self.blobs
