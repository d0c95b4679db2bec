"""The KEDA scalers watch the Redis lists the workers actually consume.

Celery's Redis transport keeps each queue in a list named exactly like the queue, so the KEDA
`listName`, the worker's `--queues`, TASKLIFT_CPU_QUEUE / TASKLIFT_IO_QUEUE and the Settings
defaults must all agree, in every route.
"""

from __future__ import annotations

import re
from typing import Any

from tests.infra import tools

CPU = tools.settings_default("cpu_queue")
IO = tools.settings_default("io_queue")


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_settings_queue_defaults_are_the_documented_names() -> None:
    """The contract the deployments are checked against: tasklift.cpu and tasklift.io."""
    assert (CPU, IO) == ("tasklift.cpu", "tasklift.io")


def test_compose_sets_the_default_queues_and_the_worker_consumes_both() -> None:
    """Compose: every process names the default queues; the single worker consumes both lists."""
    services = tools.load_compose()["services"]
    for name in ("migrate", "api", "worker", "reaper"):
        env = _env(services[name])
        assert (env["TASKLIFT_CPU_QUEUE"], env["TASKLIFT_IO_QUEUE"]) == (CPU, IO), name
    command = services["worker"]["command"]
    assert command[command.index("--queues") + 1].split(",") == [CPU, IO]


def test_terraform_queue_names_flow_from_one_local_into_env_and_keda() -> None:
    """Terraform: local.cpu_queue/io_queue equal the defaults and feed the env, --queues and listName."""
    root = tools.terraform_locals(tools.TERRAFORM / "main.tf")
    assert (root["cpu_queue"], root["io_queue"]) == (CPU, IO)
    assert tools.unwrap(root["tasklift_env"]["TASKLIFT_CPU_QUEUE"]) == "local.cpu_queue"
    assert tools.unwrap(root["tasklift_env"]["TASKLIFT_IO_QUEUE"]) == "local.io_queue"

    # The workers module gets one pool per queue, each carrying its queue name from those locals.
    workers = tools.terraform_blocks("module", tools.TERRAFORM / "main.tf")["workers"]
    pools = workers["pools"]
    assert set(pools) == {"cpu", "io"}
    assert re.search(r"\{\s*queue\s*=\s*local\.cpu_queue\s*\}", tools.unwrap(pools["cpu"]))
    assert re.search(r"\{\s*queue\s*=\s*local\.io_queue\s*\}", tools.unwrap(pools["io"]))

    # Inside the module, the KEDA rule and the worker command both read that same pool field.
    apps = tools.terraform_blocks("resource", tools.TERRAFORM / "modules" / "workers" / "main.tf")
    worker = apps["azurerm_container_app"]["worker"]
    template = worker["template"][0]
    (rule,) = template["custom_scale_rule"]
    assert rule["custom_rule_type"] == "redis"
    assert tools.unwrap(rule["metadata"]["listName"]) == "each.value.queue"
    assert rule["metadata"]["enableTLS"] == "true"
    assert [a["trigger_parameter"] for a in rule["authentication"]] == ["password"]
    command = template["container"][0]["command"]
    assert tools.unwrap(command[command.index("--queues") + 1]) == "each.value.queue"


def test_bicep_queue_names_flow_from_one_var_into_env_and_keda() -> None:
    """Bicep: cpuQueue/ioQueue equal the defaults and feed the env, --queues and listName."""
    main = tools.BICEP / "main.bicep"
    variables = tools.bicep_vars(main)
    assert (tools.bicep_literal(variables["cpuQueue"]), tools.bicep_literal(variables["ioQueue"])) == (CPU, IO)
    env = {name: expr for name, kind, expr in tools.bicep_env_entries(main) if kind == "value"}
    assert (env["TASKLIFT_CPU_QUEUE"], env["TASKLIFT_IO_QUEUE"]) == ("cpuQueue", "ioQueue")

    source = tools.bicep_source(main)
    assert re.search(r"cpu:\s*union\(workerPools\.cpu,\s*\{\s*queue:\s*cpuQueue\s*\}\)", source)
    assert re.search(r"io:\s*union\(workerPools\.io,\s*\{\s*queue:\s*ioQueue\s*\}\)", source)

    workers = tools.bicep_source(tools.BICEP / "modules" / "workers.bicep")
    assert re.findall(r"listName:\s*(.+)", workers) == ["pool.value.queue"]
    assert re.search(r"type:\s*'redis'", workers)
    assert re.search(r"triggerParameter:\s*'password'", workers)
    assert re.search(r"enableTLS:\s*'true'", workers)
    assert re.search(r"'--queues'\s*\n\s*pool\.value\.queue", workers)


def test_k8s_scaled_objects_watch_the_queue_their_deployment_consumes() -> None:
    """AKS: each ScaledObject's listName is its Deployment's --queues and TASKLIFT_*_QUEUE value."""
    docs = tools.load_k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    watched = set()
    for obj in scaled:
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["authenticationRef"]["name"] == "tasklift-redis"
        list_name = trigger["metadata"]["listName"]
        container = deployments[obj["spec"]["scaleTargetRef"]["name"]]["spec"]["template"]["spec"]["containers"][0]
        command = container["command"]
        assert command[command.index("--queues") + 1] == list_name
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert list_name in (env["TASKLIFT_CPU_QUEUE"], env["TASKLIFT_IO_QUEUE"])
        assert (env["TASKLIFT_CPU_QUEUE"], env["TASKLIFT_IO_QUEUE"]) == (CPU, IO)
        watched.add(list_name)
    assert watched == {CPU, IO}


def test_k8s_trigger_authentication_takes_the_password_from_a_secret() -> None:
    """KEDA authenticates to Redis with a secretTargetRef, never a literal password."""
    (auth,) = [d for d in tools.load_k8s_documents() if d["kind"] == "TriggerAuthentication"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "tasklift-secrets", "key": "redis-password"}
    ]


def test_worker_concurrency_flag_and_setting_agree() -> None:
    """Where a worker passes --concurrency, it equals its TASKLIFT_WORKER_CONCURRENCY."""
    worker = tools.load_compose()["services"]["worker"]
    command = worker["command"]
    assert command[command.index("--concurrency") + 1] == _env(worker)["TASKLIFT_WORKER_CONCURRENCY"]
    for doc in tools.load_k8s_documents():
        if (
            doc["kind"] == "Deployment"
            and "--concurrency" in doc["spec"]["template"]["spec"]["containers"][0]["command"]
        ):
            container = doc["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("value") for e in container["env"]}
            flag = container["command"][container["command"].index("--concurrency") + 1]
            assert flag == env["TASKLIFT_WORKER_CONCURRENCY"], doc["metadata"]["name"]
