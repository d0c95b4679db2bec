"""task_waits and task_signals (ctx.wait_for, ctx.sleep, POST /tasks/{id}/signals/{name})

A WAITING task has one ``task_waits`` row: the step its wait's outcome is recorded as, the signal it
waits for and its deadline (indexed: the dispatcher wakes timeouts and sleeps by one range scan).
A signal sent while its task is not waiting for it is kept in ``task_signals`` for the next wait on
that name (docs/steps-and-output.md, "Waits and signals").

Revision ID: 0010_waits
Revises: 0009_flow
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0010_waits"
down_revision: str | None = "0009_flow"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_waits",
        sa.Column("task_id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("signal", sa.Text(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name="pk_task_waits"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_task_waits_task_id_tasks", ondelete="CASCADE"),
    )
    op.create_index(
        "ix_task_waits_deadline", "task_waits", ["deadline"], postgresql_where=sa.text("deadline IS NOT NULL")
    )
    op.create_table(
        "task_signals",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("task_id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("payload", JSONB(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_task_signals"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_task_signals_task_id_tasks", ondelete="CASCADE"),
    )
    op.create_index("ix_task_signals_task_name", "task_signals", ["task_id", "name", "id"])


def downgrade() -> None:
    op.drop_index("ix_task_signals_task_name", table_name="task_signals")
    op.drop_table("task_signals")
    op.drop_index("ix_task_waits_deadline", table_name="task_waits")
    op.drop_table("task_waits")
