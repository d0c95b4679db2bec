"""``tasklift emulate azure|aws``: host the function handlers locally the way the clouds do.

The emulators live in the ``tasklift_local`` package (local/tasklift_local); they serve the real
``functions/azure/function_app.py`` and the Lambda handlers of ``functions/aws/template.yaml``
and enforce each platform's limits. See docs/hosts.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from tasklift.cli.base import app

emulate = typer.Typer(no_args_is_help=True, help="Host the Azure Functions or AWS Lambda handlers locally.")
app.add_typer(emulate, name="emulate")


def _configure_logging() -> None:
    """The same structured logs and telemetry as ``tasklift api``: the emulator serves the API."""
    from tasklift import telemetry
    from tasklift.logs import configure_logging

    configure_logging()
    telemetry.configure("api")


@emulate.command("azure")
def azure(
    host: str = typer.Option("127.0.0.1", help="Interface to bind"),
    port: int = typer.Option(7071, help="Port (Core Tools' default is 7071)"),
    app_dir: Path = typer.Option(None, help="The script root: the folder with function_app.py and host.json"),
) -> None:
    """Serve functions/azure/function_app.py as the Azure Functions host does (routes from host.json)."""
    from tasklift_local.azure import AzureEmulator
    from tasklift_local.serve import find_functions_dir, serve

    _configure_logging()
    emulator = AzureEmulator(app_dir or find_functions_dir("azure", "function_app.py"))
    for fn in emulator.functions:
        logging.getLogger("tasklift_local").info("%-16s %s %s", fn.name, ",".join(fn.methods), emulator.url_of(fn))
    serve(emulator.app(), host, port, f"Azure Functions emulator ({emulator.app_dir})")


@emulate.command("aws")
def aws(
    host: str = typer.Option("127.0.0.1", help="Interface to bind"),
    port: int = typer.Option(3000, help="Port (sam local start-api's default is 3000)"),
    template: Path = typer.Option(None, help="The SAM template (default functions/aws/template.yaml)"),
) -> None:
    """Serve the Lambda handlers of a SAM template behind an emulated API Gateway HTTP API."""
    from tasklift_local.aws import AwsEmulator
    from tasklift_local.serve import find_functions_dir, serve

    _configure_logging()
    # The libraries every tasklift function imports, loaded once by the fork server (none reads settings).
    emulator = AwsEmulator(
        template or find_functions_dir("aws", "template.yaml") / "template.yaml",
        preload=("tasklift.http.asgi", "mangum"),
    )
    for endpoint in emulator.endpoints:
        route = endpoint.route
        logging.getLogger("tasklift_local").info("%-24s %s %s", route.function, route.method, route.path)
    try:
        serve(emulator.app(), host, port, f"API Gateway + Lambda emulator ({emulator.template})")
    finally:
        emulator.close()
