"""bulk_operations: cancel, retry or purge the tasks a filter selects, as an operation of its own (POST /bulk)

The API inserts a row with the filter and the count it matched; the reaper works through the
matching tasks in batches (keyset over task id), recording its cursor and counts in the row after
every batch, so it resumes where it stopped after a crash (docs/bulk.md).

Revision ID: 0011_bulk
Revises: 0010_waits
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0011_bulk"
down_revision: str | None = "0010_waits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bulk_operations",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("scope_owner", sa.Text(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("filter", JSONB(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="PENDING"),
        sa.Column("total", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("done", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("skipped", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("failed", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cursor", UUID(as_uuid=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_bulk_operations_open",
        "bulk_operations",
        ["created_at"],
        postgresql_where=sa.text("status IN ('PENDING', 'RUNNING')"),
    )
    op.create_index("ix_bulk_operations_owner_created", "bulk_operations", ["owner", "created_at"])


def downgrade() -> None:
    op.drop_table("bulk_operations")
