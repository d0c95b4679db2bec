"""cron schedules (issue 21 part 5): schedules, schedule_runs

A schedule fires a normal task at each of its times (a 5-field cron expression in an IANA time zone,
or a fixed interval). The reaper finds the due ones with ONE index probe
(``ix_schedules_due``: ``next_fire_at WHERE NOT paused``), locks them with SKIP LOCKED, and in the
same transaction inserts each firing's task, its Idempotency-Key (``schedule:<id>:<fire time>``),
its ``schedule_runs`` row (primary key: schedule and fire time, so a firing can never be doubled)
and advances ``next_fire_at`` (docs/flow-control.md, "Schedules").

Revision ID: 0014_schedules
Revises: 0013_fair
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0014_schedules"
down_revision: str | None = "0013_fair"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("task_type", sa.Text(), nullable=False),
        sa.Column("payload", JSONB(), nullable=False),
        sa.Column("flow", JSONB(), nullable=False),  # priority, ttl_seconds, concurrency_key, fairness_key
        sa.Column("cron", sa.Text(), nullable=True),
        sa.Column("timezone", sa.Text(), nullable=False, server_default="UTC"),
        sa.Column("interval_seconds", sa.Float(), nullable=True),
        sa.Column("catchup", sa.Text(), nullable=False, server_default="latest"),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_task_id", UUID(as_uuid=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("fired", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("(cron IS NULL) <> (interval_seconds IS NULL)", name="one_timing"),
        sa.CheckConstraint("catchup IN ('latest', 'all')", name="catchup_policy"),
        sa.UniqueConstraint("owner", "name", name="uq_schedules_owner_name"),
    )
    op.create_index("ix_schedules_due", "schedules", ["next_fire_at"], postgresql_where=sa.text("NOT paused"))
    op.create_index("ix_schedules_owner_created", "schedules", ["owner", "created_at", "id"])
    op.create_table(
        "schedule_runs",
        sa.Column("schedule_id", UUID(as_uuid=True), sa.ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False),
        sa.Column("fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("task_id", UUID(as_uuid=True), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("schedule_id", "fire_at"),
    )
    op.create_index("ix_schedule_runs_task", "schedule_runs", ["task_id"])


def downgrade() -> None:
    op.drop_table("schedule_runs")
    op.drop_table("schedules")
