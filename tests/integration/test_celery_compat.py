"""tasklift's hand-built Celery message (queue/_compat.py) is the one Celery itself sends.

Fails when a Celery upgrade changes task protocol 2; real workers run the message in test_lifecycle.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import redis

from tasklift.queue import _compat
from tasklift.queue.app import celery_app
from tasklift.settings import get_settings

VOLATILE = {("properties", "delivery_tag"), ("properties", "reply_to"), ("headers", "origin")}


def _strip(message: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(message))
    for section, key in VOLATILE:
        out[section].pop(key)
    out["body"] = json.loads(base64.b64decode(out["body"]))
    return out


def test_the_message_equals_what_celery_send_task_produces(tasklift_env: dict[str, str]) -> None:
    client = redis.Redis.from_url(get_settings().redis_url or "")
    queue = get_settings().cpu_queue
    task_id = str(uuid.uuid4())
    hard, soft = _compat.time_limits("vector_processing")
    celery_app.send_task(
        "tasklift.run",
        args=[task_id],
        task_id=task_id,
        queue=queue,
        routing_key=queue,
        soft_time_limit=soft,
        time_limit=hard,
        headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )
    theirs = json.loads(client.rpop(queue) or b"null")
    ours = json.loads(
        _compat.task_message(
            task_id,
            queue,
            "vector_processing",
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        )
    )
    assert _strip(ours) == _strip(theirs)
    assert ours["properties"]["delivery_tag"] != theirs["properties"]["delivery_tag"]  # unique per message


def test_every_message_has_its_own_delivery_tag_in_a_uuids_format() -> None:
    tags = {
        json.loads(_compat.task_message(uuid.uuid4(), "q", "vector_processing"))["properties"]["delivery_tag"]
        for _ in range(50)
    }
    assert len(tags) == 50
    assert all(str(uuid.UUID(tag)) == tag for tag in tags)
