"""tasks.handbacks, and the indexes of the autoscaler's per-queue count

A worker's soft shutdown hands a still-running attempt back to the queue (RUNNING → PENDING); the
attempt is neither a failure nor a lost lease, so it gets its own counter and the retry budget
counts ``attempts - redispatches - handbacks``. The autoscaler (KEDA's postgresql scaler) polls
``tasklift.store.scaling.POOL_LOAD_QUERY`` per queue every 15 s: the RUNNING tasks of the queue
(a partial index, as small as the running set) plus its due dispatch intents.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("handbacks", sa.Integer(), server_default="0", nullable=False))
    op.create_index("ix_tasks_running_queue", "tasks", ["queue"], postgresql_where=sa.text("status = 'RUNNING'"))
    op.create_index("ix_task_outbox_queue_due", "task_outbox", ["queue", "available_at"])


def downgrade() -> None:
    op.drop_index("ix_task_outbox_queue_due", table_name="task_outbox")
    op.drop_index("ix_tasks_running_queue", table_name="tasks")
    op.drop_column("tasks", "handbacks")
