"""The Azure emulator: the Functions host in front of the functions of a v2 ``function_app.py``.

Like Core Tools it loads ``function_app.py`` from the script root, indexes the functions
registered on its ``func.FunctionApp`` (worker indexing, as in the v2 programming model), and
serves each HTTP trigger at ``routePrefix`` + its route with its methods. A function is called
with the request type it declares: the HTTP streams extension's (FastAPI's ``Request``, whose
responses may stream) or the classic ``func.HttpRequest``, whose ``func.HttpResponse`` is buffered.

Limits ("Azure Functions HTTP trigger: Limits", "host.json reference", "Function app timeout
duration"), and how each fails:

=================================================  ==========================================
no response within ``functionTimeout`` (host.json;  500; a stream that outlives it is cut
default 00:05:00 on Consumption)
no response within 230 s (Azure Load Balancer       502; a stream idle for 230 s is cut
idle timeout), whatever functionTimeout says
request body over FUNCTIONS_REQUEST_BODY_SIZE_LIMIT 413
(default 104857600 bytes)
URL longer than 4096 bytes                          414
a function that raises                              500, empty body
no function for the method and route                404, empty body
=================================================  ==========================================

FUNCTIONS_WORKER_PROCESS_COUNT worker processes (default 1) each load ``function_app.py`` and
share the port, as the host spreads invocations over its language workers; module state is per
process, as it is there.

Deliberate divergences: auth levels are not checked (Core Tools doesn't either when running
locally); connections are spread over the workers by the kernel, not per invocation.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklift.extras import AZURE, require

# The Functions host's own library, as the host has it; without it, one line naming the extra.
func = require("azure.functions", install=AZURE, what="azure-functions")
HttpTrigger = require("azure.functions.decorators.http", install=AZURE, what="azure-functions").HttpTrigger

log = logging.getLogger("tasklift_local.azure")

LOAD_BALANCER_TIMEOUT = (
    230.0  #: "230 seconds is the maximum amount of time an HTTP triggered function can take to respond"
)
DEFAULT_FUNCTION_TIMEOUT = 300.0  #: host.json functionTimeout default on the Consumption plan (5 minutes)
DEFAULT_BODY_LIMIT = 104_857_600  #: FUNCTIONS_REQUEST_BODY_SIZE_LIMIT default (100 MB)
MAX_URL_BYTES = 4096  #: "the URL length is limited to 4 KB (4,096 bytes)"
ALL_METHODS = [m.value for m in func.HttpMethod]
MAX_WORKER_PROCESSES = 10  #: "FUNCTIONS_WORKER_PROCESS_COUNT ... The maximum value allowed is 10"


def worker_process_count() -> int:
    """FUNCTIONS_WORKER_PROCESS_COUNT: the language worker processes per host (default 1, at most 10)."""
    raw = os.environ.get("FUNCTIONS_WORKER_PROCESS_COUNT", "1")
    if not raw.isdecimal() or not 1 <= int(raw) <= MAX_WORKER_PROCESSES:
        raise ValueError(f"FUNCTIONS_WORKER_PROCESS_COUNT must be 1-{MAX_WORKER_PROCESSES}, not {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class HostConfig:
    """The parts of host.json the HTTP host honours."""

    route_prefix: str = "api"
    function_timeout: float = DEFAULT_FUNCTION_TIMEOUT  #: seconds; ``inf`` for "-1" (unbounded)

    @classmethod
    def load(cls, path: Path) -> HostConfig:
        data = json.loads(path.read_text()) if path.exists() else {}
        http = (data.get("extensions") or {}).get("http") or {}
        timeout = str(data.get("functionTimeout", "")).strip()
        return cls(
            route_prefix=str(http.get("routePrefix", "api")).strip("/"),
            function_timeout=_timespan(timeout) if timeout else DEFAULT_FUNCTION_TIMEOUT,
        )


def _timespan(text: str) -> float:
    """host.json's ``[d.]hh:mm:ss[.fff]`` (or ``-1`` for no limit) in seconds."""
    if text == "-1":
        return float("inf")
    found = re.fullmatch(r"(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if not found:
        raise ValueError(f"host.json functionTimeout {text!r} is not a [d.]hh:mm:ss timespan")
    days, hours, minutes, seconds = found.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True)
