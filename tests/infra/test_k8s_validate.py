"""infra/k8s against the real schemas: kubernetes-validate (strict) and KEDA's CRDs.

kubernetes-validate (PyPI, pinned with hashes in .ci/tools/validators/k8s.txt) checks every core
resource against Kubernetes' own OpenAPI schema, rejecting unknown fields; it knows no CRDs, so the
KEDA resources go through @kubernetes-models/keda (npm, pinned in .ci/tools/validators/), the CRD
schemas compiled to validators. Both install on first use into ignored folders; a failed install
fails the test.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from tests.infra import tools

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

VALIDATORS = tools.VALIDATORS
K8S_VENV = tools.REPO / ".venv-k8s"
KUBERNETES_VERSION = "1.33"  #: a current release (AKS and EKS both offer it)
CRD_GROUPS = ("keda.sh/", "secrets-store.csi.x-k8s.io/", "kustomize.config.k8s.io/")
MANIFESTS = sorted(p for p in tools.K8S.rglob("*.yaml"))


def kubernetes_validate() -> str:
    return str(tools.venv_with(K8S_VENV, VALIDATORS / "k8s.txt") / "kubernetes-validate")


def keda_validator() -> list[str]:
    tools.node_validators()
    return [str(shutil.which("node")), str(VALIDATORS / "keda-validate.js")]


def test_every_core_manifest_passes_strict_validation() -> None:
    done = subprocess.run(
        [kubernetes_validate(), "--strict", "-k", KUBERNETES_VERSION, *map(str, MANIFESTS)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = (done.stdout + done.stderr).splitlines()
    problems = [
        line for line in lines
        if not line.startswith("INFO") and not (line.startswith("WARN") and any(g in line for g in CRD_GROUPS))
    ]  # fmt: skip
    assert done.returncode == 0 and not problems, "\n".join(lines)
    passed = sum(line.startswith("INFO") and "passed" in line for line in lines)
    core = [
        d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text())
        if d and not str(d.get("apiVersion", "")).startswith(CRD_GROUPS)
    ]  # fmt: skip
    assert passed == len(core) > 0, "\n".join(lines)


def test_the_keda_resources_match_the_keda_crds() -> None:
    docs = [
        d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text())
        if d and str(d.get("apiVersion", "")).startswith("keda.sh/")
    ]  # fmt: skip
    assert {d["kind"] for d in docs} == {"ScaledObject", "TriggerAuthentication"}
    done = subprocess.run(keda_validator(), input=json.dumps(docs), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok ") == len(docs)
