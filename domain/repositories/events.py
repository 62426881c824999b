"""Events (the outbox): bulk insert, and each user's stream in commit-safe order."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from domain.models import Event

# A trigger on `events` (migration 0011) sends the comma-separated ids of the users
# who got events, on commit. Gateways LISTEN to wake long-polls of /v1/events.
EVENTS_CHANNEL = "settle_events"


class Cursor(Protocol):
    @property
    def xid(self) -> int: ...
    @property
    def seq(self) -> int: ...


def snapshot_bounds(session: Session) -> tuple[int, int]:
    """(xmin, xmax) of the current snapshot.

    Only transactions below xmin (the oldest still running) are final: their rows can
    be returned without ever letting a later commit slip in before the cursor. Taken
    once per read, so the page and its tail agree on what is visible. Every
    transaction that had committed when it was taken is below xmax."""
    row = session.execute(
        text(
            "SELECT pg_snapshot_xmin(s)::text AS xmin, pg_snapshot_xmax(s)::text AS xmax"
            " FROM pg_current_snapshot() AS s"
        )
    ).one()
    return int(row.xmin), int(row.xmax)


def _below(bound: int) -> Any:
    return text("events.xid < CAST(:bound AS xid8)").bindparams(bound=str(bound))


def for_user(
    session: Session,
    user_id: uuid.UUID,
    *,
    after: Cursor | None,
    limit: int,
    bound: int,
    types: Sequence[str] | None = None,
) -> list[Event]:
    query = select(Event).where(Event.user_id == user_id, _below(bound))
    if types:
        query = query.where(Event.type.in_(types))
    if after is not None:
        query = query.where(
            text("(events.xid, events.seq) > (CAST(:after_xid AS xid8), :after_seq)").bindparams(
                after_xid=str(after.xid), after_seq=after.seq
            )
        )
    return list(session.scalars(query.order_by(Event.xid, Event.seq).limit(limit)))


def last_position(session: Session, user_id: uuid.UUID, *, bound: int) -> tuple[int, int] | None:
    """(xid, seq) of the user's last event visible under `bound`, of any type."""
    row = session.execute(
        select(Event.xid, Event.seq)
        .where(Event.user_id == user_id, _below(bound))
        .order_by(Event.xid.desc(), Event.seq.desc())
        .limit(1)
    ).first()
    return None if row is None else (int(row.xid), int(row.seq))


def get(session: Session, seq: int) -> Event | None:
    return session.get(Event, seq)
