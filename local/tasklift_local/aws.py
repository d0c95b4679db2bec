"""The AWS emulator: API Gateway HTTP API in front of the Lambda handlers of a SAM template.

Each request is matched to a route of the template the way an HTTP API matches (the most specific
path wins, a method beats ``ANY``, ``{proxy+}`` is greedy), turned into a payload-2.0 event and
passed to the route's handler with a Lambda context, in a warm execution environment. The result
comes back buffered, as it does through API Gateway and Lambda, under the platform's limits.

Limits (AWS "Amazon API Gateway quotas" for HTTP APIs, "Lambda quotas"), and how each fails:

==============================================  =========================================
HTTP API request payload 10 MB                  413 ``{"message":"Request Entity Too Large"}``
Lambda synchronous request payload 6 MB         413 (the event is refused before it runs)
Lambda synchronous response payload 6 MB        500 ``{"message":"Internal Server Error"}``
function ``Timeout`` (template, default 3 s)    500 (a timed-out invocation is a function error)
HTTP API integration timeout 30 s (max)         503 ``{"message":"Service Unavailable"}``
a handler that raises or returns garbage        500 ``{"message":"Internal Server Error"}``
no route for the method and path                404 ``{"message":"Not Found"}``
==============================================  =========================================

Each function runs in its own execution environments, as on Lambda: child processes started with
that function's environment variables (the template's plain ones, unless the local environment
sets them), each running one invocation at a time and kept warm; a function gets a new environment
when all of its are busy (cold start), and loses the one whose invocation timed out. One
environment per function is started with the emulator, so the first request is not a cold start.

Deliberate divergences: at most ``MAX_ENVIRONMENTS`` environments per function (a request beyond
waits for one, where Lambda would scale on); memory size is reported in the context but not
enforced; an environment is never frozen or recycled while idle.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklift_local.apigw import RouteMatch, build_event, gateway_error, to_response
from tasklift_local.cfn import LambdaRoute, http_api_routes
from tasklift_local.lambda_runtime import EnvironmentDied, ExecutionEnvironment, fork_server

log = logging.getLogger("tasklift_local.aws")

HTTP_API_PAYLOAD_BYTES = 10 * 1024 * 1024  #: API Gateway HTTP API: "Maximum payload size 10 MB"
LAMBDA_REQUEST_BYTES = 6 * 1024 * 1024  #: Lambda: "Invocation payload (request and response) 6 MB each (synchronous)"
LAMBDA_RESPONSE_BYTES = (
    6_291_556  #: the exact figure Lambda reports: "Exceeded maximum allowed payload size (6291556 bytes)"
)
HTTP_API_INTEGRATION_TIMEOUT = 30.0  #: HTTP API: "Maximum integration timeout 30 seconds"
MAX_ENVIRONMENTS = 32  #: execution environments per function, at most (a laptop's memory, not Lambda's)


@dataclass
class _Function:
    """One function's execution environments: the idle ones wait here, warm."""

    route: LambdaRoute
    context: Any
    idle: list[ExecutionEnvironment] = field(default_factory=list)
    every: set[ExecutionEnvironment] = field(default_factory=set)
    freed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def new_environment(self) -> ExecutionEnvironment:
        route = self.route
        environment = ExecutionEnvironment(
            route.function, route.code_dir, route.handler, route.environment, self.context
        )
        self.every.add(environment)
        return environment

    async def acquire(self) -> ExecutionEnvironment:
        """A warm idle environment, or a new one (its init phase run) when every one is busy."""
        async with self.freed:
            while not self.idle and len(self.every) >= MAX_ENVIRONMENTS:
                await self.freed.wait()
            if self.idle:
                return self.idle.pop()
            environment = self.new_environment()
        try:
            await environment.start()
        except BaseException:
            await self.discard(environment)
            raise
        return environment

    async def release(self, environment: ExecutionEnvironment) -> None:
        async with self.freed:
            self.idle.append(environment)
            self.freed.notify()

    async def discard(self, environment: ExecutionEnvironment) -> None:
        environment.kill()
        async with self.freed:
            self.every.discard(environment)
            self.freed.notify()


@dataclass
class _Endpoint:
    route: LambdaRoute
    pattern: re.Pattern[str]
    specificity: tuple[int, int, int]
    function: _Function


def _compile(path: str) -> tuple[re.Pattern[str], tuple[int, int, int]]:
    segments = [s for s in path.strip("/").split("/") if s]
    parts, params, greedy = [], 0, 0
    for seg in segments:
        if m := re.fullmatch(r"\{(\w+)\+\}", seg):
            parts.append(f"(?P<{m[1]}>.+)")
            greedy += 1
        elif m := re.fullmatch(r"\{(\w+)\}", seg):
            parts.append(f"(?P<{m[1]}>[^/]+)")
            params += 1
        else:
            parts.append(re.escape(seg))
    # HTTP APIs prefer literal segments over parameters, and anything over a greedy variable.
    return re.compile("^/" + "/".join(parts) + "$"), (greedy, params, -len(segments))


