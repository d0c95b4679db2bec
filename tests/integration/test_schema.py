"""The migrated schema is the models' schema: what Alembic's autogenerate would add or drop is nothing.

Every table, column, index (with its partial-index predicate) and constraint that
``tasklift.store.tables`` declares is what ``tasklift migrate`` builds, so code written against the
models (and the indexes their comments promise) meets the same database a deployment runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tasklift.store.tables import Base


def test_migrations_build_the_models_schema(db: sa.Engine) -> None:
    with db.connect() as conn:
        # Tables of the tests' own (test_effects) are not the product's schema.
        def ours(name: str | None, kind: str, _: object) -> bool:
            return kind != "table" or name in Base.metadata.tables

        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": ours})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_listing_and_retention_indexes_exist(db: sa.Engine) -> None:
    """The growth indexes (migration 0008_growth) are there, with the retention one partial."""
    with db.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tasks'")).all())
    for name in ("ix_tasks_created", "ix_tasks_status_created", "ix_tasks_task_type_created",
                 "ix_tasks_owner_status_created"):  # fmt: skip
        assert name in rows
    assert "WHERE (completed_at IS NOT NULL)" in rows["ix_tasks_completed"]


def test_every_migration_goes_down_to_the_base_and_up_again(db: sa.Engine) -> None:
    """Each migration's downgrade undoes its upgrade: the whole chain down to nothing, then up to the
    models' schema again (a downgrade that names an object wrongly fails here, not in an outage)."""
    from alembic import command

    from tasklift.store.migrate import alembic_config, upgrade

    command.downgrade(alembic_config(), "base")
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('tasks')")).scalar() is None
    upgrade()
    test_migrations_build_the_models_schema(db)
