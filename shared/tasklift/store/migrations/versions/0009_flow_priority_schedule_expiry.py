"""flow control (issue 21): tasks.priority, tasks.scheduled_for, tasks.expires_at

The dispatcher admits a task to the Celery queue only when it is due (``scheduled_for`` passed)
and not expired, by priority then submit time (docs/flow-control.md); the expiry sweep ends a
PENDING task never started whose ``expires_at`` passed as EXPIRED. Partial indexes serve both:
the expiry sweep's on PENDING tasks with a deadline, the admission window's count of a queue's
messages sent and not yet claimed.

Revision ID: 0009_flow
Revises: 0008_growth
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_flow"
down_revision: str | None = "0008_growth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("priority", sa.SmallInteger(), server_default="0", nullable=False))
    op.add_column("tasks", sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True))
    op.add_column("tasks", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint("priority_range", "tasks", "priority BETWEEN 0 AND 9")
    op.create_index(
        "ix_tasks_pending_expiry",
        "tasks",
        ["expires_at"],
        postgresql_where=sa.text("status = 'PENDING' AND expires_at IS NOT NULL AND started_at IS NULL"),
    )
    op.create_index(
        "ix_task_outbox_queue_sent", "task_outbox", ["queue"], postgresql_where=sa.text("published_at IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("ix_task_outbox_queue_sent", table_name="task_outbox")
    op.drop_index("ix_tasks_pending_expiry", table_name="tasks")
    op.drop_constraint(op.f("ck_tasks_priority_range"), "tasks", type_="check")  # op.f: the final name
    op.drop_column("tasks", "expires_at")
    op.drop_column("tasks", "scheduled_for")
    op.drop_column("tasks", "priority")
