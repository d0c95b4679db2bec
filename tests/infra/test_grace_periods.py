"""The platform waits longer than the worker's soft shutdown before it kills a worker.

On SIGTERM a tasklift worker stops taking tasks and lets running ones finish for
TASKLIFT_SOFT_SHUTDOWN_SECONDS. Each route's kill deadline (compose stop_grace_period, Container
Apps / Kubernetes terminationGracePeriodSeconds) must be at least that, or the soft shutdown is a lie.
"""

from __future__ import annotations

import re

import pytest

from tests.infra import tools

#: Container Apps rejects a larger terminationGracePeriodSeconds.
CONTAINER_APPS_MAX_GRACE = 600


def _seconds(duration: str) -> float:
    """Compose durations: 90s, 1m30s, 2m, 500ms."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_worker_stop_grace_period_exceeds_its_soft_shutdown() -> None:
    """docker compose stop waits longer than the worker's soft shutdown, after a SIGTERM."""
    worker = tools.load_compose()["services"]["worker"]
    soft = float(worker["environment"]["TASKLIFT_SOFT_SHUTDOWN_SECONDS"])
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert _seconds(worker["stop_grace_period"]) >= soft + 10


def _terraform_grace(values: dict[str, float]) -> tuple[float, float]:
    root = tools.terraform_locals(tools.TERRAFORM / "main.tf")
    grace = tools.evaluate_arithmetic(tools.unwrap(root["termination_grace_seconds"]), values)
    soft_expr = tools.unwrap(root["worker_env"]["TASKLIFT_SOFT_SHUTDOWN_SECONDS"])
    assert soft_expr == "tostring(var.soft_shutdown_seconds)"
    return values["soft_shutdown_seconds"], grace


@pytest.mark.parametrize("source", ["variable defaults", "terraform.tfvars.example"])
def test_terraform_termination_grace_exceeds_soft_shutdown(source: str) -> None:
    """Terraform: grace = soft shutdown + margin, evaluated with the defaults and the example tfvars."""
    values = {
        k: v for k, v in tools.terraform_variable_defaults(tools.TERRAFORM / "variables.tf").items() if v is not None
    }
    if source != "variable defaults":
        values.update(tools.terraform_tfvars(tools.TERRAFORM / "terraform.tfvars.example"))
    soft, grace = _terraform_grace(values)
    assert soft < grace <= CONTAINER_APPS_MAX_GRACE


def test_terraform_every_container_app_uses_the_computed_grace() -> None:
    """Every Container App (workers and reaper) gets local.termination_grace_seconds."""
    module = tools.terraform_blocks("module", tools.TERRAFORM / "main.tf")["workers"]
    assert tools.unwrap(module["termination_grace_seconds"]) == "local.termination_grace_seconds"
    apps = tools.terraform_blocks("resource", tools.TERRAFORM / "modules" / "workers" / "main.tf")[
        "azurerm_container_app"
    ]
    assert set(apps) == {"worker", "reaper"}
    for name, app in apps.items():
        grace = tools.unwrap(app["template"][0]["termination_grace_period_seconds"])
        assert grace == "var.termination_grace_seconds", name


def _bicep_grace(values: dict[str, int]) -> tuple[int, float]:
    main = tools.BICEP / "main.bicep"
    grace = tools.evaluate_arithmetic(tools.bicep_vars(main)["terminationGraceSeconds"], values)
    env = {name: expr for name, kind, expr in tools.bicep_env_entries(main)}
    assert env["TASKLIFT_SOFT_SHUTDOWN_SECONDS"] == "string(softShutdownSeconds)"
    return values["softShutdownSeconds"], grace


@pytest.mark.parametrize("source", ["parameter defaults", "main.bicepparam"])
def test_bicep_termination_grace_exceeds_soft_shutdown(source: str) -> None:
    """Bicep: grace = soft shutdown + margin, with the defaults and with main.bicepparam."""
    values = {k: v for k, v in tools.bicep_param_defaults(tools.BICEP / "main.bicep").items() if isinstance(v, int)}
    if source != "parameter defaults":
        text = tools.strip_bicep_comments((tools.BICEP / "main.bicepparam").read_text())
        for name, expr in tools.BICEPPARAM_VALUE.findall(text):
            if isinstance(tools.bicep_literal(expr), int):
                values[name] = tools.bicep_literal(expr)
    soft, grace = _bicep_grace(values)
    assert soft < grace <= CONTAINER_APPS_MAX_GRACE


def test_bicep_every_container_app_uses_the_computed_grace() -> None:
    """Workers and reaper in workers.bicep take terminationGracePeriodSeconds from the module param."""
    main = tools.bicep_source(tools.BICEP / "main.bicep")
    assert re.search(r"terminationGraceSeconds:\s*terminationGraceSeconds\b", main)
    workers = tools.bicep_source(tools.BICEP / "modules" / "workers.bicep")
    apps = re.findall(r"'Microsoft\.App/containerApps@[\d-]+'", workers)
    graces = re.findall(r"^\s+terminationGracePeriodSeconds:\s*(\S+)\s*$", workers, re.M)
    assert len(apps) == 2 and graces == ["terminationGraceSeconds"] * len(apps)
    assert re.search(r"@maxValue\(600\)\s*\nparam terminationGraceSeconds int", workers)


def test_k8s_termination_grace_exceeds_each_pods_soft_shutdown() -> None:
    """AKS: every Deployment/Job that sets a soft shutdown gives the pod longer than that."""
    checked = 0
    for doc in tools.load_k8s_documents():
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        spec = doc["spec"]["template"]["spec"]
        for container in spec["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if "TASKLIFT_SOFT_SHUTDOWN_SECONDS" in env:
                assert spec["terminationGracePeriodSeconds"] > int(env["TASKLIFT_SOFT_SHUTDOWN_SECONDS"])
                checked += 1
    assert checked == 2  # both worker pools
