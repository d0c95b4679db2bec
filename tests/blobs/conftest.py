"""Blob backends as real servers: a local folder, S3 on moto's server and Azure Blob Storage on
Azurite (the npm package, installed into ``.cache/azurite`` on first use), each on a free port.

``backend`` is parametrised over the three; each test gets its own folder, bucket or container,
and this process's settings (for the threaded API) plus an env dict for worker and reaper
processes. Nothing is mocked: boto3 and azure-storage-blob talk HTTP to the emulators.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

import tests.blobs.task_types  # noqa: F401  (registers blob_echo & co. in this process, for the threaded API)
import tests.support.task_types  # noqa: F401
from tasklift.blobs import BlobStore, create_blob_store
from tasklift.embedded import free_port
from tasklift.settings import Settings, get_settings
from tests.conftest import REPO

AZURITE_DIR = REPO / ".cache" / "azurite"
AZURITE_BIN = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's well-known development account (published in its README; it guards nothing).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

#: What every large-payload test runs with: its task types, and large inputs on (64 MiB, the default).
BLOB_SETTINGS = {
    "TASKLIFT_TASK_MODULES": json.dumps(["tests.support.task_types", "tests.blobs.task_types"]),
    "TASKLIFT_MAX_LARGE_BODY_BYTES": str(64 * 1024 * 1024),
}

#: moto accepts any credentials; these keep boto3 away from a developer's real ~/.aws.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the emulator exited with {proc.returncode}")
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """moto's S3 server (a real HTTP endpoint, so worker processes reach it too); yields its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for_port(port, 30)
    yield f"http://127.0.0.1:{port}"
    server.stop()


def install_azurite() -> Path:
    """Azurite's blob server from npm, installed once into .cache/azurite (CI's .ci/run provides npm)."""
    if AZURITE_BIN.exists():
        return AZURITE_BIN
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: the Azure Blob tests run Azurite from npm (apt-get install nodejs npm)")
    AZURITE_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--prefix", str(AZURITE_DIR), "--no-audit", "--no-fund", "azurite"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not AZURITE_BIN.exists():
        pytest.fail(f"npm install azurite failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return AZURITE_BIN


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's blob service on a free port; yields its connection string."""
    binary = install_azurite()
    port = free_port()
    location = tmp_path_factory.mktemp("azurite")
    log = open(location / "azurite.log", "wb")  # noqa: SIM115 - open for the server's whole life
    proc = subprocess.Popen(
        [
            str(binary),
            "--silent",
            "--location",
            str(location),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--skipApiVersionCheck",  # the Python SDK may speak a newer API version than this Azurite
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, 60, proc)
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@dataclass
class Backend:
    """One configured blob backend: its name and the env that selects it."""

    name: str
    env: dict[str, str]

    def store(self) -> BlobStore:
        """A store on the same bucket/container/folder as the API and workers use."""
        return create_blob_store(Settings())


def configure(name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Backend:
    env = {**BLOB_SETTINGS, "TASKLIFT_BLOB_BACKEND": name}
    suffix = uuid.uuid4().hex[:12]
    if name == "local":
        env["TASKLIFT_BLOB_LOCAL_DIR"] = str(tmp_path / "blobs")
    elif name == "s3":
        import boto3

        endpoint = request.getfixturevalue("moto_s3")
        env |= {**S3_CREDENTIALS, "TASKLIFT_BLOB_S3_ENDPOINT_URL": endpoint, "TASKLIFT_BLOB_S3_BUCKET": f"t-{suffix}"}
        with monkeypatch.context() as m:
            for key, value in S3_CREDENTIALS.items():
                m.setenv(key, value)
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=env["TASKLIFT_BLOB_S3_BUCKET"])
    elif name == "azure":
        from azure.storage.blob import BlobServiceClient

        connection = request.getfixturevalue("azurite")
        env |= {"TASKLIFT_BLOB_AZURE_CONNECTION_STRING": connection, "TASKLIFT_BLOB_AZURE_CONTAINER": f"t{suffix}"}
        BlobServiceClient.from_connection_string(connection).create_container(env["TASKLIFT_BLOB_AZURE_CONTAINER"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return Backend(name, env)


@pytest.fixture(params=["local", "s3", "azure"])
def backend(
    request: pytest.FixtureRequest, tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Backend:
    """Each blob backend in turn, configured for this process and (via ``.env``) for its children."""
    return configure(request.param, request, monkeypatch, tmp_path)


@pytest.fixture
def local_backend(
    request: pytest.FixtureRequest, tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Backend:
    """The local folder backend (the development default)."""
    return configure("local", request, monkeypatch, tmp_path)


class RedisMonitor:
    """Records every command the test Redis executes (MONITOR), to prove what did not go through it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.commands: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._client = redis.Redis.from_url(url, socket_timeout=None)  # redis-py 8 reads time out after 5 s by default
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            while not self._stop.is_set():
                self.commands.append(monitor.next_command())

    def __enter__(self) -> RedisMonitor:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        waker = redis.Redis.from_url(self.url)
        waker.ping()  # MONITOR sees it, so the reader loop wakes up and stops
        waker.close()
        self._thread.join(10)
        self._client.close()

    def largest(self) -> int:
        """Size of the largest command seen (its arguments as MONITOR prints them)."""
        return max((len(c["command"]) for c in self.commands), default=0)


@pytest.fixture
def redis_monitor(tasklift_env: dict[str, str]) -> Iterator[RedisMonitor]:
    """MONITOR on the test Redis for the whole test."""
    with RedisMonitor(tasklift_env["TASKLIFT_REDIS_URL"]) as monitor:
        yield monitor
