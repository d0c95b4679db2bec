"""The API's SQL text (store/repository.py) is plain text, and agrees with the tables it reads."""

from __future__ import annotations

from tasklift.store import aio
from tasklift.store import repository as repo
from tasklift.store.tables import tasks


def test_the_task_columns_are_the_tables_columns_in_order() -> None:
    assert tuple(column.name for column in tasks.c) == repo.TASK_COLUMN_NAMES


def test_the_listing_statement_has_only_the_filters_given_in_a_fixed_order() -> None:
    assert "WHERE TRUE ORDER BY" in repo.list_tasks_sql(())
    both = repo.list_tasks_sql(("status", "owner"))
    assert "WHERE owner = :owner AND status = :status ORDER BY created_at DESC, id DESC LIMIT :limit" in both
    assert repo.list_tasks_sql(("owner", "status")) == both  # one statement text per combination


def test_named_parameters_become_asyncpg_positions_once_per_name() -> None:
    sql, names = aio.positional("SELECT :a, :b, :a, CAST(:c AS text)::text, '10:30'")
    assert sql == "SELECT $1, $2, $1, CAST($3 AS text)::text, '10:30'"
    assert names == ("a", "b", "c")


def test_a_sqlalchemy_url_becomes_the_same_libpq_url() -> None:
    url = "postgresql+psycopg://u:p%40ss@db.example:5433/tasks?sslmode=require"
    assert aio.asyncpg_dsn(url) == "postgresql://u:p%40ss@db.example:5433/tasks?sslmode=require"
    assert aio.asyncpg_dsn("postgresql://h/d") == "postgresql://h/d"
