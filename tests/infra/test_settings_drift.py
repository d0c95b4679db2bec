"""Every TASKLIFT_* name a deployment sets is a real Settings field, and the routes do not drift.

STYLE.md: settings live in one place and compose, Terraform and Bicep use exactly those names.
"""

from __future__ import annotations

import re

import pytest

from tests.infra import tools


def _compose_names() -> set[str]:
    compose = tools.load_compose()
    names: set[str] = set()
    for service in compose["services"].values():
        names |= {k for k in (service.get("environment") or {}) if k.startswith("TASKLIFT_")}
    return names


def _terraform_names() -> set[str]:
    """TASKLIFT_ names in parsed HCL (comments excluded): in map keys, strings and expressions."""
    names: set[str] = set()
    for path in sorted(tools.TERRAFORM.rglob("*.tf")):
        for node_path, value in tools.walk(tools.load_hcl(path)):
            if node_path and isinstance(node_path[-1], str):
                names.update(tools.TASKLIFT_NAME.findall(node_path[-1]))
            if isinstance(value, str):
                names.update(tools.TASKLIFT_NAME.findall(value))
    return names


def _bicep_names() -> set[str]:
    """Quoted TASKLIFT_ string literals in Bicep code (comments stripped)."""
    names: set[str] = set()
    for path in sorted(tools.BICEP.rglob("*.bicep")):
        names |= set(re.findall(r"'(TASKLIFT_[A-Z0-9_]+)'", tools.bicep_source(path)))
    return names


def _k8s_container_env(kind: str = "Deployment") -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for doc in tools.load_k8s_documents():
        if doc.get("kind") != kind:
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            out[doc["metadata"]["name"]] = {
                e["name"] for e in container.get("env", []) if e["name"].startswith("TASKLIFT_")
            }
    return out


@pytest.mark.parametrize("route", ["compose", "terraform", "bicep", "k8s"])
def test_every_tasklift_name_in_a_deployment_source_is_a_settings_field(route: str) -> None:
    """Any TASKLIFT_* token, even in a comment, names a field of tasklift.settings.Settings."""
    known = tools.settings_env_names()
    unknown = {
        f"{path.relative_to(tools.REPO)}: {name}"
        for path in tools.deployment_files()[route]
        for name in tools.TASKLIFT_NAME.findall(path.read_text())
        if name not in known
    }
    assert not unknown, f"not Settings fields: {sorted(unknown)}"


def test_deployment_sources_set_tasklift_settings_at_all() -> None:
    """The parsers below find the names (guards the drift test against comparing empty sets)."""
    for names in (_compose_names(), _terraform_names(), _bicep_names()):
        assert {"TASKLIFT_DATABASE_URL", "TASKLIFT_REDIS_URL", "TASKLIFT_CPU_QUEUE", "TASKLIFT_IO_QUEUE"} <= names


def test_compose_terraform_and_bicep_set_the_same_tasklift_names() -> None:
    """No route sets a setting another forgets: the three sets of TASKLIFT_* names are equal."""
    compose, terraform, bicep = _compose_names(), _terraform_names(), _bicep_names()
    assert terraform == compose, f"terraform-only {terraform - compose}, compose-only {compose - terraform}"
    assert bicep == compose, f"bicep-only {bicep - compose}, compose-only {compose - bicep}"


def test_k8s_workers_set_the_same_names_as_the_compose_worker() -> None:
    """The AKS worker Deployments carry exactly the settings the compose worker carries."""
    compose_worker = {k for k in tools.load_compose()["services"]["worker"]["environment"] if k.startswith("TASKLIFT_")}
    workers = {name: env for name, env in _k8s_container_env().items() if "worker" in name}
    assert set(workers) == {"tasklift-worker-cpu", "tasklift-worker-io"}
    for name, env in workers.items():
        assert env == compose_worker, f"{name}: extra {env - compose_worker}, missing {compose_worker - env}"


def test_k8s_reaper_sets_the_shared_settings_of_the_compose_reaper() -> None:
    """The AKS reaper gets the same settings as the compose reaper."""
    compose_reaper = {k for k in tools.load_compose()["services"]["reaper"]["environment"] if k.startswith("TASKLIFT_")}
    assert _k8s_container_env()["tasklift-reaper"] == compose_reaper


def test_every_deployed_api_refuses_anonymous_requests_by_default() -> None:
    """TASKLIFT_ANONYMOUS is set explicitly on the API of every route, and is false unless overridden."""
    api = tools.load_compose()["services"]["api"]["environment"]
    assert api["TASKLIFT_ANONYMOUS"] == "${TASKLIFT_ANONYMOUS:-false}"
    terraform_api_env = tools.terraform_locals(tools.TERRAFORM / "main.tf")["api_env"]
    assert terraform_api_env["TASKLIFT_ANONYMOUS"] == "${tostring(var.anonymous)}"
    assert tools.terraform_variable_defaults(tools.TERRAFORM / "variables.tf")["anonymous"] is False
    main = tools.BICEP / "main.bicep"
    entries = {name: expr for name, kind, expr in tools.bicep_env_entries(main) if kind == "value"}
    assert entries["TASKLIFT_ANONYMOUS"] == "anonymous ? 'true' : 'false'"
    assert tools.bicep_param_defaults(main)["anonymous"] is False
