"""The backpressure count stays on `transfers_pending_by_source` whatever the statistics.

`settle_accept` counts the source's pending debits (0009, 0013):
`... WHERE t.source_account_id = <source> AND t.status = 'pending' ORDER BY t.seq
LIMIT p_max_pending`. PL/pgSQL plans it with the values five times, then settles on a
generic plan for "some source". With statistics taken while most transfers were
pending (a young table with a backlog, as autovacuum's ANALYZE would see it), that
generic plan walked `transfers_seq_key`, the whole table in `seq` order, filtering on
source and status: every accepted debit read every transfer (10,000 index entries per
accept on a 10,000-row table, in a test).

The count is now written `t.source_account_id = ANY(ARRAY[<source>]) ... ORDER BY
t.source_account_id, t.seq`: with a one-element array the source is no longer a
constant to the planner, so `(source, seq)` order is what only the pending-by-source
index gives (the engine's lane read had the same trap; see
domain/repositories/engine.py). The answer is the same. Nothing else in
`settle_accept` changes; its grants stay (CREATE OR REPLACE, same signature).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

import importlib
from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_0013 = importlib.import_module("domain.migrations.versions.0013_pending_by_source")
_COUNT_BEFORE = """
                 WHERE t.source_account_id = v_src[cardinality(v_src)] AND t.status = 'pending'
                 ORDER BY t.seq LIMIT p_max_pending) p;  -- 0013: ORDER BY, for the index"""
_COUNT_AFTER = """
                 WHERE t.source_account_id = ANY(ARRAY[v_src[cardinality(v_src)]])
                   AND t.status = 'pending'
                 ORDER BY t.source_account_id, t.seq LIMIT p_max_pending) p;  -- 0014"""


def accept_function() -> str:
    """0013's `settle_accept` with 0014's one change."""
    function: str = _0013.accept_function()
    if function.count(_COUNT_BEFORE) != 1:
        raise RuntimeError("0014: expected 0013's backpressure count once in settle_accept")
    return function.replace(_COUNT_BEFORE, _COUNT_AFTER)


def upgrade() -> None:
    op.execute(accept_function())


def downgrade() -> None:
    op.execute(_0013.accept_function())
