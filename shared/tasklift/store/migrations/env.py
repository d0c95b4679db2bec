"""Alembic environment: the URL comes from tasklift settings, never from alembic.ini."""

from __future__ import annotations

from alembic import context

from tasklift.settings import database_url
from tasklift.store.db import make_engine
from tasklift.store.tables import Base

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = context.config.attributes.get("connection")
    if connectable is None:
        engine = make_engine(database_url(), pooled=False)  # one-shot: no idle connections left behind
        with engine.connect() as connection:
            _run(connection)
        engine.dispose()
    else:
        _run(connectable)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        # Serialise concurrent `tasklift migrate` runs (several replicas starting at once).
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7412001)")
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
