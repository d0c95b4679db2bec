"""task_callbacks, principal_callbacks, webhook_deliveries and the trigger that records deliveries

A task submitted with a ``callback_url`` (or of a type or principal that declares one) has a
``task_callbacks`` row; ``principal_callbacks`` holds a principal's default (``tasklift keys
webhook``). A trigger on ``tasks`` writes a ``webhook_deliveries`` row (the outbox of webhooks) in
the same transaction as every transition into a terminal state, and as every progress milestone
for callbacks that opted in, whichever statement made it: the worker's outcome, the API's cancel,
the reaper's fail or cancel, a bulk operation. docs/webhooks.md.

Revision ID: 0012_hooks
Revises: 0011_bulk
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0012_hooks"
down_revision: str | None = "0011_bulk"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The trigger function. A terminal transition records ``task.succeeded`` / ``task.failed`` /
#: ``task.cancelled`` / ``task.expired``; a progress write that crosses a multiple of 25 % records ``task.progress``
#: (only for callbacks whose events list "progress"). ``task`` is the row as it is now, the
#: snapshot the deliverer renders as the task resource (GET /tasks/{id}); the input is left out.
#: ``webhook-id`` = ``msg_`` + a random UUID, stable across the delivery's retries.
RECORD_DELIVERY = """
CREATE FUNCTION tasklift_record_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cb task_callbacks%ROWTYPE;
    kind text;
    old_pct double precision;
    new_pct double precision;
BEGIN
    SELECT * INTO cb FROM task_callbacks WHERE task_id = NEW.id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('SUCCESS', 'FAILED', 'CANCELLED', 'EXPIRED') THEN
        IF NOT cb.events ? 'terminal' THEN
            RETURN NULL;
        END IF;
        kind := CASE NEW.status WHEN 'SUCCESS' THEN 'task.succeeded' WHEN 'FAILED' THEN 'task.failed'
                WHEN 'EXPIRED' THEN 'task.expired' ELSE 'task.cancelled' END;
    ELSIF NEW.status = 'RUNNING' AND cb.events ? 'progress' THEN
        old_pct := CASE WHEN OLD.status = 'RUNNING' THEN COALESCE((OLD.progress ->> 'percent')::double precision, 0)
                   ELSE 0 END;
        new_pct := COALESCE((NEW.progress ->> 'percent')::double precision, 0);
        IF floor(new_pct / 25) <= floor(old_pct / 25) OR new_pct >= 100 THEN
            RETURN NULL;
        END IF;
        kind := 'task.progress';
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (id, task_id, event_type, url, task, next_attempt_at)
    VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.id, kind, cb.url,
            to_jsonb(NEW) - 'input' - 'traceparent' - 'worker', now());
    RETURN NULL;
END
$$
"""

TRIGGER = """
CREATE TRIGGER tasks_record_webhook AFTER UPDATE OF status, progress ON tasks
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.progress IS DISTINCT FROM NEW.progress)
EXECUTE FUNCTION tasklift_record_webhook()
"""


def upgrade() -> None:
    op.create_table(
        "task_callbacks",
        sa.Column("task_id", UUID(as_uuid=True), sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", JSONB(), server_default=sa.text("'[\"terminal\"]'::jsonb"), nullable=False),
    )
    op.create_table(
        "principal_callbacks",
        sa.Column("principal", sa.Text(), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", JSONB(), server_default=sa.text("'[\"terminal\"]'::jsonb"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("task_id", UUID(as_uuid=True), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("task", JSONB(), nullable=False),
        sa.Column("state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("retry_from", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index("ix_webhook_deliveries_task", "webhook_deliveries", ["task_id", "created_at"])
    op.execute(RECORD_DELIVERY)
    op.execute(TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS tasks_record_webhook ON tasks")
    op.execute("DROP FUNCTION IF EXISTS tasklift_record_webhook()")
    op.drop_table("webhook_deliveries")
    op.drop_table("principal_callbacks")
    op.drop_table("task_callbacks")
