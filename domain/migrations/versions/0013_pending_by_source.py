"""Pending transfers by source: an index for the two questions asked per transfer.

Two hot statements ask "what is pending from this source?":
- `settle_accept`'s backpressure count (0009), once per accepted debit;
- the engine's `older_elsewhere` (FIFO across lanes), once per transfer it locks.

With only `transfers_pending_by_lane (lane, seq)` to go on, PostgreSQL answered both
by reading every pending transfer of every lane and filtering on the source: a cost
that grows with the backlog, paid per transfer. Under a backlog of 20,000 (batches
accepted faster than applied) the count took 15 ms per item, 92 % of the accept
path's database time, and accepts slowed as the backlog grew.

- `transfers_pending_by_source (source_account_id, seq) WHERE status = 'pending'`
  makes each an index probe into the source's own pending rows. Built CONCURRENTLY
  (outside the migration's transaction), so a live database keeps accepting
  transfers while it is built; a rerun after an interrupted build starts it afresh.
- `transfers_source_completed_idx` (0002, succeeded transfers by source and time) is
  dropped: it served the daily limit's sum of today's transfers, which 0004 replaced
  by `accounts.daily_sent`. Nothing reads it; every applied transfer paid an entry.
- `settle_accept` is 0010's, with one change: the count reads the source's pending
  transfers `ORDER BY seq`. The answer is the same; the order is what only the new
  index gives for free, so the planner keeps choosing it even when its statistics
  are stale or skewed (a settlement account that is the source of most rows made
  the plan for a generic source fall back to the lane index: 2 ms a count).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "transfers_pending_by_source"
OBSOLETE = "transfers_source_completed_idx"

_0010 = importlib.import_module("domain.migrations.versions.0010_reporting_metadata_closing")
_COUNT_BEFORE = """
                 WHERE t.source_account_id = v_src[cardinality(v_src)] AND t.status = 'pending'
                 LIMIT p_max_pending) p;"""
_COUNT_AFTER = """
                 WHERE t.source_account_id = v_src[cardinality(v_src)] AND t.status = 'pending'
                 ORDER BY t.seq LIMIT p_max_pending) p;  -- 0013: ORDER BY, for the index"""


def _once(text: str, old: str, new: str) -> str:
    """`text` with `old` (which must occur exactly once) replaced by `new`."""
    if text.count(old) != 1:
        raise RuntimeError(f"0013: expected one {old.strip()!r} in 0010's settle_accept")
    return text.replace(old, new)


def _replace(function: str) -> str:
    """0010's definition as CREATE OR REPLACE (same signature, so its grants stay)."""
    return _once(
        function, "CREATE FUNCTION settle_accept(", "CREATE OR REPLACE FUNCTION settle_accept("
    )


def accept_function() -> str:
    """0010's `settle_accept` with 0013's one change."""
    return _replace(_once(_0010.ACCEPT_FUNCTION, _COUNT_BEFORE, _COUNT_AFTER))


def upgrade() -> None:
    op.execute(accept_function())
    with op.get_context().autocommit_block():
        # A concurrent build that was interrupted leaves an invalid index of this name
        # behind (and this revision unrecorded): build it afresh.
        op.drop_index(INDEX, table_name="transfers", postgresql_concurrently=True, if_exists=True)
        op.create_index(
            INDEX,
            "transfers",
            ["source_account_id", "seq"],
            postgresql_where=sa.text("status = 'pending'"),
            postgresql_concurrently=True,
        )
        op.drop_index(
            OBSOLETE, table_name="transfers", postgresql_concurrently=True, if_exists=True
        )


def downgrade() -> None:
    op.execute(_replace(_0010.ACCEPT_FUNCTION))
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="transfers", postgresql_concurrently=True)
        op.create_index(
            OBSOLETE,
            "transfers",
            ["source_account_id", "completed_at"],
            postgresql_where=sa.text("status = 'succeeded'"),
            postgresql_concurrently=True,
        )
