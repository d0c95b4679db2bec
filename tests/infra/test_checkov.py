"""checkov passes over every deployment source, with only the skips .checkov.yaml justifies.

checkov runs from its own venv, hash-pinned (tests/infra/tools.py explains why); the first run installs it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.infra import tools

FRAMEWORKS = {
    # checkov's `cloudformation` framework reads SAM (AWS::Serverless::*, Globals); `serverless` is the
    # Serverless Framework's serverless.yml.
    "cloudformation": [tools.SAM_TEMPLATE],
    "terraform": [tools.TERRAFORM],
    "bicep": [tools.BICEP],
    "kubernetes": [tools.K8S],
    "dockerfile": [tools.DOCKERFILE],
}


def test_every_skipped_check_has_a_written_reason() -> None:
    """Each skip-check entry in .checkov.yaml is preceded by a comment that explains it."""
    lines = tools.CHECKOV_CONFIG.read_text().splitlines()
    skips = yaml.safe_load(tools.CHECKOV_CONFIG.read_text())["skip-check"]
    assert skips and len(skips) == len(set(skips))
    for check in skips:
        (index,) = [i for i, line in enumerate(lines) if re.fullmatch(rf"\s*- {check}\s*(#.*)?", line)]
        reason = []
        for line in reversed(lines[:index]):
            if not line.strip().startswith("#") or "---" in line:
                break
            reason.append(line.strip("# "))
        # Adjacent skips may share one reason: walk up over sibling entries to the comment.
        j = index - 1
        while not reason and j >= 0 and re.fullmatch(r"\s*- CKV\w+\s*", lines[j]):
            j -= 1
            while j >= 0 and lines[j].strip().startswith("#") and "---" not in lines[j]:
                reason.append(lines[j].strip("# "))
                j -= 1
        assert len(" ".join(reason)) >= 40, f"{check}: no reason given in .checkov.yaml"


@pytest.mark.slow
# The first run installs checkov into .venv-checkov (about 100 packages from PyPI): allow for it.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_checkov_reports_no_failed_check_and_no_parsing_error(framework: str) -> None:
    """checkov with .checkov.yaml: every check passes and every file parses (nothing silently unscanned)."""
    targets: list[Path] = FRAMEWORKS[framework]
    report = tools.run_checkov(framework, *targets)
    failed = [f"{r['check_id']} {r['resource']} ({r['file_path']})" for r in report["failed_checks"]]
    assert not failed and report["failed"] == 0, "\n".join(failed)
    assert report["parsing_errors"] == 0, f"checkov could not parse {report['parsing_errors']} {framework} file(s)"
    assert report["passed"] > 0, f"checkov ran no {framework} check at all"
