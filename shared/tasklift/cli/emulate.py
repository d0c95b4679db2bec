"""``tasklift emulate azure|aws``: host the function handlers locally the way the clouds do.

The emulators live in the ``tasklift-local`` distribution (local/, not part of a production
install of tasklift; without it these commands say how to install it); they serve the real
``functions/azure/function_app.py`` and the Lambda handlers of ``functions/aws/template.yaml``
and enforce each platform's limits. See docs/hosts.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

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


@emulate.command("azure")
def azure(
    host: str = typer.Option("127.0.0.1", help="Interface to bind"),
    port: int = typer.Option(7071, help="Port (Core Tools' default is 7071)"),
    app_dir: Path = typer.Option(None, help="The script root: the folder with function_app.py and host.json"),
) -> None:
    """Serve functions/azure/function_app.py as the Azure Functions host does (routes from host.json)."""
    azure_emulator = _emulator_module("azure")
    from tasklift_local.serve import find_functions_dir, serve

    _configure_logging()
    emulator = azure_emulator.AzureEmulator(app_dir or find_functions_dir("azure", "function_app.py"))
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
    aws_emulator = _emulator_module("aws")
    from tasklift_local.serve import find_functions_dir, serve

    _configure_logging()
    emulator = aws_emulator.AwsEmulator(template or find_functions_dir("aws", "template.yaml") / "template.yaml")
    for endpoint in emulator.endpoints:
        route = endpoint.route
        logging.getLogger("tasklift_local").info("%-24s %s %s", route.function, route.method, route.path)
    try:
        serve(emulator.app(), host, port, f"API Gateway + Lambda emulator ({emulator.template})")
    finally:
        emulator.close()
