"""Transfers: acceptance, the engine's pending queue per source account, and listings."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from domain.models import Account, IdempotencyKey, Transfer


def get(session: Session, transfer_id: uuid.UUID) -> Transfer | None:
    return session.get(Transfer, transfer_id)


def add(session: Session, transfer: Transfer) -> Transfer:
    session.add(transfer)
    session.flush()
    return transfer


def add_with_idempotency_key(session: Session, transfer: Transfer, key: IdempotencyKey) -> None:
    """The transfer, then the key that points at it (no ORM relationship orders them)."""
    session.add(transfer)
    session.flush()
    session.add(key)
    session.flush()


def pending_for_source(
    session: Session, source_account_id: uuid.UUID, *, limit: int, lock: bool = False
) -> list[Transfer]:
    """The oldest pending transfers of one source account, in acceptance order."""
    query = (
        select(Transfer)
        .where(Transfer.source_account_id == source_account_id, Transfer.status == "pending")
        .order_by(Transfer.seq)
        .limit(limit)
    )
    if lock:
        query = query.with_for_update(key_share=True).execution_options(populate_existing=True)
    return list(session.scalars(query))


def sent_since(session: Session, source_account_id: uuid.UUID, since: datetime) -> int:
    """Total of `source_account_id`'s succeeded outgoing transfers completed since `since`."""
    total = session.scalar(
        select(func.coalesce(func.sum(Transfer.amount), 0)).where(
            Transfer.source_account_id == source_account_id,
            Transfer.status == "succeeded",
            Transfer.completed_at >= since,
        )
    )
    return int(total or 0)


def stale_pending_sources(session: Session, *, older_than: datetime) -> list[uuid.UUID]:
    """Source accounts whose oldest pending transfer was accepted before `older_than`."""
    query = (
        select(Transfer.source_account_id)
        .where(Transfer.status == "pending", Transfer.created_at < older_than)
        .distinct()
    )
    return list(session.scalars(query))


def all_transfers() -> Select[Transfer]:
    query: Select[Transfer] = select(Transfer)
    return query


def visible_to(user_id: uuid.UUID) -> Select[Transfer]:
    """Transfers a customer may see: ones they initiated or that touch their accounts."""
    own_accounts = select(Account.id).where(Account.owner_id == user_id)
    return select(Transfer).where(
        or_(
            Transfer.initiated_by == user_id,
            Transfer.source_account_id.in_(own_accounts),
            Transfer.destination_account_id.in_(own_accounts),
        )
    )


def page(
    session: Session,
    query: Select[Transfer],
    *,
    account_id: uuid.UUID | None,
    status: str | None,
    before_seq: int | None,
    limit: int,
) -> list[Transfer]:
    """Newest first; `before_seq` is the cursor from the previous page."""
    if account_id is not None:
        query = query.where(
            or_(
                Transfer.source_account_id == account_id,
                Transfer.destination_account_id == account_id,
            )
        )
    if status is not None:
        query = query.where(Transfer.status == status)
    if before_seq is not None:
        query = query.where(Transfer.seq < before_seq)
    return list(session.scalars(query.order_by(Transfer.seq.desc()).limit(limit)))
