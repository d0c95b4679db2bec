"""The indexes that keep listings and retention flat as the tables grow (issue 24)

``local/bench/growth.py`` found four statements that scanned the whole ``tasks`` table at 10 M
rows: an admin's ``GET /tasks`` filtered by status or type (no owner to narrow by), a tenant's
filtered by a rare status, and the retention purge's "finished longest ago" (``completed_at``
had no index). Each gets the index its ``ORDER BY created_at DESC, id DESC`` (or ``completed_at``)
can walk, so a page reads its 21 rows and stops.

Building them holds a write lock on ``tasks`` for the time of five index builds (about 4 s per
million tasks here). On a large live database, build them first with ``CREATE INDEX CONCURRENTLY``
(the statements are in docs/operations.md); this migration then skips what exists.

Revision ID: 0008_growth
Revises: 0007_ops
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_growth"
down_revision: str | None = "0007_ops"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: name → (columns, partial-index predicate)
INDEXES: dict[str, tuple[list[str], str | None]] = {
    "ix_tasks_created": (["created_at", "id"], None),
    "ix_tasks_status_created": (["status", "created_at", "id"], None),
    "ix_tasks_task_type_created": (["task_type", "created_at", "id"], None),
    "ix_tasks_owner_status_created": (["owner", "status", "created_at", "id"], None),
    "ix_tasks_completed": (["completed_at"], "completed_at IS NOT NULL"),
}


def upgrade() -> None:
    for name, (columns, where) in INDEXES.items():
        op.create_index(name, "tasks", columns, postgresql_where=sa.text(where) if where else None, if_not_exists=True)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="tasks", if_exists=True)
