"""task_steps (durable steps), and the index of the ``output`` events

``ctx.step(name, fn)`` records each finished step of a task once: its JSON result (or a claim-check
reference to it), the task type's version that recorded it and the attempt. A re-run of the task
reads them back instead of calling the step again (docs/steps-and-output.md).

``ctx.emit(chunk)`` stores its chunks in ``task_events`` as events of kind ``output``, one event per
flushed batch, whose data holds the indexes of its first and last chunk; ``GET /tasks/{id}/output?after=``
finds the batch holding chunk ``after + 1`` by the partial index on ``(task_id, last)``.

Revision ID: 0006_steps
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0006_steps"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_steps",
        sa.Column("task_id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("result", JSONB(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "name", name="pk_task_steps"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_task_steps_task_id_tasks", ondelete="CASCADE"),
    )
    op.create_index(
        "ix_task_events_output",
        "task_events",
        ["task_id", sa.text("(CAST(data ->> 'last' AS bigint))")],
        postgresql_where=sa.text("kind = 'output'"),
    )


def downgrade() -> None:
    op.drop_index("ix_task_events_output", table_name="task_events")
    op.drop_table("task_steps")
