"""Helpers for the offline infrastructure checks: repository paths, parsers, the checkov runner.

checkov and python-hcl2 both install a top-level module called ``hcl2`` (checkov ships its own fork),
so checkov cannot share the test venv. It lives in ``.venv-checkov/`` at the repository root (ignored
by git), installed from the hashed pins in ``.ci/tools/validators/checkov.txt`` the first time a test
needs it. A failed install fails the test: a security scan that silently does not run proves nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SAM_TEMPLATE = REPO / "functions" / "aws" / "template.yaml"
TERRAFORM = REPO / "infra" / "terraform"
BICEP = REPO / "infra" / "bicep"
K8S = REPO / "infra" / "k8s"
CHECKOV_CONFIG = REPO / ".checkov.yaml"
CHECKOV_VENV = REPO / ".venv-checkov"

VALIDATORS = REPO / ".ci" / "tools" / "validators"

TASKLIFT_NAME = re.compile(r"\bTASKLIFT_[A-Z0-9_]+\b")


# --- settings -----------------------------------------------------------------------------------


def settings_env_names() -> set[str]:
    """Every environment variable tasklift reads: ``TASKLIFT_`` + each Settings field, upper-cased."""
    from tasklift.settings import Settings

    return {f"TASKLIFT_{name.upper()}" for name in Settings.model_fields}


def settings_default(field: str) -> Any:
    """The default of a Settings field, independent of the environment and any .env file."""
    from tasklift.settings import Settings

    return Settings.model_fields[field].default


# --- files --------------------------------------------------------------------------------------


def deployment_files() -> dict[str, list[Path]]:
    """The deployment sources per route."""
    return {
        "compose": [COMPOSE],
        "terraform": sorted(TERRAFORM.rglob("*.tf")) + sorted(TERRAFORM.glob("*.tfvars.example")),
        "bicep": sorted(BICEP.rglob("*.bicep")) + sorted(BICEP.rglob("*.bicepparam")),
        "k8s": sorted(K8S.rglob("*.yaml")),
    }


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def load_k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.rglob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def load_hcl(path: Path) -> dict[str, Any]:
    """Parse a .tf file with python-hcl2, with string quotes and comments removed in every version."""
    import hcl2

    with path.open() as handle:
        try:
            from hcl2 import SerializationOptions  # python-hcl2 >= 8

            data = hcl2.load(
                handle, serialization_options=SerializationOptions(strip_string_quotes=True, with_comments=False)
            )
        except ImportError:  # older python-hcl2 already returns unquoted strings
            data = hcl2.load(handle)
    return _strip_meta(data)


def _strip_meta(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_meta(v)
            for k, v in value.items()
            if k not in {"__is_block__", "__comments__", "__start_line__", "__end_line__"}
        }
    if isinstance(value, list):
        return [_strip_meta(v) for v in value]
    return value


def walk(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Yield (path, value) for every node of a parsed document, dict keys included in the path."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, (*path, index))


def strip_bicep_comments(text: str) -> str:
    """Remove // and /* */ comments from Bicep source, leaving string literals intact."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("'''", i):  # multi-line string
            end = text.find("'''", i + 3)
            end = n if end < 0 else end + 3
            out.append(text[i:end])
            i = end
        elif text[i] == "'":
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


# --- checkov ------------------------------------------------------------------------------------


def install_once(root: Path, stamp_of: str, steps: list[list[str]]) -> None:
    """Run the install ``steps`` in ``root`` unless ``root/.installed`` already holds ``stamp_of``.

    The stamp is the pin file's text, so a changed pin reinstalls; a lock file serialises xdist workers.
    A failed step fails the test: a validator that silently does not run proves nothing.
    """
    import pytest

    root.mkdir(exist_ok=True)
    with (root / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = root / ".installed"
        if stamp.exists() and stamp.read_text() == stamp_of:
            return
        for command in steps:
            done = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=900)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
        stamp.write_text(stamp_of)


def venv_with(venv: Path, pins: Path) -> Path:
    """``venv`` holding exactly the hashed closure in ``pins`` (pip --require-hashes --no-deps); its bin/."""
    python = venv / "bin" / "python"
    steps = [] if python.exists() else [[sys.executable, "-m", "venv", str(venv)]]
    steps.append([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--require-hashes",
                  "--no-deps", "-r", str(pins)])  # fmt: skip
    install_once(venv, pins.read_text(), steps)
    return venv / "bin"


def node_validators() -> Path:
    """``.ci/tools/validators/node_modules`` from its package-lock (``npm ci``, peers left out: only the
    schemas are used), installed on first use; .ci/run installs node and npm."""
    import pytest

    npm = shutil.which("npm")
    if not (npm and shutil.which("node")):
        pytest.fail("node and npm are needed for the npm-pinned validators (.ci/run installs them)", pytrace=False)
    lock = (VALIDATORS / "package-lock.json").read_text()
    install_once(VALIDATORS, lock, [[npm, "ci", "--omit=peer", "--silent", "--no-audit", "--no-fund"]])
    return VALIDATORS / "node_modules"


