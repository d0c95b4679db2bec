"""tasklift on Azure Functions (Python v2 programming model): one HTTP function per endpoint.

Every function uses the HTTP streams extension's types (FastAPI's ``Request`` and ``Response``).
The stream endpoint needs them to send live Server-Sent Events, and once an app enables HTTP
streams "the function app will default to using HTTP streaming, and the original HTTP
functionality will not work" (Azure Functions announcement of HTTP streams for Python), so all
the app's HTTP functions take the same types: one app, one origin, the paths of API.md.

A function only translates: the platform's request → ``tasklift.http.routes.handle`` → the
platform's response. Every rule lives in the core. The worker process runs no ASGI lifespan, so
its API runtime (connections, event hub, service: ``tasklift.http.runtime``) is built by
:data:`runtime` at the first invocation, on the loop the worker runs every invocation on, and
reused by every later one.
"""

from functools import cache

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response
from fastapi import FastAPI

from tasklift.http import asgi, pages, routes
from tasklift.http.asgi import to_neutral, to_starlette
from tasklift.http.runtime import HostRuntime

# Anonymous at the platform: tasklift authenticates callers itself (function keys would be a second scheme).
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
ROUTES = {route.name: route for route in routes.ROUTES}
#: This worker process's API runtime (the one place that builds it).
runtime = HostRuntime()


async def serve(name: str, req: Request) -> Response:
    """Hand ``req`` to the core route ``name``; its answer comes back as the extension's response.

    The body cap is enforced while reading, as on the ASGI host (:func:`tasklift.http.asgi.serve`).
    """
    return await asgi.serve(ROUTES[name], req, runtime.get())


@app.route(route="tasks", methods=[func.HttpMethod.POST])
async def submit_task(req: Request) -> Response:
    return await serve("submit_task", req)


@app.route(route="tasks:batch", methods=[func.HttpMethod.POST])
async def submit_tasks_batch(req: Request) -> Response:
    return await serve("submit_tasks_batch", req)


@app.route(route="tasks", methods=[func.HttpMethod.GET])
async def list_tasks(req: Request) -> Response:
    return await serve("list_tasks", req)


@app.route(route="tasks/{task_id}", methods=[func.HttpMethod.GET])
async def get_task(req: Request) -> Response:
    return await serve("get_task", req)


@app.route(route="tasks/{task_id}", methods=[func.HttpMethod.DELETE])
async def cancel_task(req: Request) -> Response:
    return await serve("cancel_task", req)


@app.route(route="tasks/{task_id}/logs", methods=[func.HttpMethod.GET])
async def task_logs(req: Request) -> Response:
    return await serve("task_logs", req)


@app.route(route="tasks/{task_id}/output", methods=[func.HttpMethod.GET])
async def task_output(req: Request) -> Response:
    return await serve("task_output", req)


@app.route(route="tasks/{task_id}/stream", methods=[func.HttpMethod.GET])
async def stream_task(req: Request) -> Response:
    # Live SSE: the extension streams the response as the core yields it (functionTimeout bounds it;
    # EventSource then reconnects with Last-Event-ID and loses nothing).
    return await serve("stream_task", req)


@app.route(route="tasks/{task_id}/result", methods=[func.HttpMethod.GET])
async def task_result(req: Request) -> Response:
    return await serve("task_result", req)


@app.route(route="tasks/{task_id}/retry", methods=[func.HttpMethod.POST])
async def retry_task(req: Request) -> Response:
    return await serve("retry_task", req)


@app.route(route="tasks/{task_id}/signals/{name}", methods=[func.HttpMethod.POST])
async def send_signal(req: Request) -> Response:
    return await serve("send_signal", req)


@app.route(route="tasks/{task_id}/steps", methods=[func.HttpMethod.GET])
async def task_steps(req: Request) -> Response:
    return await serve("task_steps", req)


@app.route(route="operations/{task_id}", methods=[func.HttpMethod.GET])
async def get_operation_status(req: Request) -> Response:
    return await serve("get_operation_status", req)


@app.route(route="v1/operations/{task_id}", methods=[func.HttpMethod.GET])
async def get_google_operation(req: Request) -> Response:
    return await serve("get_google_operation", req)


@app.route(route="task-types", methods=[func.HttpMethod.GET])
async def task_types(req: Request) -> Response:
    return await serve("task_types", req)


@app.route(route="healthz", methods=[func.HttpMethod.GET])
async def healthz(req: Request) -> Response:
    return await serve("healthz", req)


@app.route(route="readyz", methods=[func.HttpMethod.GET])
async def readyz(req: Request) -> Response:
    return await serve("readyz", req)


@cache
def pages_app() -> FastAPI:
    """The ASGI app, built once per worker process, for the pages only (see :func:`not_found`)."""
    return asgi.create_app()


@app.route(route="{*path}", methods=list(func.HttpMethod))
async def not_found(req: Request) -> Response:
    # The dashboard (/), Swagger UI (/docs), ReDoc (/redoc), /openapi.json and their assets: the
    # ASGI app's own answer, so every host serves the same pages. Any other path or method: the
    # core's 404/405 problem+json instead of the host's empty 404. The host matches literal routes
    # before this catch-all (ASP.NET route precedence).
    if pages.is_page(req.url.path):
        return await asgi.answer_with_app(pages_app(), req)
    return to_starlette(await routes.dispatch(to_neutral(req, b"", runtime.get())))
