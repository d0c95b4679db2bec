"""The drain baseline: a minimal Celery app with tasklift's delivery settings and no tasklift.

Same broker (the benchmark's Redis, ``BENCH_REDIS_URL``), JSON, no result backend, ``acks_late``,
``reject_on_worker_lost`` and prefetch 1, like ``tasklift.queue.app``. Its one task does a single
Redis INCR so that completion is observable. Run by drain.py as
``celery -A raw_celery_app worker --queues bench.raw ...``.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

REDIS_URL = os.environ["BENCH_REDIS_URL"]
QUEUE = "bench.raw"
COUNTER = "bench:raw:done"

app = Celery("rawbench", broker=REDIS_URL, set_as_current=False)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 43200},
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
    worker_send_task_events=False,
    task_send_sent_event=False,
    worker_disable_rate_limits=True,
)

_client: tuple[int, redis.Redis] | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None or _client[0] != os.getpid():  # one connection per forked child
        _client = (os.getpid(), redis.Redis.from_url(REDIS_URL))
    return _client[1]


@app.task(name="bench.noop", ignore_result=True)
def noop() -> None:
    """No work; one INCR so the benchmark sees it finish."""
    _redis().incr(COUNTER)
