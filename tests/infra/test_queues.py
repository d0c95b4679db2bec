"""The workers consume the queues the settings name, and KEDA scales each pool on that queue's load.

The worker's `--queues`, TASKLIFT_CPU_QUEUE / TASKLIFT_IO_QUEUE and the Settings defaults must agree
in every route, and each pool's KEDA rule must run exactly tasklift.store.scaling.POOL_LOAD_QUERY
for the queue that pool consumes (PostgreSQL's count of running + due tasks; tests/integration/
test_scaler.py runs that text against real workers), with the pool's concurrency as the target.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tasklift.store.scaling import POOL_LOAD_QUERY, pool_load_query
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
    """Terraform: local.cpu_queue/io_queue equal the defaults and feed the env, --queues and the KEDA query."""
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
    module = tools.TERRAFORM / "modules" / "workers" / "main.tf"
    assert tools.terraform_locals(module)["pool_load_query"] == POOL_LOAD_QUERY
    apps = tools.terraform_blocks("resource", module)
    worker = apps["azurerm_container_app"]["worker"]
    template = worker["template"][0]
    (rule,) = template["custom_scale_rule"]
    assert rule["custom_rule_type"] == "postgresql"
    assert tools.unwrap(rule["metadata"]["query"]) == 'replace(local.pool_load_query, "{queue}", each.value.queue)'
    assert tools.unwrap(rule["metadata"]["targetQueryValue"]) == "tostring(each.value.concurrency)"
    assert rule["metadata"]["activationTargetQueryValue"] == "0"
    assert [(a["secret_name"], a["trigger_parameter"]) for a in rule["authentication"]] == [
        ("database-url", "connection")
    ]
    command = template["container"][0]["command"]
    assert tools.unwrap(command[command.index("--queues") + 1]) == "each.value.queue"
    assert tools.unwrap(command[command.index("--concurrency") + 1]) == "tostring(each.value.concurrency)"


def test_bicep_queue_names_flow_from_one_var_into_env_and_keda() -> None:
    """Bicep: cpuQueue/ioQueue equal the defaults and feed the env, --queues and the KEDA query."""
    main = tools.BICEP / "main.bicep"
    variables = tools.bicep_vars(main)
    assert (tools.bicep_literal(variables["cpuQueue"]), tools.bicep_literal(variables["ioQueue"])) == (CPU, IO)
    env = {name: expr for name, kind, expr in tools.bicep_env_entries(main) if kind == "value"}
    assert (env["TASKLIFT_CPU_QUEUE"], env["TASKLIFT_IO_QUEUE"]) == ("cpuQueue", "ioQueue")

    source = tools.bicep_source(main)
    assert re.search(r"cpu:\s*union\(workerPools\.cpu,\s*\{\s*queue:\s*cpuQueue\s*\}\)", source)
    assert re.search(r"io:\s*union\(workerPools\.io,\s*\{\s*queue:\s*ioQueue\s*\}\)", source)

    workers = tools.bicep_source(tools.BICEP / "modules" / "workers.bicep")
    (query,) = re.findall(r"^var poolLoadQuery = '''(.*)'''$", workers, re.M)
    assert query == POOL_LOAD_QUERY
    assert re.findall(r"query:\s*(.+)", workers) == ["replace(poolLoadQuery, '{queue}', pool.value.queue)"]
    assert re.search(r"type:\s*'postgresql'", workers)
    assert re.search(r"targetQueryValue:\s*string\(pool\.value\.concurrency\)", workers)
    assert re.search(r"activationTargetQueryValue:\s*'0'", workers)
    assert re.search(r"secretRef:\s*'database-url'\s*\n\s*triggerParameter:\s*'connection'", workers)
    assert re.search(r"'--queues'\s*\n\s*pool\.value\.queue", workers)
    assert re.search(r"'--concurrency'\s*\n\s*string\(pool\.value\.concurrency\)", workers)


def test_k8s_scaled_objects_count_the_queue_their_deployment_consumes() -> None:
    """AKS: each ScaledObject runs the load query of its Deployment's --queues, per --concurrency."""
    docs = tools.load_k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    watched = set()
    for obj in scaled:
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "postgresql"
        assert trigger["authenticationRef"]["name"] == "tasklift-postgresql"
        container = deployments[obj["spec"]["scaleTargetRef"]["name"]]["spec"]["template"]["spec"]["containers"][0]
        command = container["command"]
        queue = command[command.index("--queues") + 1]
        assert trigger["metadata"]["query"] == pool_load_query(queue)
        assert trigger["metadata"]["targetQueryValue"] == command[command.index("--concurrency") + 1]
        assert trigger["metadata"]["activationTargetQueryValue"] == "0"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert (env["TASKLIFT_CPU_QUEUE"], env["TASKLIFT_IO_QUEUE"]) == (CPU, IO)
        watched.add(queue)
    assert watched == {CPU, IO}


def test_k8s_pools_scale_in_only_when_idle() -> None:
    """The HPA never removes a pod (it cannot tell a busy one); KEDA takes an idle pool to zero."""
    for obj in [d for d in tools.load_k8s_documents() if d["kind"] == "ScaledObject"]:
        behavior = obj["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"] == {"selectPolicy": "Disabled"}, obj["metadata"]["name"]
        assert obj["spec"]["minReplicaCount"] == 0, obj["metadata"]["name"]


def test_k8s_trigger_authentication_takes_the_database_url_from_a_secret() -> None:
    """KEDA connects to PostgreSQL with a secretTargetRef, never a literal connection string."""
    (auth,) = [d for d in tools.load_k8s_documents() if d["kind"] == "TriggerAuthentication"]
    assert auth["metadata"]["name"] == "tasklift-postgresql"
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": "tasklift-secrets", "key": "database-url"}
    ]


def test_the_load_query_takes_only_queue_names() -> None:
    """The queue is written into the SQL as a literal: anything but a queue name is refused."""
    assert pool_load_query(CPU).count(f"'{CPU}'") == 2 and "{queue}" not in pool_load_query(CPU)
    for bad in ("x'; DROP TABLE tasks; --", "", "a b"):
        with pytest.raises(ValueError, match="not a queue name"):
            pool_load_query(bad)


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
