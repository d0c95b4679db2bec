"""Drives the real compose stack with podman-compose (tests/infra/test_compose_up.py).

podman-compose lives in .ci/tools/.venv-compose (.ci/podman-setup installs it and podman); the
images come from .ci/compose-images/build, substituted through compose.ci.yaml. Debian's podman
4.3 runs no healthcheck timers without systemd and podman-compose ignores ``service_healthy`` on a
podman older than 4.6, so this module runs each service's own compose healthcheck with
``podman healthcheck run`` and starts the stack in compose's order itself: the data services first,
then, once they are healthy, migrate, then api/worker/reaper once it exited 0.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PODMAN_COMPOSE = REPO / ".ci" / "tools" / ".venv-compose" / "bin" / "podman-compose"
BUILD = REPO / ".ci" / "compose-images" / "build"
DATA_SERVICES = ("postgres", "redis", "jaeger")
APP_SERVICES = ("api", "worker", "reaper")


def missing_tools() -> str | None:
    """A one-line reason the stack cannot run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed: run .ci/podman-setup as root (.ci/run does)"
    if not PODMAN_COMPOSE.exists():
        return f"{PODMAN_COMPOSE.relative_to(REPO)} is missing: run .ci/podman-setup as root (.ci/run does)"
    return None


def build_images() -> dict[str, str]:
    """Builds (or finds cached) images; returns the variables compose.ci.yaml reads."""
    out = subprocess.run([str(BUILD)], check=True, capture_output=True, text=True, timeout=1800).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


class Stack:
    """One compose project of docker-compose.yml + compose.ci.yaml, on its own names and port."""

    def __init__(self, project: str, api_port: int, images: dict[str, str]) -> None:
        self.project = project
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.env = {
            **os.environ,
            **images,
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "REDIS_PASSWORD": secrets.token_hex(16),
            "FLOWER_PASSWORD": secrets.token_hex(16),
            "TASKLIFT_STREAM_SIGNING_KEY": secrets.token_urlsafe(48),
            "TASKLIFT_WEBHOOK_SECRETS": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
            "API_PUBLISH": f"127.0.0.1:{api_port}",
            "PUBLIC_URL": self.api_url,
            "TASKLIFT_WORKER_CONCURRENCY": "2",
        }

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(PODMAN_COMPOSE), "-p", self.project, "-f", "docker-compose.yml", "-f", "compose.ci.yaml", *args]
        result = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def podman(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def containers(self, service: str) -> list[str]:
        """Names of the service's containers (running or not)."""
        out = self.podman(
            "ps", "-a", "--format", "{{.Names}}",
            "--filter", f"label=io.podman.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout  # fmt: skip
        return sorted(out.split())

    def inspect(self, container: str) -> dict[str, Any]:
        return json.loads(self.podman("inspect", container).stdout)[0]

    def node(self, container: str) -> str:
        """The Celery node name of a worker container (`tasklift worker` names itself tasklift@<hostname>)."""
        return f"tasklift@{self.inspect(container)['Config']['Hostname']}"

    def wait_healthy(self, services: tuple[str, ...], timeout: float = 180) -> dict[str, str]:
        """Runs each container's compose healthcheck until it passes; returns container -> 'healthy'."""
        deadline = time.monotonic() + timeout
        pending = [c for s in services for c in self.containers(s)]
        assert pending, f"no containers for {services}"
        done: dict[str, str] = {}
        last = ""
        while pending:
            for name in list(pending):
                result = self.podman("healthcheck", "run", name, check=False, timeout=60)
                if result.returncode == 0:
                    done[name] = "healthy"
                    pending.remove(name)
                else:
                    last = f"{name}: {result.stdout.strip()} {result.stderr.strip()}"
            if pending:
                if time.monotonic() > deadline:
                    logs = "\n".join(self.podman("logs", "--tail", "30", n, check=False).stderr for n in pending)
                    raise AssertionError(f"not healthy after {timeout} s: {pending} ({last})\n{logs}")
                time.sleep(2)
        return done

    def up(self, *extra: str) -> dict[str, str]:
        """Compose's start order, enforced here (see the module docstring); returns health per container."""
        self.compose("up", "-d", "--no-build", *DATA_SERVICES)
        health = self.wait_healthy(DATA_SERVICES)
        # --no-deps: podman 4.3 cannot start a container whose --requires chain is longer than one
        # link ("depends on container ... not found in input list"); the order is enforced here.
        self.compose("up", "-d", "--no-build", "--no-deps", "migrate")
        (migrate,) = self.containers("migrate")
        state = self.wait_exited(migrate)
        assert state["ExitCode"] == 0, self.podman("logs", migrate).stderr
        self.compose("up", "-d", "--no-build", "--no-deps", *extra, *APP_SERVICES, timeout=600)
        health.update(self.wait_healthy(APP_SERVICES))
        return health

    def wait_exited(self, container: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (state := self.inspect(container)["State"])["Status"] != "exited":
            assert time.monotonic() < deadline, f"{container} still {state['Status']}"
            time.sleep(1)
        return state

    def psql(self, sql: str) -> list[list[str]]:
        """Rows of a query run by psql inside the postgres container (tab-separated fields)."""
        out = self.compose(
            "exec", "-T", "postgres", "psql", "-U", "tasklift", "-d", "tasklift", "-tAF", "\t", "-c", sql
        ).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    @functools.cached_property
    def api_key(self) -> str:
        """`compose exec -T api tasklift keys create --name ci | tail -n 1`, as docs/deploy.md says."""
        out = self.compose("exec", "-T", "api", "tasklift", "keys", "create", "--name", "ci").stdout
        return out.strip().splitlines()[-1]

    def down(self, *extra: str) -> None:
        """`compose down`; first removes containers podman-compose does not know of (worker_2... of
        `--scale`, which its `down` leaves running), so networks and volumes go too."""
        known = {c for service in ("postgres", "redis", "jaeger", "migrate", *APP_SERVICES) for c in
                 self.containers(service)[:1]}  # fmt: skip
        everything = self.podman(
            "ps", "-a", "--format", "{{.Names}}", "--filter", f"label=io.podman.compose.project={self.project}"
        ).stdout.split()  # fmt: skip
        extra_containers = sorted(set(everything) - known)
        if extra_containers:
            self.podman("rm", "-f", "-t", "30", *extra_containers, timeout=300)
        self.compose("down", *extra, timeout=300, check=False)
