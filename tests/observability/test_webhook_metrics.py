"""The reaper counts what its webhook deliverer did: tasklift_reaper_actions_total{action=…} on its
Prometheus endpoint (docs/observability.md, docs/webhooks.md)."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from tasklift.embedded import free_port
from tests.observability.test_metrics import scrape, value
from tests.support.webhook_receiver import Receiver, Server

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def test_the_reaper_counts_delivered_retried_and_given_up_webhooks(
    client: httpx.Client, start_reaper: Callable[..., Any], monkeypatch: Any
) -> None:
    hook_port, metrics_port = free_port(), free_port()
    env = {
        "TASKLIFT_WEBHOOK_SECRETS": SECRET,
        "TASKLIFT_WEBHOOK_ALLOW_PRIVATE": "true",
        "TASKLIFT_WEBHOOK_ALLOWED_PORTS": f"[{hook_port}]",
        "TASKLIFT_WEBHOOK_RETRY_SCHEDULE": "[0.2]",
        "TASKLIFT_WEBHOOK_INTERVAL_SECONDS": "0.1",
    }
    for name, value_ in env.items():
        monkeypatch.setenv(name, value_)
    from tasklift.settings import get_settings

    get_settings.cache_clear()
    receiver = Receiver(SECRET)
    receiver.plan = ["500"]  # the first attempt fails, the retry is delivered
    otel = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port)}
    with Server(receiver, hook_port):
        start_reaper(env={**env, **otel, "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1"})
        task = client.post(
            "/tasks", json={"task_type": "test_noop", "callback_url": f"http://127.0.0.1:{hook_port}/hook"}
        )
        assert client.delete(f"/tasks/{task.json()['task_id']}").status_code == 204
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=f"http://127.0.0.1:{metrics_port}", timeout=10) as reaper:
            while True:
                samples = scrape(reaper)
                if ("tasklift_reaper_actions_total", frozenset({("action", "webhooks_delivered")})) in samples:
                    break
                assert time.monotonic() < deadline, "no webhooks_delivered count"
                time.sleep(0.2)
    assert value(samples, "tasklift_reaper_actions_total", action="webhooks_delivered") == 1
    assert value(samples, "tasklift_reaper_actions_total", action="webhook_retries") == 1
    assert len(receiver.wire) == 2
