"""outbox intents carry the event sequence number that wrote them

A task's dispatch intent is re-armed by a retry, a re-dispatch or a manual retry. ``intent_seq`` is
the task's event sequence number when the intent was written, so a mark "this message was sent"
names the intent it belongs to and can never land on a newer one (a retry that fails within the
50 ms before the API marks its submit used to be marked sent and never dispatched). The partial
index serves the dispatcher's check of messages marked sent that no worker has claimed.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("task_outbox", sa.Column("intent_seq", sa.BigInteger(), server_default="1", nullable=False))
    op.create_index(
        "ix_task_outbox_published",
        "task_outbox",
        ["published_at"],
        postgresql_where=sa.text("published_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_task_outbox_published", table_name="task_outbox")
    op.drop_column("task_outbox", "intent_seq")
