"""The Terraform sources are in canonical format and parse."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.infra import tools


def test_terraform_files_are_canonically_formatted() -> None:
    """`terraform fmt -check -recursive infra/terraform` finds nothing to rewrite."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("the terraform binary is not installed on this machine (fmt needs it; the other checks do not)")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(tools.TERRAFORM)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
