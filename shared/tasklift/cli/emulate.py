"""``tasklift emulate azure|aws``: host the function handlers locally the way the clouds do.

The emulators live in the ``tasklift-local`` distribution (local/, not part of a production
install of tasklift; without it these commands say how to install it); they serve the real
``functions/azure/function_app.py`` and the Lambda handlers of ``functions/aws/template.yaml``
and enforce each platform's limits. See docs/hosts.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import typer

from tasklift.cli.base import app
from tasklift.extras import EMULATORS, require

emulate = typer.Typer(no_args_is_help=True, help="Host the Azure Functions or AWS Lambda handlers locally.")
app.add_typer(emulate, name="emulate")


def _emulator_module(kind: str) -> ModuleType:
    """``tasklift_local.<kind>``, or :class:`tasklift.extras.MissingExtra` naming how to install it."""
    return require(f"tasklift_local.{kind}", install=EMULATORS, what="tasklift-local (the host emulators)")


def _configure_logging() -> None:
    """The same structured logs and telemetry as ``tasklift api``: the emulator serves the API."""
    from tasklift import telemetry
    from tasklift.logs import configure_logging

    configure_logging()
    telemetry.configure("api")


#: The environment variable that hands the script root to each worker process.
_APP_DIR_ENV = "TASKLIFT_LOCAL_AZURE_APP_DIR"


@emulate.command("azure")
def azure(
    host: str = typer.Option("127.0.0.1", help="Interface to bind"),
    port: int = typer.Option(7071, help="Port (Core Tools' default is 7071)"),
    app_dir: Path = typer.Option(None, help="The script root: the folder with function_app.py and host.json"),
) -> None:
    """Serve functions/azure/function_app.py as the Azure Functions host does (routes from host.json).

    FUNCTIONS_WORKER_PROCESS_COUNT (1-10, default 1) language worker processes share the port, as
    the host spreads invocations over that many Python workers, each with its own module state.
    """
    azure_emulator = _emulator_module("azure")
    from tasklift_local.serve import find_functions_dir, serve, serve_workers

    _configure_logging()
    root = (app_dir or find_functions_dir("azure", "function_app.py")).resolve()
    try:
        workers = azure_emulator.worker_process_count()
    except ValueError as exc:
        typer.echo(f"tasklift emulate azure: {exc}", err=True)
        raise typer.Exit(2) from None
    if workers > 1:
        os.environ[_APP_DIR_ENV] = str(root)
        banner = f"Azure Functions emulator ({root}, {workers} worker processes)"
        serve_workers("tasklift.cli.emulate:azure_worker_app", workers, host, port, banner)
        return
    emulator = azure_emulator.AzureEmulator(root)
    for fn in emulator.functions:
        logging.getLogger("tasklift_local").info("%-16s %s %s", fn.name, ",".join(fn.methods), emulator.url_of(fn))
    serve(emulator.app(), host, port, f"Azure Functions emulator ({emulator.app_dir})")


def azure_worker_app() -> Any:
    """One language worker process of ``tasklift emulate azure`` (uvicorn's factory, in each process)."""
    from tasklift_local.azure import AzureEmulator

    _configure_logging()
    return AzureEmulator(Path(os.environ[_APP_DIR_ENV])).app()


@emulate.command("aws")
def aws(
    host: str = typer.Option("127.0.0.1", help="Interface to bind"),
    port: int = typer.Option(3000, help="Port (sam local start-api's default is 3000)"),
    template: Path = typer.Option(None, help="The SAM template (default functions/aws/template.yaml)"),
) -> None:
    """Serve the Lambda handlers of a SAM template behind an emulated API Gateway HTTP API."""
    aws_emulator = _emulator_module("aws")
    from tasklift_local.serve import find_functions_dir, serve

    _configure_logging()
    # The libraries every tasklift function imports, loaded once by the fork server (none reads settings).
    emulator = aws_emulator.AwsEmulator(
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
