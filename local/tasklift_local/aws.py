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

Deliberate divergences: all functions share one process (Lambda gives each its own), so module
state is shared; memory size is reported in the context but not enforced; there is no cold start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklift_local.apigw import RouteMatch, build_event, gateway_error, to_response
from tasklift_local.cfn import LambdaRoute, http_api_routes
from tasklift_local.lambda_runtime import LambdaContext, execution_environments, load_handler

log = logging.getLogger("tasklift_local.aws")

HTTP_API_PAYLOAD_BYTES = 10 * 1024 * 1024  #: API Gateway HTTP API: "Maximum payload size 10 MB"
LAMBDA_REQUEST_BYTES = 6 * 1024 * 1024  #: Lambda: "Invocation payload (request and response) 6 MB each (synchronous)"
LAMBDA_RESPONSE_BYTES = (
    6_291_556  #: the exact figure Lambda reports: "Exceeded maximum allowed payload size (6291556 bytes)"
)
HTTP_API_INTEGRATION_TIMEOUT = 30.0  #: HTTP API: "Maximum integration timeout 30 seconds"


@dataclass
class _Endpoint:
    route: LambdaRoute
    pattern: re.Pattern[str]
    specificity: tuple[int, int, int]
    handler: Callable[[dict[str, Any], Any], Any]


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

    def __init__(self, template: Path, *, integration_timeout: float = HTTP_API_INTEGRATION_TIMEOUT) -> None:
        self.template = template.resolve()
        self.integration_timeout = integration_timeout
        self.environments = execution_environments()
        self.endpoints: list[_Endpoint] = []
        for route in http_api_routes(self.template):
            pattern, specificity = _compile(route.path)
            handler = load_handler(route.code_dir, route.handler, route.environment)
            self.endpoints.append(_Endpoint(route, pattern, specificity, handler))
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
        """The Starlette app that plays API Gateway."""
        return Starlette(routes=[Route("/{path:path}", self.serve, methods=_ALL_METHODS)])

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
        context = LambdaContext(route.function, route.memory_mb, route.timeout)
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self.environments, endpoint.handler, event, context)
        try:
            result = await asyncio.wait_for(call, timeout=min(route.timeout, integration))
        except TimeoutError:
            if route.timeout <= integration:
                log.warning("%s: Task timed out after %.2f seconds (the function's Timeout) → 500", what, route.timeout)
                return gateway_error(500, "Internal Server Error")
            log.warning("%s: no response within the HTTP API integration timeout (%g s) → 503", what, integration)
            return gateway_error(503, "Service Unavailable")
        except Exception:
            log.exception("%s: the handler raised (a Lambda function error) → 500", what)
            return gateway_error(500, "Internal Server Error")
        try:
            size = len(json.dumps(result))
        except (TypeError, ValueError):
            log.warning("%s: the handler returned a result that is not JSON → 500", what)
            return gateway_error(500, "Internal Server Error")
        if size > LAMBDA_RESPONSE_BYTES:
            log.warning("%s: response of %d bytes over Lambda's 6 MB response payload limit → 500", what, size)
            return gateway_error(500, "Internal Server Error")
        try:
            return to_response(result)
        except (KeyError, TypeError, ValueError):
            log.warning("%s: malformed payload-2.0 response %r → 500", what, str(result)[:200])
            return gateway_error(500, "Internal Server Error")

    def close(self) -> None:
        self.environments.shutdown(wait=False, cancel_futures=True)


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
