"""docker-compose.yml is a valid compose file and starts the stack in a safe order."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.infra import tools

#: Services that run until stopped and therefore must report health.
LONG_RUNNING = ("postgres", "redis", "jaeger", "api", "worker", "reaper", "flower")


def test_compose_file_validates_against_the_compose_spec_schema() -> None:
    """check-jsonschema with the compose-spec schema it vendors (offline) accepts docker-compose.yml."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(tools.COMPOSE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_long_running_service_has_a_healthcheck() -> None:
    """Each service that stays up defines a healthcheck (the one-shot migrate does not need one)."""
    services = tools.load_compose()["services"]
    assert set(services) == {*LONG_RUNNING, "migrate"}
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name


def test_services_start_after_their_dependencies_are_healthy_and_migrated() -> None:
    """api/worker/reaper wait for healthy Postgres and Redis and a migrate that exited 0."""
    services = tools.load_compose()["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker", "reaper"):
        deps = services[name]["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}, name
        assert deps["postgres"] == {"condition": "service_healthy"}, name
        assert deps["redis"] == {"condition": "service_healthy"}, name


def test_api_runs_the_function_handlers_on_7071() -> None:
    """The api service is the Azure Functions emulator on 7071, published and probed on /healthz."""
    api = tools.load_compose()["services"]["api"]
    assert api["command"][:3] == ["tasklift", "emulate", "azure"]
    assert api["command"][api["command"].index("--port") + 1] == "7071"
    assert any(str(p).endswith(":7071") for p in api["ports"])
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def test_redis_is_a_durable_broker_that_never_evicts() -> None:
    """Redis runs with AOF, noeviction and a required password."""
    command = tools.load_compose()["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--requirepass" in command


def test_flower_is_only_in_the_ops_profile_and_bound_to_loopback() -> None:
    """Flower starts only with --profile ops and is not reachable from other machines."""
    flower = tools.load_compose()["services"]["flower"]
    assert flower["profiles"] == ["ops"]
    assert all(str(p).startswith("127.0.0.1:") for p in flower["ports"])


def test_jaeger_receives_otlp_http_and_every_tasklift_process_exports_traces_to_it() -> None:
    """Jaeger publishes OTLP/HTTP and the UI, not the gRPC port; tasklift sends it traces, never metrics."""
    services = tools.load_compose()["services"]
    ports = {str(p).rsplit(":", 1)[-1] for p in services["jaeger"]["ports"]}
    assert ports == {"4318", "16686"}  # 4317 is OTLP gRPC, which tasklift refuses to export over
    for name in ("migrate", "api", "worker", "reaper"):
        env = services[name]["environment"]
        # tasklift exports OTLP over HTTP (protobuf): Jaeger's 4318, not the gRPC port.
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318", name
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf", name
        # Jaeger answers 404 to /v1/metrics: metrics stay on the API's GET /metrics.
        assert env["OTEL_METRICS_EXPORTER"] == "none", name


def test_compose_comments_claim_no_grpc_export() -> None:
    """No comment says tasklift exports over gRPC (telemetry refuses OTEL_EXPORTER_OTLP_PROTOCOL=grpc)."""
    for line in tools.COMPOSE.read_text().splitlines():
        if "grpc" in line.lower():
            assert re.search(r"\bnot\b|refuses", line), line


def test_the_worker_sends_task_events_so_flower_shows_tasks() -> None:
    """The compose worker runs with --events (Celery task events): without them Flower lists nothing."""
    assert "--events" in tools.load_compose()["services"]["worker"]["command"]
