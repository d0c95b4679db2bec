"""What the autoscaler measures: the work of one worker pool, read from PostgreSQL (the truth).

KEDA's ``postgresql`` scaler (AKS: infra/k8s/keda.yaml; Container Apps: the ``custom`` scale rule
in infra/terraform/modules/workers and infra/bicep/modules/workers.bicep) polls
:func:`pool_load_query` for each queue. Its value is the pool's *load*:

- the queue's RUNNING tasks (a task a worker is on, however long it has run), plus
- its PENDING tasks that are due: every submitted task no worker has claimed yet (its intent is
  the first, ``intent_seq = 1``: a submit is due at once, the dispatch grace only delays the
  dispatcher's fallback), and every re-queued one whose intent was sent to Redis or is due now (a
  hand-back, a lost lease, a manual retry). A submit the dispatcher admits (delayed by
  ``run_at``, or under an admission window: docs/flow-control.md) is intent 0, counted once it is
  due. A retry still in its back-off is not counted: a pool is not scaled out for tasks that may
  not start yet.

So a pool never looks idle while one of its tasks runs (Redis' list length, the previous measure,
drops to 0 as soon as the last message is taken), and it reads 0 only when nothing runs or waits.
Both parts are index scans (migration 0005): ``ix_tasks_running_queue`` covers only RUNNING rows,
``ix_task_outbox_queue_due`` the outbox, which holds one row per PENDING task.

The infra files carry the query's text for their queue, byte for byte (tests/infra/test_queues.py);
docs/sizing.md derives the scaling rule from it.
"""

from __future__ import annotations

import re

#: ``{queue}`` stands for the queue name, written into the query as a literal: KEDA's scaler takes
#: no parameters. One line, so YAML, HCL and Bicep carry it unchanged.
POOL_LOAD_QUERY = (
    "SELECT (SELECT count(*) FROM tasks WHERE status = 'RUNNING' AND queue = '{queue}')"
    " + (SELECT count(*) FROM task_outbox WHERE queue = '{queue}'"
    " AND (intent_seq = 1 OR published_at IS NOT NULL OR available_at <= now()))"
)

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


def pool_load_query(queue: str) -> str:
    """:data:`POOL_LOAD_QUERY` for ``queue`` (a Celery queue name: no quote can get in)."""
    if not _QUEUE_NAME.fullmatch(queue):
        raise ValueError(f"not a queue name: {queue!r}")
    return POOL_LOAD_QUERY.replace("{queue}", queue)
