"""SIGTERM on a worker: the soft shutdown that TASKLIFT_SOFT_SHUTDOWN_SECONDS promises, for real.

A real prefork worker runs two tasks, one shorter than the soft window and one much longer; it gets
SIGTERM (what docker stop, a Kubernetes rollout or a KEDA scale-in send). The short one must finish
SUCCESS inside the window; the long one must be handed back to PENDING when the window ends (not
FAILED, not left RUNNING for the reaper, not lost) and then be finished once by another worker;
and the worker must exit after about the window, not after the long task's whole run.

Celery's default SIGTERM is a warm shutdown that waits for every task however long it runs: with
``REMAP_SIGTERM=""`` (the remap off) the worker runs the long task to its end and this test fails.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import wait_for_status
from tests.faults.conftest import wait_for
from tests.observability.collector import OtlpReceiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WINDOW = 5  #: TASKLIFT_SOFT_SHUTDOWN_SECONDS for the worker under test
SHORT = 3.0  #: finishes inside the window (started just before SIGTERM)
LONG = 20.0  #: outlives the window by far
WORKER = "tasklift-worker"  #: the worker's OpenTelemetry service name


def _row(db: sa.Engine, task_id: str) -> sa.RowMapping:
    with db.connect() as conn:
        return (
            conn.execute(
                sa.text("SELECT status, attempts, redispatches, handbacks, error FROM tasks WHERE id = :t"),
                {"t": task_id},
            )
            .mappings()
            .one()
        )


def _effects(db: sa.Engine, task_id: str) -> list[int]:
    with db.connect() as conn:
        return list(
            conn.execute(sa.text("SELECT attempt FROM test_effects WHERE task_id = :t"), {"t": task_id}).scalars()
        )


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    """A real OTLP/HTTP receiver: the worker's metrics (tasklift.tasks.handbacks) arrive there."""
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


def test_sigterm_finishes_what_fits_the_window_and_hands_back_the_rest(
    client: httpx.Client, db: sa.Engine, start_worker, start_reaper, otlp: OtlpReceiver
) -> None:
    start_reaper()
    telemetry = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_METRIC_EXPORT_INTERVAL": "500"}
    worker = start_worker(concurrency=2, env={"TASKLIFT_SOFT_SHUTDOWN_SECONDS": str(WINDOW), **telemetry})
    long_id = client.post("/tasks", json={"task_type": "test_effect", "key": "long", "seconds": LONG}).json()
    short_id = client.post("/tasks", json={"task_type": "test_effect", "key": "short", "seconds": SHORT}).json()
    long_id, short_id = long_id["task_id"], short_id["task_id"]
    wait_for_status(client, long_id, "RUNNING")
    wait_for_status(client, short_id, "RUNNING")

    sent = time.monotonic()
    worker.popen.send_signal(signal.SIGTERM)  # the main process only, as a container runtime does
    worker.popen.wait(LONG + 20)
    took = time.monotonic() - sent
    print(f"worker exited {took:.1f} s after SIGTERM (soft window {WINDOW} s, long task {LONG:g} s)")

    # (a) the short task finished inside the window, once.
    short = _row(db, short_id)
    assert (short["status"], short["attempts"], short["handbacks"]) == ("SUCCESS", 1, 0)
    assert _effects(db, short_id) == [1]

    # The worker waited for the window, not for the long task.
    assert WINDOW - 0.5 <= took <= WINDOW + 6 < LONG, took

    # (b) the long task was handed back: PENDING again, its first attempt not counted as a failure
    # nor as a lost lease, no effect written, and its event log says why.
    long = _row(db, long_id)
    assert (long["status"], long["attempts"], long["redispatches"], long["handbacks"]) == ("PENDING", 1, 0, 1), long
    assert long["error"]["type"] == "HandedBack", long
    assert _effects(db, long_id) == []
    with db.connect() as conn:
        kinds = conn.execute(
            sa.text("SELECT kind, data FROM task_events WHERE task_id = :t ORDER BY seq"), {"t": long_id}
        ).all()
    handed = [d for kind, d in kinds if kind == "status" and (d.get("error") or {}).get("type") == "HandedBack"]
    assert handed and handed[-1]["status"] == "PENDING", kinds
    assert any(kind == "log" and "handed back" in data["message"] for kind, data in kinds), kinds
    assert "handed back (soft shutdown over)" in worker.output()
    handbacks = otlp.wait_for(
        lambda r: [p.value for p in r.points if p.metric == "tasklift.tasks.handbacks" and p.service == WORKER]
    )
    assert handbacks[-1] == 1, handbacks  # cumulative: the last export holds the total

    # Another worker finishes it, once, as attempt 2 (the outbox re-queued it; no lease had to expire).
    start_worker(concurrency=1)
    done = wait_for_status(client, long_id, {"SUCCESS", "FAILED"}, timeout=LONG + 30)
    assert done["status"] == "SUCCESS", done
    final = _row(db, long_id)
    assert (final["attempts"], final["redispatches"], final["handbacks"]) == (2, 0, 1), final
    assert _effects(db, long_id) == [2]


def test_sigterm_on_an_idle_worker_exits_at_once(db: sa.Engine, start_worker) -> None:
    """No task running: the soft window is not waited for (worker_enable_soft_shutdown_on_idle off)."""
    worker = start_worker(concurrency=1, env={"TASKLIFT_SOFT_SHUTDOWN_SECONDS": "30"})
    sent = time.monotonic()
    worker.popen.send_signal(signal.SIGTERM)
    wait_for(lambda: worker.popen.poll() is not None, 20, "the idle worker to exit")
    assert time.monotonic() - sent < 10


def test_a_task_that_ignores_cancel_still_frees_its_slot_under_the_remap(
    client: httpx.Client, db: sa.Engine, start_worker, start_reaper
) -> None:
    """Under REMAP_SIGTERM pool processes ignore SIGTERM: the reaper's terminate must use the worker's
    own signal, or a cancelled task that ignores its flag would hold its slot until it ends."""
    start_reaper()
    start_worker(concurrency=1)
    stuck = client.post("/tasks", json={"task_type": "test_sleep", "seconds": 60, "steps": 1, "check_cancel": False})
    stuck_id = stuck.json()["task_id"]
    wait_for_status(client, stuck_id, "RUNNING")
    assert client.delete(f"/tasks/{stuck_id}").status_code == 202
    wait_for_status(client, stuck_id, "CANCELLED", timeout=15)
    after = client.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    assert wait_for_status(client, after, "SUCCESS", timeout=20)["status"] == "SUCCESS"  # long before 60 s
    assert _row(db, stuck_id)["status"] == "CANCELLED"  # the refused hand-back changed nothing
