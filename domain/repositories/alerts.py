"""Balance alerts: CRUD for the routes, and the engine's two set-based statements."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Row, select, text, tuple_
from sqlalchemy.orm import Session

from domain.models import BalanceAlert
from domain.repositories.webhooks import Position


def count_change(session: Session, account_id: uuid.UUID, delta: int) -> Row[Any]:
    """Moves the account's alert count by `delta`; returns its balance and new count.

    The UPDATE takes the account's row lock (the engine's FOR NO KEY UPDATE conflicts
    with it), so an alert is created or removed between two engine batches of the
    account, never during one; the balance returned is the one the alert starts from.
    """
    return session.execute(
        text(
            "UPDATE accounts SET balance_alert_count = balance_alert_count + :delta"
            " WHERE id = :id RETURNING balance, balance_alert_count"
        ),
        {"id": account_id, "delta": delta},
    ).one()


def add(session: Session, alert: BalanceAlert) -> BalanceAlert:
    session.add(alert)
    session.flush()
    return alert


def get(session: Session, alert_id: uuid.UUID) -> BalanceAlert | None:
    return session.get(BalanceAlert, alert_id)


def delete(session: Session, alert: BalanceAlert) -> None:
    session.delete(alert)
    session.flush()


def of_account(
    session: Session,
    account_id: uuid.UUID,
    *,
    created_by: uuid.UUID | None,
    after: Position | None,
    limit: int,
) -> list[BalanceAlert]:
    """Oldest first; only `created_by`'s when given."""
    query = select(BalanceAlert).where(BalanceAlert.account_id == account_id)
    if created_by is not None:
        query = query.where(BalanceAlert.created_by == created_by)
    if after is not None:
        query = query.where(tuple_(BalanceAlert.created_at, BalanceAlert.id) > tuple_(*after))
    query = query.order_by(BalanceAlert.created_at, BalanceAlert.id).limit(limit)
    return list(session.scalars(query))


def for_engine(session: Session, account_ids: Collection[uuid.UUID]) -> Sequence[Row[Any]]:
    """Every alert of these accounts (the engine holds their locks), oldest first."""
    return session.execute(
        text(
            "SELECT id, account_id, created_by, below, above, rearm_margin, below_armed,"
            " above_armed, created_at FROM balance_alerts"
            " WHERE account_id = ANY(CAST(:ids AS uuid[])) ORDER BY created_at, id"
        ),
        {"ids": [str(i) for i in account_ids]},
    ).all()


def save_armed(
    session: Session, states: Sequence[tuple[uuid.UUID, bool | None, bool | None]]
) -> None:
    """(id, below_armed, above_armed) of the alerts whose state changed, in one statement."""
    if not states:
        return
    session.execute(
        text(
            "UPDATE balance_alerts b SET below_armed = s.below_armed, above_armed = s.above_armed"
            " FROM unnest(CAST(:ids AS uuid[]), CAST(:below AS boolean[]),"
            " CAST(:above AS boolean[])) AS s(id, below_armed, above_armed)"
            " WHERE b.id = s.id"
        ),
        {
            "ids": [str(s[0]) for s in states],
            "below": [s[1] for s in states],
            "above": [s[2] for s in states],
        },
    )