class AwsEmulator:
    """API Gateway (HTTP API) + Lambda for the functions of one SAM template."""

    def __init__(
        self,
        template: Path,
        *,
        integration_timeout: float = HTTP_API_INTEGRATION_TIMEOUT,
        preload: Sequence[str] = (),
    ) -> None:
        self.template = template.resolve()
        context = fork_server(preload)
        self.integration_timeout = integration_timeout
        self.functions: dict[str, _Function] = {}
        self.endpoints: list[_Endpoint] = []
        for route in http_api_routes(self.template):
            pattern, specificity = _compile(route.path)
            function = self.functions.setdefault(route.function, _Function(route, context))
            self.endpoints.append(_Endpoint(route, pattern, specificity, function))
        self.endpoints.sort(key=lambda e: (e.specificity, e.route.method == "ANY"))

    def match(self, method: str, path: str) -> tuple[_Endpoint, RouteMatch] | None:
        """The route an HTTP API picks for ``method path``, if any."""
        for endpoint in self.endpoints:
            if endpoint.route.method not in (method, "ANY"):
                continue
            if found := endpoint.pattern.match(path):
                key = f"{endpoint.route.method} {endpoint.route.path}"
                return endpoint, RouteMatch(key, found.groupdict())
        return None

    def app(self) -> Starlette:
        """The Starlette app that plays API Gateway (its lifespan starts and ends the environments)."""
        return Starlette(routes=[Route("/{path:path}", self.serve, methods=_ALL_METHODS)], lifespan=self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.warm_up()
        yield
        self.close()

    async def warm_up(self) -> None:
        """One warm environment per function, their init phases run side by side."""
        # Each busy environment holds one of anyio's worker threads while it waits for its answer.
        anyio.to_thread.current_default_thread_limiter().total_tokens = MAX_ENVIRONMENTS * len(self.functions)
        started = await asyncio.gather(*(f.acquire() for f in self.functions.values()), return_exceptions=True)
        for function, environment in zip(self.functions.values(), started, strict=True):
            if isinstance(environment, BaseException):
                log.error("%s: init failed: %s", function.route.function, environment)
            else:
                await function.release(environment)

    async def serve(self, request: Request) -> Response:
        found = self.match(request.method, request.url.path)
        if found is None:
            return gateway_error(404, "Not Found")
        endpoint, route_match = found
        what = f"{request.method} {request.url.path} → {endpoint.route.function}"
        body = await _read_capped(request, HTTP_API_PAYLOAD_BYTES)
        if body is None:
            log.warning("%s: request body over the HTTP API payload limit (10 MB) → 413", what)
            return gateway_error(413, "Request Entity Too Large")
        event = build_event(request, body, route_match)
        if len(json.dumps(event)) > LAMBDA_REQUEST_BYTES:
            log.warning("%s: event over Lambda's 6 MB synchronous request payload limit → 413", what)
            return gateway_error(413, "Request Entity Too Large")
        return await self._invoke(endpoint, event, what)

    async def _invoke(self, endpoint: _Endpoint, event: dict[str, Any], what: str) -> Response:
        route = endpoint.route
        integration = min(self.integration_timeout, route.integration_timeout or self.integration_timeout)
        try:
            environment = await endpoint.function.acquire()
        except Exception:
            log.exception("%s: the function's init failed → 500", what)
            return gateway_error(500, "Internal Server Error")
        try:
            answer = await asyncio.wait_for(
                environment.invoke(event, route.memory_mb, route.timeout), timeout=min(route.timeout, integration)
            )
        except TimeoutError:
            await endpoint.function.discard(environment)  # Lambda ends an environment whose invocation timed out
            if route.timeout <= integration:
                log.warning("%s: Task timed out after %.2f seconds (the function's Timeout) → 500", what, route.timeout)
                return gateway_error(500, "Internal Server Error")
            log.warning("%s: no response within the HTTP API integration timeout (%g s) → 503", what, integration)
            return gateway_error(503, "Service Unavailable")
        except EnvironmentDied:
            await endpoint.function.discard(environment)
            log.warning("%s: the execution environment's process ended (a runtime crash) → 500", what)
            return gateway_error(500, "Internal Server Error")
        await endpoint.function.release(environment)
        if "error" in answer:
            log.warning("%s: the handler raised (a Lambda function error: %s) → 500", what, answer["error"])
            return gateway_error(500, "Internal Server Error")
        if answer.get("not_json"):
            log.warning("%s: the handler returned a result that is not JSON → 500", what)
            return gateway_error(500, "Internal Server Error")
        result = answer["result"]
        size = len(json.dumps(result))
        if size > LAMBDA_RESPONSE_BYTES:
            log.warning("%s: response of %d bytes over Lambda's 6 MB response payload limit → 500", what, size)
            return gateway_error(500, "Internal Server Error")
        try:
            return to_response(result)
        except (KeyError, TypeError, ValueError):
            log.warning("%s: malformed payload-2.0 response %r → 500", what, str(result)[:200])
            return gateway_error(500, "Internal Server Error")

    def close(self) -> None:
        """End every environment (an idle one also ends by itself when its stdin closes)."""
        for function in self.functions.values():
            for environment in function.every:
                environment.kill()
            function.idle.clear()
            function.every.clear()


_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds ``limit`` (the gateway stops reading there)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
