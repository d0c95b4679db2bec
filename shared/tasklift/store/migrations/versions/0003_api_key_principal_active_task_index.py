"""api key principal, index of unfinished tasks per owner

``api_keys.principal`` lets several keys act as one principal, so a key can be rotated (new key,
clients switch, old key revoked) without its tasks changing owner. The partial index keeps the
per-principal count of PENDING + RUNNING tasks, read on every submit, independent of history.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("principal", sa.Text(), nullable=True))
    op.execute("UPDATE api_keys SET principal = 'key:' || name")
    op.alter_column("api_keys", "principal", nullable=False)
    op.create_index(
        "ix_tasks_active_owner",
        "tasks",
        ["owner"],
        postgresql_where=sa.text("status IN ('PENDING', 'RUNNING')"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_active_owner", table_name="tasks")
    op.drop_column("api_keys", "principal")
