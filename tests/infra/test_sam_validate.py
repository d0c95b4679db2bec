"""The SAM templates pass the real validators: cfn-lint and `sam validate --lint`.

Both come from the hashed aws-sam-cli pin in its own venv (``.venv-sam/``, see test_sam_build.py);
neither needs AWS credentials or the network.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.infra import tools
from tests.infra.test_sam_build import python312, sam_executable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the first run installs sam-cli

TEMPLATES = [
    tools.REPO / "functions" / "aws" / "template.yaml",
    tools.REPO / "tests" / "hosts" / "apps" / "lambdas" / "template.yaml",
]
ENV = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}


def test_cfn_lint_finds_nothing() -> None:
    cfn_lint = sam_executable(python312()).parent / "cfn-lint"
    done = subprocess.run([str(cfn_lint), *map(str, TEMPLATES)], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.parent.name)
def test_sam_validate_lint_accepts_the_template(template) -> None:
    sam = sam_executable(python312())
    done = subprocess.run(
        [str(sam), "validate", "--lint", "--template", str(template)], capture_output=True, text=True, env=ENV,
        timeout=300, cwd=tools.REPO,
    )  # fmt: skip
    assert done.returncode == 0 and "is a valid SAM Template" in done.stdout + done.stderr, done.stdout + done.stderr
