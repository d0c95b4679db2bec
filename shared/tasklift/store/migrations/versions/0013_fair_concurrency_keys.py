"""concurrency keys and fair shares (issue 21 parts 3, 2): tasks.concurrency_key, .concurrency_limit, .fairness_key

A task of a type declared with ``@task(..., concurrency_limit=N)`` and submitted with a
``concurrency_key`` runs only while fewer than N tasks of its (type, key) are RUNNING: the
dispatcher admits it under that count (plus the ones admitted and not yet claimed) and the lease
re-checks it under an advisory lock of the key (docs/flow-control.md). The limit is copied onto the
row at submit, so the dispatcher and the lease need no registry. Partial indexes serve the counts:
the RUNNING tasks of a key (the lease's and the admission's), the PENDING ones (admitted-unclaimed).
Under an admission window the dispatcher admits a queue's tasks round-robin across
``coalesce(fairness_key, owner)`` (no index: it ranks the admissible intents it reads anyway).

Revision ID: 0013_fair
Revises: 0012_hooks
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_fair"
down_revision: str | None = "0012_hooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("concurrency_key", sa.Text(), nullable=True))
    op.add_column("tasks", sa.Column("concurrency_limit", sa.Integer(), nullable=True))
    op.add_column("tasks", sa.Column("fairness_key", sa.Text(), nullable=True))
    op.create_check_constraint(
        "concurrency_limit_positive", "tasks", "concurrency_limit IS NULL OR concurrency_limit > 0"
    )
    op.create_index(
        "ix_tasks_concurrency_running",
        "tasks",
        ["task_type", "concurrency_key"],
        postgresql_where=sa.text("status = 'RUNNING' AND concurrency_key IS NOT NULL"),
    )
    op.create_index(
        "ix_tasks_concurrency_pending",
        "tasks",
        ["task_type", "concurrency_key"],
        postgresql_where=sa.text("status = 'PENDING' AND concurrency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_concurrency_pending", table_name="tasks")
    op.drop_index("ix_tasks_concurrency_running", table_name="tasks")
    op.drop_constraint(op.f("ck_tasks_concurrency_limit_positive"), "tasks", type_="check")  # op.f: the final name
    op.drop_column("tasks", "fairness_key")
    op.drop_column("tasks", "concurrency_limit")
    op.drop_column("tasks", "concurrency_key")
