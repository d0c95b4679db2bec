"""local/bench/peers/run.py end to end, briefly: every peer's app starts from .ci/tools/peers.txt,
takes submits over HTTP, drains them all to SUCCESS in its own store, and is timed.

The figures themselves are not asserted (they depend on the machine; docs/benchmarks.md has the
measured run): what is asserted is that the comparison runs, counts every task and records every
figure, so the published table can be re-made by anyone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIGURES = ("submit_per_s", "postgres_cpu_ms_per_task", "latency_noop", "latency_sleep")


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_every_peer_runs_and_drains(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "local/bench/peers/run.py"), "--quick", "--no-plot", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    peers = results["peers"]
    assert set(peers) == {"tasklift", "celery_pg", "procrastinate", "dbos", "raw_celery"}
    for name, figures in peers.items():
        assert figures["drain"]["tasks"] > 0 and figures["drain"]["tasks_per_s"] > 0, name
        if figures["durable"]:
            for key in FIGURES:
                assert key in figures, (name, key)
            for kind in ("latency_noop", "latency_sleep"):
                terminal = figures[kind]["submit_to_terminal_ms"]["p50"]
                start = figures[kind]["submit_to_start_ms"]["p50"]
                assert 0 < start <= terminal, (name, kind)
            # A 100 ms task cannot end sooner than 100 ms after it was submitted.
            assert figures["latency_sleep"]["submit_to_terminal_ms"]["p50"] >= 100, name
    assert set(results["durable_leader"]) and "| figure |" in done.stdout
