"""Events (the outbox): bulk insert, and each user's stream in commit-safe order."""

from __future__ import annotations

import uuid
from typing import Protocol

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from domain.models import Event


class Cursor(Protocol):
    @property
    def xid(self) -> int: ...
    @property
    def seq(self) -> int: ...


# Only transactions below the oldest still-running one are final: their rows can
# be returned without ever letting a later commit slip in before the cursor.
_FINISHED = text("pg_snapshot_xmin(pg_current_snapshot())")


def for_user(
    session: Session, user_id: uuid.UUID, *, after: Cursor | None, limit: int
) -> list[Event]:
    query = select(Event).where(Event.user_id == user_id, Event.xid < _FINISHED)
    if after is not None:
        query = query.where(
            text("(events.xid, events.seq) > (CAST(:after_xid AS xid8), :after_seq)").bindparams(
                after_xid=str(after.xid), after_seq=after.seq
            )
        )
    return list(session.scalars(query.order_by(Event.xid, Event.seq).limit(limit)))


def get(session: Session, seq: int) -> Event | None:
    return session.get(Event, seq)
