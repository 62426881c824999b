"""A transfer batch's finished count: adding to it, and reading a completed batch's tally.

Both run in the transaction that finished the transfers (the engine's batch, or a
cancel); see migration 0012 for why the count lives on the batch row.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

# Locks the batch rows in id order first (two transactions finishing items of the same
# two batches then cannot deadlock), then adds each batch's newly finished items. In
# READ COMMITTED an UPDATE that waited for a row lock re-reads the row's latest
# version, so the count never loses a concurrent transaction's items.
_COUNT_FINISHED = text(
    """
    WITH d AS (
        SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:ns AS integer[])) AS d(id, n)
    ), locked AS (
        SELECT b.id FROM transfer_batches b
         WHERE b.id = ANY(CAST(:ids AS uuid[]))
         ORDER BY b.id
           FOR NO KEY UPDATE
    )
    UPDATE transfer_batches b
       SET finished_items = b.finished_items + d.n,
           completed_at = CASE WHEN b.finished_items + d.n = b.item_count
                               THEN CAST(:now AS timestamptz) END
      FROM d JOIN locked USING (id)
     WHERE b.id = d.id
    RETURNING b.id, b.atomic, b.initiated_by, b.item_count, b.metadata, b.created_at,
              b.completed_at
    """
)

# Only read for a batch this transaction completed: every other transaction that
# finished one of its items committed before this one got the batch row's lock, and
# this statement's snapshot is taken after that.
_TALLY = text(
    """
    SELECT batch_id, status, count(*) AS n FROM transfers
     WHERE batch_id = ANY(CAST(:ids AS uuid[]))
     GROUP BY batch_id, status
    """
)


def count_finished(
    session: Session, batch_ids: Sequence[uuid.UUID], now: datetime
) -> list[Row[Any]]:
    """Adds one finished item per occurrence in `batch_ids`; returns the batches this
    completed (their `completed_at` is `now`)."""
    finished = Counter(batch_ids)
    if not finished:
        return []
    rows = session.execute(
        _COUNT_FINISHED,
        {"ids": [str(i) for i in finished], "ns": list(finished.values()), "now": now},
    ).all()
    return [r for r in rows if r.completed_at is not None]


def tally(session: Session, batch_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Counter[str]]:
    """Each batch's transfers counted by status."""
    counts: dict[uuid.UUID, Counter[str]] = {i: Counter() for i in batch_ids}
    if batch_ids:
        for row in session.execute(_TALLY, {"ids": [str(i) for i in batch_ids]}):
            counts[row.batch_id][row.status] += int(row.n)
    return counts
