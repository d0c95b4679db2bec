"""The Typer app every command module registers on."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="tasklift: long-running operations behind HTTP.")
console = Console(stderr=True)
