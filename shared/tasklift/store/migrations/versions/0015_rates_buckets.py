"""rate limits (issue 21 part 4): rate_buckets

A task type declared with ``rate_limit="N/period"`` (or named in the ``task_rate_limits`` setting)
is admitted at most N per period: the dispatcher ranks its due intents within their bucket (the
type's, key '', or per ``concurrency_key``) and admits those within the bucket's tokens, then debits
them here in the same transaction (docs/flow-control.md, "Rate limits"). A bucket's row appears at
its first spending; a bucket never spent is full.

Revision ID: 0015_rates
Revises: 0014_schedules
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_rates"
down_revision: str | None = "0014_schedules"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("task_type", sa.Text(), primary_key=True),
        sa.Column("bucket_key", sa.Text(), primary_key=True),
        sa.Column("capacity", sa.Float(), nullable=False),
        sa.Column("period_seconds", sa.Float(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
