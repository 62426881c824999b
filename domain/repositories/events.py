"""Events (the outbox) and the users interested in a transfer."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.models import Account, Event


def add_all(session: Session, events: list[Event]) -> None:
    session.add_all(events)
    session.flush()


def owners_of(session: Session, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    rows = session.execute(
        select(Account.id, Account.owner_id).where(
            Account.id.in_(list(account_ids)), Account.owner_id.is_not(None)
        )
    )
    return {account_id: owner_id for account_id, owner_id in rows if owner_id is not None}


def for_user(session: Session, user_id: uuid.UUID, *, after_seq: int, limit: int) -> list[Event]:
    query = (
        select(Event)
        .where(Event.user_id == user_id, Event.seq > after_seq)
        .order_by(Event.seq)
        .limit(limit)
    )
    return list(session.scalars(query))


def get(session: Session, seq: int) -> Event | None:
    return session.get(Event, seq)
