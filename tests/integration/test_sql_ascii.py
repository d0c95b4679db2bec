"""A database created as SQL_ASCII (initdb without a locale, as a bare Debian image does) still
reads as text: psycopg would return bytes there, so the engine asks for UTF8 as asyncpg does.
Found by compose under podman, where such a PostgreSQL made `tasklift migrate` fail in SQLAlchemy's
server-version check."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tasklift.embedded import EmbeddedPostgres
from tasklift.store.db import make_engine


@pytest.fixture
def sql_ascii_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    name = f"ascii_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(
            f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        )
    yield pg_server.url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


def test_a_sql_ascii_database_reads_as_text(sql_ascii_url: str, tasklift_env: dict[str, str]) -> None:
    engine = make_engine(sql_ascii_url, pooled=False)
    try:
        with engine.connect() as conn:  # SQLAlchemy parses version() on the first connection
            assert conn.exec_driver_sql("SHOW server_encoding").scalar() == "SQL_ASCII"
            assert conn.exec_driver_sql("SELECT 'tâche ✓'").scalar() == "tâche ✓"
    finally:
        engine.dispose()
