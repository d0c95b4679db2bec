"""paused_queues: the queues whose PENDING tasks are held (POST /queues/{queue}:pause)

A worker's claim refuses a task of a paused queue, and the dispatcher and the reconciler leave its
intents alone, so its tasks stay PENDING; resuming re-arms them (docs/queues.md).

Revision ID: 0007_ops
Revises: 0006_steps
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_ops"
down_revision: str | None = "0006_steps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "paused_queues",
        sa.Column("queue", sa.Text(), primary_key=True),
        sa.Column("paused_by", sa.Text(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("paused_queues")
