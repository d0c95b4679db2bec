"""Property-based tests of every operation in /openapi.json, as two principals (schemathesis).

For each operation schemathesis generates requests from its documented schema, and each request
is sent as a plain key and as an admin key with schemathesis' default checks: no 5xx, documented
status codes, content types, headers and bodies, schema-valid data accepted. Operations with a
request body also get invalid (negative) data, which must be refused with a 4xx. Strings exclude
NUL and unpaired surrogates, which PostgreSQL cannot store (the API refuses them with a 422:
``test_text_postgresql_cannot_store_is_422_not_503``). Example counts are small so that the whole
file runs in well under two minutes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode, checks

from tasklift.http.routes import ROUTES

#: The budget: examples per operation and generation mode, each sent as both principals. 12 positive
#: ones for each of the 12 operations and 12 negative ones for each of the 6 with a body, query or
#: header parameters: ~430 requests, about a minute here. Raise it with SCHEMATHESIS_MAX_EXAMPLES
#: (a nightly run, say); the bar is the same: zero 5xx, every status and body as documented.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "12"))

# schemathesis draws from the `random` module inside its strategies, which Hypothesis deprecates:
# its warning, not ours (the suite turns warnings into errors).
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
OPERATIONS = [(r.method, r.template) for r in ROUTES]
#: Schema-valid values whose validity depends on state no schema can describe: a cursor is opaque
#: (only one the API made is valid), an Idempotency-Key already used with another body is 422, and a
#: callback_url is refused for where its host resolves to (SSRF rules: docs/webhooks.md), and the
#: flow-control times depend on the clock and on each other (expires_at in the future, a deadline
#: after the start: docs/flow-control.md).
FLOW_TIMES = {("body", "run_at"), ("body", "delay_seconds"), ("body", "expires_at"), ("body", "ttl_seconds")}
STATEFUL = {
    ("GET", "/tasks"): {("query", "cursor")},
    ("GET", "/bulk"): {("query", "cursor")},
    ("GET", "/schedules"): {("query", "cursor")},
    # A schedule's cron expression and time zone are checked by cronsim and the tz database, its
    # payload by its task type's input model (anything under payload), its type by the registry.
    ("POST", "/schedules"): {("body", "cron"), ("body", "timezone"), ("body", "task_type"), ("body", "payload")},
    ("POST", "/tasks"): {("header", "Idempotency-Key"), ("body", "callback_url"), *FLOW_TIMES},
}
#: Operations with something to violate: a request body, or query / header parameters with a type,
#: a range or a pattern (a path's task_id is any string: an unknown one is 404).
NEGATABLE = [
    ("POST", "/tasks"),
    ("GET", "/tasks"),
    ("GET", "/tasks/{task_id}"),
    ("GET", "/tasks/{task_id}/logs"),
    ("GET", "/tasks/{task_id}/output"),
    ("GET", "/tasks/{task_id}/stream"),
    ("POST", "/tasks/{task_id}/signals/{name}"),
    ("POST", "/bulk"),
    ("POST", "/schedules"),
    ("GET", "/schedules"),
    ("GET", "/schedules/{schedule_id}/runs"),
]


@pytest.fixture
def principals(make_key: Callable[..., str]) -> list[dict[str, str]]:
    """Headers of two principals: a plain key and an admin key."""
    return [{"Authorization": f"Bearer {make_key(name, admin=name == 'ops')}"} for name in ("alice", "ops")]


def _run(api: str, principals: list[dict[str, str]], method: str, path: str, mode: GenerationMode) -> None:
    document = httpx.get(f"{api}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    schema.config.generation.update(allow_x00=False, codec="utf-8")
    operation = schema[path][method]
    body_schema = document["paths"][path][method.lower()].get("requestBody", {})
    body_schema = body_schema.get("content", {}).get("application/json", {}).get("schema")

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        for headers in principals:
            refusable = STATEFUL.get((method, path))
            if mode is GenerationMode.POSITIVE and refusable is not None:
                response = case.call_and_validate(
                    base_url=api, headers=headers, timeout=10, excluded_checks=[checks.positive_data_acceptance]
                )
                if response.status_code == 422:  # every other check stands; a refusal names that parameter alone
                    assert {tuple(e["loc"][:2]) for e in response.json()["errors"]} <= refusable, response.text
                continue
            if mode is GenerationMode.POSITIVE:
                case.call_and_validate(base_url=api, headers=headers, timeout=10)
                continue
            # schemathesis mutates one oneOf branch at a time, and a body broken for one task type can be
            # a valid body of the default one; judge invalidity against the whole documented schema.
            response = case.call_and_validate(
                base_url=api, headers=headers, timeout=10, excluded_checks=[checks.negative_data_rejection]
            )
            if body_schema is not None and not Draft202012Validator(body_schema).is_valid(case.body):
                assert 400 <= response.status_code < 500, (case.body, response.status_code, response.text)

    check()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_valid_requests_to_every_operation_answer_as_documented_for_two_principals(
    secure_api: str, principals: list[dict[str, str]], method: str, path: str
) -> None:
    _run(secure_api, principals, method, path, GenerationMode.POSITIVE)


@pytest.mark.parametrize(("method", "path"), NEGATABLE, ids=[f"{m} {p}" for m, p in NEGATABLE])
def test_invalid_request_bodies_are_refused_for_two_principals(
    secure_api: str, principals: list[dict[str, str]], method: str, path: str
) -> None:
    _run(secure_api, principals, method, path, GenerationMode.NEGATIVE)


@pytest.mark.parametrize("text", ["nul\u0000byte", "lone \ud800 surrogate"])
def test_text_postgresql_cannot_store_is_422_not_503(alice: httpx.Client, text: str) -> None:
    escaped = text.encode("unicode_escape").decode().replace("\\x00", "\\u0000")
    body = '{"task_type": "test_noop", "metadata": {"note": "' + escaped + '"}}'
    resp = alice.post("/tasks", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == ["body", "metadata", "note"]


def test_the_document_declares_every_parameter_security_scheme_and_problem(secure_api: str) -> None:
    """What schemathesis can only exercise if it is written down (issue 20, defect 6)."""
    document = httpx.get(f"{secure_api}/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": schemes["bearer"]["description"]}
    assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
    assert schemes["streamToken"]["in"] == "query" and schemes["streamToken"]["name"] == "access_token"
    for route in ROUTES:
        operation = document["paths"][route.template][route.method.lower()]
        declared = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
        for name in re.findall(r"\{(\w+)\}", route.template):
            assert ("path", name) in declared, (route.name, name)
        assert "431" in operation["responses"] and "503" in operation["responses"], route.name
        if route.name not in ("healthz", "readyz", "metrics"):
            assert {"401", "429"} <= set(operation["responses"]) and operation["security"], route.name
    listing = document["paths"]["/tasks"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "status", "task_type", "created_after", "cursor"}
    assert "422" in listing["responses"]
    stream = {p["name"]: p for p in document["paths"]["/tasks/{task_id}/stream"]["get"]["parameters"]}
    assert stream["Last-Event-ID"]["in"] == "header" and stream["Last-Event-ID"]["schema"]["pattern"]
    submit = {p["name"] for p in document["paths"]["/tasks"]["post"]["parameters"]}
    assert submit == {"Idempotency-Key"}