class HttpFunction:
    """One HTTP-triggered function as the host indexed it."""

    name: str
    route: str  #: the route template as declared, e.g. ``tasks/{task_id}``
    methods: list[str]
    arg_name: str  #: the trigger's parameter name (``req`` by default)
    call: Callable[..., Any]
    streams: bool  #: declares the HTTP streams extension's request type

    @property
    def starlette_path(self) -> str:
        """The route template in Starlette's syntax (constraints dropped, catch-all as a path)."""
        # Constraints first, then the catch-all, which matches any depth and the site root too
        # (azure-functions-host#1102: routePrefix "" plus a {*segments} route takes "/").
        path = re.sub(r"\{(\w+)(?::[^}]*)?\??\}", r"{\1}", self.route)
        return "/" + re.sub(r"\{\*(\w+)\}", r"{\1:path}", path).lstrip("/")


def load_function_app(app_dir: Path) -> func.FunctionApp:
    """Import ``function_app.py`` from the script root (on sys.path, as the worker puts it)."""
    path = app_dir / "function_app.py"
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    spec = importlib.util.spec_from_file_location("function_app", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no function_app.py in {app_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["function_app"] = module
    spec.loader.exec_module(module)
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionApp)]
    if len(apps) != 1:
        raise RuntimeError(f"{path} must define exactly one func.FunctionApp (found {len(apps)})")
    return apps[0]


def index_functions(app: func.FunctionApp) -> list[HttpFunction]:
    """The HTTP-triggered functions registered on ``app`` (blueprints included)."""
    found = []
    for function in app.get_functions():
        trigger = function.get_trigger()
        if not isinstance(trigger, HttpTrigger):
            continue
        call = function.get_user_function()
        annotation = inspect.signature(call).parameters[trigger.name].annotation
        methods = [str(getattr(m, "value", m)).upper() for m in trigger.methods or ALL_METHODS]
        found.append(
            HttpFunction(
                name=function.get_function_name() or call.__name__,
                route=trigger.route or function.get_function_name() or call.__name__,
                methods=methods,
                arg_name=trigger.name,
                call=call,
                streams=inspect.isclass(annotation) and issubclass(annotation, Request),
            )
        )
    return found


def _precedence(fn: HttpFunction) -> tuple[int, int]:
    # ASP.NET routing (which the host uses) tries literal segments before parameters and a catch-all last.
    segments = fn.route.strip("/").split("/")
    return ("{*" in fn.route, sum(s.startswith("{") for s in segments))


