"""A batch knows when its last transfer finished: `batch.completed`, exactly once.

- `transfer_batches.finished_items`: how many of the batch's transfers reached a
  terminal state (succeeded, failed, canceled). The transaction that finishes items
  adds their number to it, in the same transaction, so a rollback takes both back.
  The UPDATE takes the batch row's lock, so two lanes finishing the last items of one
  batch at the same moment are serialised on it: exactly one of them brings the count
  to `item_count`, and that one writes the `batch.completed` event.
- `transfer_batches.completed_at`: set by that transaction.
- The database enforces the counter's sense: never above `item_count`, never
  decreasing, `completed_at` set exactly when it is full; and nothing else of a batch
  changes after it was accepted.
- Existing batches are counted from their transfers.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GUARD = """
CREATE FUNCTION settle_guard_batch_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.atomic, NEW.initiated_by, NEW.item_count, NEW.created_at, NEW.metadata)
       IS DISTINCT FROM
       (OLD.id, OLD.atomic, OLD.initiated_by, OLD.item_count, OLD.created_at, OLD.metadata)
    THEN
        RAISE EXCEPTION 'a transfer batch is immutable once accepted'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.finished_items < OLD.finished_items
       OR (OLD.completed_at IS NOT NULL AND NEW.completed_at IS DISTINCT FROM OLD.completed_at)
    THEN
        RAISE EXCEPTION 'a batch''s finished count only grows, and it completes once'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER transfer_batches_guard BEFORE UPDATE ON transfer_batches
    FOR EACH ROW EXECUTE FUNCTION settle_guard_batch_update();
"""


def upgrade() -> None:
    op.add_column(
        "transfer_batches",
        sa.Column("finished_items", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column(
        "transfer_batches", sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(
        """
        UPDATE transfer_batches b
           SET finished_items = f.finished,
               completed_at = CASE WHEN f.finished = b.item_count
                                 THEN coalesce(f.last, b.created_at) END
          FROM (SELECT batch_id, count(*) AS finished, max(completed_at) AS last
                  FROM transfers
                 WHERE batch_id IS NOT NULL AND status IN ('succeeded', 'failed', 'canceled')
                 GROUP BY batch_id) AS f
         WHERE f.batch_id = b.id
        """
    )
    op.create_check_constraint(
        "transfer_batches_finished_valid",
        "transfer_batches",
        "finished_items BETWEEN 0 AND item_count"
        " AND (completed_at IS NOT NULL) = (finished_items = item_count)",
    )
    op.execute(GUARD)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS transfer_batches_guard ON transfer_batches")
    op.execute("DROP FUNCTION IF EXISTS settle_guard_batch_update()")
    op.drop_constraint("transfer_batches_finished_valid", "transfer_batches")
    op.drop_column("transfer_batches", "completed_at")
    op.drop_column("transfer_batches", "finished_items")
