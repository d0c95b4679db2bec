"""API Gateway HTTP API (payload format 2.0): an HTTP request → event, a Lambda result → response.

Field by field from AWS's "Working with AWS Lambda proxy integrations for HTTP APIs": header
names are lower case and repeated headers are joined with commas; cookies move out of the
headers into ``cookies``; repeated query parameters are joined with commas; a body that is not
text is base64-encoded. A result without ``statusCode`` is taken as a 200 JSON body.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from tasklift_local.lambda_runtime import ACCOUNT_ID


@dataclass(frozen=True)
class RouteMatch:
    """The route API Gateway chose for a request."""

    route_key: str  #: e.g. ``GET /tasks/{task_id}``
    path_parameters: dict[str, str]


def _joined(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs:
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def build_event(request: Request, body: bytes, match: RouteMatch) -> dict[str, Any]:
    """The payload-2.0 event API Gateway sends to Lambda for ``request``."""
    headers = _joined([(k.lower(), v) for k, v in request.headers.items()])
    cookies = [c.strip() for c in headers.pop("cookie", "").split(";") if c.strip()]
    client = request.client.host if request.client else "127.0.0.1"
    port = request.url.port or (443 if request.url.scheme == "https" else 80)
    # API Gateway adds these; Mangum builds the ASGI scheme and server from them.
    headers["x-forwarded-for"] = client
    headers["x-forwarded-port"] = str(port)
    headers["x-forwarded-proto"] = request.url.scheme
    raw_query = request.scope.get("query_string", b"").decode("latin-1")
    host = headers.get("host", "localhost")
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": match.route_key,
        "rawPath": request.scope.get("raw_path", request.url.path.encode()).decode("latin-1"),
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": request.method,
                "path": request.url.path,
                "protocol": f"HTTP/{request.scope.get('http_version', '1.1')}",
                "sourceIp": client,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex[:16],
            "routeKey": match.route_key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if raw_query:
        event["queryStringParameters"] = _joined(parse_qsl(raw_query, keep_blank_values=True))
    if match.path_parameters:
        event["pathParameters"] = match.path_parameters
    if body:
        try:
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    return event


def to_response(result: Any) -> Response:
    """The HTTP response API Gateway makes of a handler's result (format 2.0)."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # "If your Lambda function returns valid JSON and doesn't return a statusCode, API Gateway assumes…"
        return Response(json.dumps(result), 200, media_type="application/json")
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    response = Response(body, int(result["statusCode"]), headers=dict(result.get("headers") or {}))
    for name, values in (result.get("multiValueHeaders") or {}).items():  # format 1.0 results
        for value in values:
            response.headers.append(name, str(value))
    for cookie in result.get("cookies") or []:
        response.headers.append("set-cookie", cookie)
    return response


def gateway_error(status: int, message: str) -> Response:
    """An error API Gateway itself answers with: ``{"message": …}`` as HTTP APIs send it."""
    return Response(json.dumps({"message": message}), status, media_type="application/json")
