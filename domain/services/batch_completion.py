"""`batch.completed`: once per batch, when its last transfer reaches a terminal state.

Called in every transaction that finishes transfers (the engine's batch write and a
cancel) with the batch ids of the transfers it finished. The count on the batch row
(migration 0012) decides which transaction completed the batch, under the batch row's
lock, so concurrent lanes finishing the last items emit exactly one event, and a
rolled-back transaction emits nothing and counts nothing. The event goes to the
batch's initiator only: the owners of the accounts involved have each transfer's own
event.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from domain.enums import EventType, TransferStatus
from domain.repositories import batches as batches_repo
from domain.resources import BatchEvent, BatchEventData
from domain.services.events import event_row, new_event_id


def finished(
    session: Session, batch_ids: Sequence[uuid.UUID], now: datetime
) -> list[dict[str, Any]]:
    """Counts one finished transfer per entry of `batch_ids` (one per transfer, so a
    batch id repeats); returns the `batch.completed` event rows of the batches that
    this completed."""
    completed = batches_repo.count_finished(session, batch_ids, now)
    tallies = batches_repo.tally(session, [b.id for b in completed])
    rows = []
    for batch in completed:
        tally = tallies[batch.id]
        event = BatchEvent(
            id=new_event_id(),
            type=EventType.BATCH_COMPLETED,
            created_at=now,
            data=BatchEventData(
                id=batch.id,
                atomic=batch.atomic,
                item_count=batch.item_count,
                succeeded=tally[TransferStatus.SUCCEEDED],
                failed=tally[TransferStatus.FAILED],
                canceled=tally[TransferStatus.CANCELED],
                metadata=batch.metadata or {},
                created_at=batch.created_at,
                completed_at=batch.completed_at,
            ),
        )
        rows.append(event_row(event, batch.initiated_by, now))
    return rows
