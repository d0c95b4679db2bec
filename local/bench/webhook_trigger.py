#!/usr/bin/env python
"""What the webhook trigger (migration 0012_hooks) costs the statements it watches.

The trigger runs on every UPDATE of ``tasks.status`` / ``tasks.progress`` that changes one of them:
a progress flush of a running task, and every transition. For a task without a callback it is one
primary-key probe of ``task_callbacks``; with one, a terminal transition (or a milestone) also
inserts its ``webhook_deliveries`` row. Measured on embedded PostgreSQL (this machine), with the
trigger enabled and disabled (``ALTER TABLE … DISABLE TRIGGER``), alternating rounds:

(a) a progress UPDATE (the shape of the worker's flush) of tasks without a callback,
(b) the same of tasks whose callback wants "terminal" only (probe, nothing inserted),
(c) a RUNNING → SUCCESS UPDATE of tasks with a callback (probe + the delivery row).

Each round runs ``--rows`` statements in one transaction (the statement's cost, not a commit's), and
then the same statements each committed alone (what the worker does: a commit per flush).

    .venv/bin/python local/bench/webhook_trigger.py [--rows 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as bk  # noqa: E402

PROGRESS = sa.text(
    "UPDATE tasks SET progress = jsonb_build_object('percent', CAST(:p AS float8)), last_seq = last_seq + 1,"
    " updated_at = now() WHERE id = :id AND attempts = 1"
)
FINISH = sa.text(
    "UPDATE tasks SET status = 'SUCCESS', completed_at = now(), last_seq = last_seq + 1 WHERE id = :id"
    " AND status = 'RUNNING'"
)


def make_tasks(engine: sa.Engine, count: int, callback: bool) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tasks (id, task_type, queue, status, input, attempts, started_at)"
                " SELECT id, 'bench', 'q', 'RUNNING', '{}', 1, now() FROM unnest(CAST(:ids AS uuid[])) AS id"
            ),
            {"ids": ids},
        )
        if callback:
            conn.execute(
                sa.text(
                    "INSERT INTO task_callbacks (task_id, url) SELECT id, 'https://93.184.215.14/h'"
                    " FROM unnest(CAST(:ids AS uuid[])) AS id"
                ),
                {"ids": ids},
            )
    return ids


def timed(engine: sa.Engine, statement: sa.TextClause, ids: list[str], one_transaction: bool, step: int) -> float:
    """Microseconds per statement."""
    params = [{"id": i, "p": float((step * 7) % 99 + 0.5)} for i in ids]
    start = time.perf_counter()
    if one_transaction:
        with engine.begin() as conn:
            for p in params:
                conn.execute(statement, p)
    else:
        for p in params:
            with engine.begin() as conn:
                conn.execute(statement, p)
    return (time.perf_counter() - start) / len(ids) * 1e6


def set_trigger(engine: sa.Engine, enabled: bool) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE tasks {'ENABLE' if enabled else 'DISABLE'} TRIGGER tasks_record_webhook")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with bk.Stack() as stack:
        engine = sa.create_engine(stack.env["TASKLIFT_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
        plain = make_tasks(engine, args.rows, callback=False)
        hooked = make_tasks(engine, args.rows, callback=True)
        results: dict[str, dict[str, list[float]]] = {}
        for mode in ("batch", "commit each"):
            for case, ids in (("(a) progress, no callback", plain), ("(b) progress, terminal-only callback", hooked)):
                for step in range(args.rounds):
                    for enabled in (True, False) if step % 2 else (False, True):
                        set_trigger(engine, enabled)
                        us = timed(engine, PROGRESS, ids, mode == "batch", step)
                        results.setdefault(f"{case} [{mode}]", {}).setdefault(str(enabled), []).append(us)
        for enabled in (True, False):  # each finish is once per task: fresh tasks per run
            set_trigger(engine, enabled)
            for _ in range(args.rounds):
                ids = make_tasks(engine, args.rows, callback=True)
                us = timed(engine, FINISH, ids, True, 0)
                results.setdefault("(c) finish, with callback [batch]", {}).setdefault(str(enabled), []).append(us)
        with engine.connect() as conn:
            deliveries = conn.execute(sa.text("SELECT count(*) FROM webhook_deliveries")).scalar()
        engine.dispose()
    print(f"{'case':48} {'trigger on':>12} {'off':>10} {'added':>10}   (median µs per statement)")
    for case, by in results.items():
        on, off = statistics.median(by["True"]), statistics.median(by["False"])
        print(f"{case:48} {on:12.1f} {off:10.1f} {on - off:+10.1f}")
        print(
            f"{'':48} on: {' '.join(f'{v:.0f}' for v in by['True'])}  off: {' '.join(f'{v:.0f}' for v in by['False'])}"
        )
    print(f"deliveries recorded by (c): {deliveries} (expected {args.rows * args.rounds})")


if __name__ == "__main__":
    main()
