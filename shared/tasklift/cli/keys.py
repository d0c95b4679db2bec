"""``tasklift keys create|revoke|list|webhook``: API keys and a principal's default webhook, in the
database the API uses.

Which database: ``TASKLIFT_DATABASE_URL`` when set; otherwise the one ``tasklift dev`` uses: its
PostgreSQL while it runs (found through ``<data dir>/dev.json``), else the embedded PostgreSQL in
the data folder, started for the command (and migrated) and stopped again.

``create`` prints the new key on the last line of its output, alone, so scripts can take it with
``tail -n 1``; the key is shown once and only its SHA-256 digest is stored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from tasklift.cli.base import app, console
from tasklift.settings import get_settings

keys = typer.Typer(no_args_is_help=True, help="Create, revoke and list API keys.")
app.add_typer(keys, name="keys")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
DATA_DIR = typer.Option(None, "--data-dir", help="Data folder of `tasklift dev` (default TASKLIFT_DATA_DIR)")
DEV_PG_PORT = 55432  #: the port `tasklift dev` prefers for its embedded PostgreSQL

out = Console()  # results on stdout; progress and errors on stderr (cli.base.console)


@contextmanager
def _database(data_dir: Path | None) -> Iterator[Engine]:
    """An engine on the API's database (see the module docstring), disposed afterwards."""
    from tasklift.security.dev_state import read_live_state
    from tasklift.settings import database_url
    from tasklift.store.db import make_engine

    settings = get_settings()
    data = (data_dir or settings.data_dir).resolve()
    pg = None
    if settings.database_url:
        url = database_url(settings)
    elif (state := read_live_state(data)) is not None:
        url = state["database_url"]
        console.print(f"using the database of the running `tasklift dev` (pid {state['pid']})")
    else:
        from tasklift.embedded import EmbeddedPostgres
        from tasklift.store.migrate import upgrade

        pg = EmbeddedPostgres(data / "postgres", port=DEV_PG_PORT)
        console.print(f"starting the embedded PostgreSQL in {pg.data_dir}")
        url = pg.start()
        os.environ["TASKLIFT_DATABASE_URL"] = url
        get_settings.cache_clear()
    engine = make_engine(url, pooled=False)
    try:
        if pg is not None:
            upgrade()
        yield engine
    finally:
        engine.dispose()
        if pg is not None:
            pg.stop()
            os.environ.pop("TASKLIFT_DATABASE_URL", None)
            get_settings.cache_clear()


def _check_name(value: str, what: str) -> str:
    if not NAME.match(value):
        raise typer.BadParameter(f"{what} must be 1-100 letters, digits or . _ @ - (starting with a letter or digit)")
    return value


@keys.command("create")
def create(
    name: str = typer.Option(..., "--name", help="Unique name of the key"),
    admin: bool = typer.Option(False, "--admin", help="The key sees and acts on every principal's tasks"),
    principal: str = typer.Option(
        None, "--principal", help="Owner of its tasks, key:<principal> (default: the name; share it to rotate)"
    ),
    data_dir: Path = DATA_DIR,
) -> None:
    """Create an API key and print it (last line). It is not shown again."""
    from tasklift.security.keys_admin import KeyExists, create_key

    _check_name(name, "--name")
    if principal is not None:
        _check_name(principal, "--principal")
    with _database(data_dir) as engine:
        try:
            with engine.begin() as conn:
                new = create_key(conn, name, admin=admin, principal=principal)
        except KeyExists as exc:
            console.print(f"[red]{exc}[/red] (revoked keys keep their name; pick another)")
            raise typer.Exit(1) from None
    kind = "admin key" if new.admin else "key"
    console.print(f"created {kind} [bold]{new.name}[/bold] for principal {new.principal}; store it now:")
    print(new.secret, flush=True)


@keys.command("revoke")
def revoke(name: str = typer.Argument(..., help="Name of the key"), data_dir: Path = DATA_DIR) -> None:
    """Revoke an API key: requests with it are refused (401) from now on."""
    from tasklift.security.keys_admin import revoke_key

    with _database(data_dir) as engine, engine.begin() as conn:
        row = revoke_key(conn, name)
    if row is None:
        console.print(f"[red]no key named {name!r}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked key [bold]{name}[/bold]")


@keys.command("list")
def list_(data_dir: Path = DATA_DIR) -> None:
    """List API keys (names, principals and prefixes; never the keys)."""
    from tasklift.security.keys_admin import list_keys

    with _database(data_dir) as engine, engine.connect() as conn:
        rows = list_keys(conn)
    table = Table("name", "principal", "prefix", "admin", "created", "last used", "revoked")
    for row in rows:
        table.add_row(
            row["name"],
            row["principal"],
            row["prefix"] + "…",
            "yes" if row["admin"] else "",
            _when(row["created_at"]),
            _when(row["last_used_at"]),
            _when(row["revoked_at"]),
        )
    out.print(table)


def _when(value: object) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M}"


@keys.command("webhook")
def webhook(
    principal: str = typer.Argument(..., help="The owner of the tasks: key:<principal>, oidc:<sub> or anonymous"),
    url: str = typer.Option(None, "--url", help="Its default callback_url (docs/webhooks.md)"),
    events: str = typer.Option("terminal", "--events", help="Comma-separated: terminal, progress"),
    clear: bool = typer.Option(False, "--clear", help="Remove its default"),
    data_dir: Path = DATA_DIR,
) -> None:
    """Set, show or clear a principal's default webhook.

    Its submits that name no callback_url, of types that declare none, call it; tasks submitted
    before a change keep what they had. The URL is vetted by the SSRF rules now and at each delivery.
    """
    from tasklift.store import webhooks as store
    from tasklift.tasks import callbacks

    if url is not None and clear:
        raise typer.BadParameter("give --url or --clear, not both")
    wanted = [e.strip() for e in events.split(",") if e.strip()]
    if url is not None:
        if not wanted or any(e not in callbacks.EVENTS for e in wanted):
            raise typer.BadParameter(f"events are {', '.join(callbacks.EVENTS)}", param_hint="--events")
        try:
            callbacks.vet_url(url, get_settings())
        except callbacks.BadCallback as exc:
            console.print(f"[red]refused: {exc.msg}[/red]")
            raise typer.Exit(1) from None
    with _database(data_dir) as engine, engine.begin() as conn:
        if clear:
            if not store.clear_principal_default(conn, principal):
                console.print(f"[red]{principal} has no default webhook[/red]")
                raise typer.Exit(1)
            console.print(f"cleared the default webhook of {principal}")
            return
        if url is not None:
            store.set_principal_default(conn, principal, url, list(dict.fromkeys(wanted)))
        row = store.principal_default(conn, principal)
    if row is None:
        console.print(f"{principal} has no default webhook")
        return
    out.print(f"{principal}: {row['url']} ({', '.join(row['events'])})")
