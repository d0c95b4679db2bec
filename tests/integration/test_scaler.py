"""The autoscaler's query, exactly as the infra files carry it, against real PostgreSQL and workers.

KEDA's postgresql scaler polls each pool's load (infra/k8s/keda.yaml; the Container Apps rules in
Terraform and Bicep carry the same text, tests/infra/test_queues.py). Here a real worker runs tasks
while the test polls that query much faster than KEDA would: it must never read 0 while a task of
its queue runs or waits (the Redis list length, the old measure, reads 0 as soon as the last
message is taken), and must read 0 once everything is done.
"""

from __future__ import annotations

import time

import httpx
import redis
import sqlalchemy as sa

from tests.conftest import wait_for_status
from tests.infra import tools

CPU = tools.settings_default("cpu_queue")
IO = tools.settings_default("io_queue")


def _infra_queries() -> dict[str, str]:
    """queue -> the query text of the ScaledObject whose Deployment consumes it."""
    docs = tools.load_k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    queries = {}
    for obj in (d for d in docs if d["kind"] == "ScaledObject"):
        command = deployments[obj["spec"]["scaleTargetRef"]["name"]]["spec"]["template"]["spec"]["containers"][0][
            "command"
        ]
        (trigger,) = obj["spec"]["triggers"]
        queries[command[command.index("--queues") + 1]] = trigger["metadata"]["query"]
    assert set(queries) == {CPU, IO}
    return queries


def _sample(db: sa.Engine, queries: dict[str, str]) -> dict[str, tuple[int, int, int]]:
    """queue -> (load the scaler reads, RUNNING tasks, unfinished tasks), in one snapshot."""
    out = {}
    with db.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for queue, query in queries.items():
            load = conn.exec_driver_sql(query).scalar_one()
            running, unfinished = conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE status = 'RUNNING'),"
                    " count(*) FILTER (WHERE status IN ('PENDING', 'RUNNING')) FROM tasks WHERE queue = :q"
                ),
                {"q": queue},
            ).one()
            out[queue] = (int(load), int(running), int(unfinished))
    return out


def test_the_scaler_never_reads_zero_while_a_task_runs_and_reads_zero_when_idle(
    client: httpx.Client, db: sa.Engine, start_worker, start_reaper, redis_server
) -> None:
    queries = _infra_queries()
    assert _sample(db, queries) == {CPU: (0, 0, 0), IO: (0, 0, 0)}  # idle: a pool at zero stays there

    start_reaper()
    start_worker(concurrency=2)
    broker = redis.Redis.from_url(redis_server.url)
    ids = [
        client.post("/tasks", json={"task_type": "test_sleep", "seconds": 3, "steps": 3}).json()["task_id"]
        for _ in range(3)
    ] + [client.post("/tasks", json={"task_type": "test_effect", "key": "k", "seconds": 4}).json()["task_id"]]

    samples, blind = [], 0  # blind: a task ran while its Redis list was empty (what KEDA used to see)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lengths = {q: broker.llen(q) for q in queries}
        sample = _sample(db, queries)
        samples.append(sample)
        for queue, (load, running, unfinished) in sample.items():
            # Every task counted here is due (no retry is waiting out a back-off in this test).
            assert load >= running and load == unfinished, (queue, sample)
            assert unfinished == 0 or load > 0, (queue, sample)
            blind += running > 0 and lengths[queue] == 0
        if all(unfinished == 0 for _, _, unfinished in sample.values()):
            break
        time.sleep(0.1)
    for task_id in ids:
        assert wait_for_status(client, task_id, "SUCCESS", timeout=5)["status"] == "SUCCESS"

    busy = [s for s in samples if any(running for _, running, _ in s.values())]
    peak = {q: max(s[q][0] for s in samples) for q in queries}
    print(f"{len(samples)} samples, {len(busy)} with a task running, peak load {peak}, {blind} with LLEN 0")
    assert len(busy) >= 10 and blind > 0  # the tasks ran while we looked, and Redis alone looked idle
    assert peak[CPU] >= 2 and peak[IO] >= 1
    assert _sample(db, queries) == {CPU: (0, 0, 0), IO: (0, 0, 0)}  # all done: the pools may go to zero


def test_the_load_query_reads_only_indexes(db: sa.Engine) -> None:
    """Both counts can be answered from the indexes of migration 0005 (KEDA polls every 15 s)."""
    with db.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {_infra_queries()[CPU]}"))
    assert "ix_tasks_running_queue" in plan and "ix_task_outbox_queue_due" in plan, plan
    assert "Seq Scan" not in plan, plan