def checkov_executable() -> Path:
    """checkov from its hashed pins (.ci/tools/validators/checkov.txt) in .venv-checkov, installed on first use."""
    return venv_with(CHECKOV_VENV, VALIDATORS / "checkov.txt") / "checkov"


def run_checkov(framework: str, *targets: Path) -> dict[str, Any]:
    """Run checkov with .checkov.yaml on one framework: failed checks and the passed/failed/parsing counts."""
    exe = checkov_executable()
    args = [str(exe), "--config-file", str(CHECKOV_CONFIG), "--framework", framework, "--output", "json", "--quiet"]
    for target in targets:
        args += ["--file", str(target)] if target.is_file() else ["--directory", str(target)]
    env = {
        **os.environ,
        "BC_SKIP_MAPPING": "TRUE",
        "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
        "PYTHONWARNINGS": "ignore",
    }
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"checkov exited {result.returncode}:\n{result.stderr[-4000:]}")
    out = result.stdout.strip()
    # With `quiet`, checkov's JSON lists only failed checks; the counts are in "summary".
    reports = json.loads(out) if out else []
    reports = reports if isinstance(reports, list) else [reports]
    merged: dict[str, Any] = {"failed_checks": [], "passed": 0, "failed": 0, "parsing_errors": 0}
    for part in reports:
        merged["failed_checks"] += part.get("results", {}).get("failed_checks", [])
        for key in ("passed", "failed", "parsing_errors"):
            merged[key] += part.get("summary", {}).get(key, 0)
    return merged


# --- bicep ----------------------------------------------------------------------------------------

BICEP_PARAM_DEFAULT = re.compile(r"^param\s+(\w+)\s+\w+\s*=\s*(.+?)\s*$", re.M)
BICEP_VAR = re.compile(r"^var\s+(\w+)\s*=\s*(.+?)\s*$", re.M)
BICEPPARAM_VALUE = re.compile(r"^param\s+(\w+)\s*=\s*(.+?)\s*$", re.M)
#: `name: 'TASKLIFT_X'` followed by its `value:` / `secretRef:` line, in env and appSettings lists.
BICEP_ENV_ENTRY = re.compile(r"name:\s*'(TASKLIFT_[A-Z0-9_]+)'\s*\n\s*(value|secretRef):\s*(.+?)\s*$", re.M)


def bicep_source(path: Path) -> str:
    return strip_bicep_comments(path.read_text())


def bicep_literal(expr: str) -> Any:
    """The value of a single-line Bicep literal ('text', 42, true/false); None for an expression."""
    expr = expr.strip()
    if re.fullmatch(r"'[^'$]*'", expr):
        return expr[1:-1]
    if re.fullmatch(r"-?\d+", expr):
        return int(expr)
    if expr in ("true", "false"):
        return expr == "true"
    return None


def bicep_param_defaults(path: Path) -> dict[str, Any]:
    return {name: bicep_literal(expr) for name, expr in BICEP_PARAM_DEFAULT.findall(bicep_source(path))}


def bicep_vars(path: Path) -> dict[str, str]:
    return dict(BICEP_VAR.findall(bicep_source(path)))


def bicep_env_entries(path: Path) -> list[tuple[str, str, str]]:
    """(name, 'value' | 'secretRef', expression) for every TASKLIFT_* env/app-setting entry."""
    return BICEP_ENV_ENTRY.findall(bicep_source(path))


# --- terraform --------------------------------------------------------------------------------------


def terraform_blocks(kind: str, path: Path) -> dict[str, Any]:
    """Top-level blocks of one kind in a .tf file, merged: {label: body} (or {type: {label: body}})."""
    merged: dict[str, Any] = {}
    for block in load_hcl(path).get(kind, []):
        for label, body in block.items():
            if isinstance(body, dict) and kind == "resource":
                merged.setdefault(label, {}).update(body)
            else:
                merged[label] = body
    return merged


def terraform_locals(path: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in load_hcl(path).get("locals", []):
        merged.update(block)
    return merged


def terraform_variable_defaults(path: Path) -> dict[str, Any]:
    return {name: body.get("default") for name, body in terraform_blocks("variable", path).items()}


def terraform_tfvars(path: Path) -> dict[str, Any]:
    import hcl2

    with path.open() as handle:
        return _strip_meta(hcl2.load(handle))


def unwrap(expr: Any) -> Any:
    """'${local.x}' -> 'local.x'; other values unchanged."""
    if isinstance(expr, str) and expr.startswith("${") and expr.endswith("}"):
        return expr[2:-1]
    return expr


def evaluate_arithmetic(expr: str, names: dict[str, float]) -> float:
    """Evaluate `a + b - 3` style expressions over known names (no calls, no other operators)."""
    import ast

    tree = ast.parse(expr.replace("var.", "var__").replace("local.", "local__"), mode="eval")

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left - right
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name):
            return names[node.id.replace("var__", "").replace("local__", "")]
        raise ValueError(f"unsupported expression: {expr}")

    return value(tree)