class AzureEmulator:
    """The Functions host for one script root (the folder holding function_app.py and host.json)."""

    def __init__(self, app_dir: Path) -> None:
        self.app_dir = app_dir.resolve()
        self.config = HostConfig.load(self.app_dir / "host.json")
        self.body_limit = int(os.environ.get("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", DEFAULT_BODY_LIMIT))
        self.functions = sorted(index_functions(load_function_app(self.app_dir)), key=_precedence)

    def url_of(self, fn: HttpFunction) -> str:
        prefix = f"/{self.config.route_prefix}" if self.config.route_prefix else ""
        return prefix + fn.starlette_path

    def app(self) -> Starlette:
        """The Starlette app that plays the Functions host."""
        routes = [Route(self.url_of(fn), self._endpoint(fn), methods=fn.methods, name=fn.name) for fn in self.functions]
        return Starlette(routes=routes, exception_handlers={404: _empty(404), 405: _empty(404)})

    def _endpoint(self, fn: HttpFunction) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await self.invoke(fn, request)

        return endpoint

    async def invoke(self, fn: HttpFunction, request: Request) -> Response:
        """Run ``fn`` for ``request`` under the host's limits."""
        what = f"{request.method} {request.url.path} → {fn.name}"
        if len(str(request.url).encode()) > MAX_URL_BYTES:
            log.warning("%s: URL over the 4096-byte limit → 414", what)
            return Response(status_code=414)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.body_limit:
            log.warning("%s: body over FUNCTIONS_REQUEST_BODY_SIZE_LIMIT (%d bytes) → 413", what, self.body_limit)
            return Response(status_code=413)
        started = time.monotonic()
        try:
            arg = request if fn.streams else await self._classic_request(request)
        except _TooLarge:
            log.warning("%s: body over FUNCTIONS_REQUEST_BODY_SIZE_LIMIT (%d bytes) → 413", what, self.body_limit)
            return Response(status_code=413)
        budget = min(self.config.function_timeout, LOAD_BALANCER_TIMEOUT)
        try:
            result = await asyncio.wait_for(self._call(fn, arg), timeout=budget)
        except TimeoutError:
            if self.config.function_timeout <= LOAD_BALANCER_TIMEOUT:
                log.warning("%s: functionTimeout (%g s, host.json) exceeded → 500", what, self.config.function_timeout)
                return Response(status_code=500)
            log.warning("%s: no response within the 230 s HTTP limit (Azure Load Balancer) → 502", what)
            return Response(status_code=502)
        except Exception:
            log.exception("%s: the function raised → 500", what)
            return Response(status_code=500)
        return self._to_response(result, started, what)

    async def _call(self, fn: HttpFunction, arg: Any) -> Any:
        if inspect.iscoroutinefunction(fn.call):
            return await fn.call(**{fn.arg_name: arg})
        # The worker runs synchronous functions in its thread pool.
        return await anyio.to_thread.run_sync(lambda: fn.call(**{fn.arg_name: arg}))

    async def _classic_request(self, request: Request) -> func.HttpRequest:
        """The buffered ``func.HttpRequest`` the host hands to a classic function."""
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.body_limit:
                raise _TooLarge
        return func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=dict(request.headers),
            params=dict(request.query_params),
            route_params=dict(request.path_params),
            body=bytes(body),
        )

    def _to_response(self, result: Any, started: float, what: str) -> Response:
        if isinstance(result, Response):
            if hasattr(result, "body_iterator"):  # a streamed response: the host passes chunks on as they come
                result.body_iterator = self._bounded(result.body_iterator, started, what)
            return result
        if isinstance(result, func.HttpResponse):
            headers = dict(result.headers)
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = f"{result.mimetype}; charset={result.charset}"
            return Response(result.get_body(), result.status_code, headers=headers)
        if isinstance(result, str | bytes):
            return Response(result, 200, media_type="text/plain")
        log.error("%s: the function returned %s, not an HTTP response → 500", what, type(result).__name__)
        return Response(status_code=500)

    async def _bounded(self, chunks: AsyncIterator[Any], started: float, what: str) -> AsyncIterator[Any]:
        """Pass a streamed body on, cut at functionTimeout or after 230 s without a byte."""
        iterator = chunks.__aiter__()
        try:
            async for chunk in self._until_cut(iterator, started, what):
                yield chunk
        finally:
            if aclose := getattr(iterator, "aclose", None):
                await aclose()  # release what the stream holds (its hub subscription)

    async def _until_cut(self, iterator: AsyncIterator[Any], started: float, what: str) -> AsyncIterator[Any]:
        while True:
            left = self.config.function_timeout - (time.monotonic() - started)
            try:
                chunk = await asyncio.wait_for(iterator.__anext__(), timeout=max(0.0, min(left, LOAD_BALANCER_TIMEOUT)))
            except StopAsyncIteration:
                return
            except TimeoutError:
                if left <= LOAD_BALANCER_TIMEOUT:
                    log.warning("%s: functionTimeout (%g s) reached while streaming: connection closed", what,
                                self.config.function_timeout)  # fmt: skip
                else:
                    log.warning("%s: stream idle for 230 s (Azure Load Balancer): connection closed", what)
                return
            yield chunk


class _TooLarge(Exception):
    pass


def _empty(status: int) -> Callable[[Request, Exception], Any]:
    # The host answers an unmatched route (or method) with a bare status: no body.
    async def handler(request: Request, exc: Exception) -> Response:
        log.info("%s %s: no function for this method and route → %d", request.method, request.url.path, status)
        return Response(status_code=status)

    return handler
