"""Transfers: acceptance, the engine's pending queue per source account, and listings."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, Select, func, literal_column, or_, select, update
from sqlalchemy.orm import Session

from domain.enums import TransferKind, TransferStatus
from domain.models import Account, Transfer, TransferBatch


def get(session: Session, transfer_id: uuid.UUID) -> Transfer | None:
    return session.get(Transfer, transfer_id)


def _due() -> ColumnElement[bool]:
    """Not scheduled for later (`execute_at`): the engine may apply it now."""
    return or_(Transfer.execute_at.is_(None), Transfer.execute_at <= func.now())


def stale_pending_slots(session: Session, *, older_than: datetime) -> list[int]:
    """Lane slots holding a due pending transfer accepted before `older_than`: a
    scheduled transfer counts once its `execute_at` has come (so the sweeper is what
    applies it on time, without a task per transfer)."""
    query = (
        select(Transfer.lane)
        .where(
            Transfer.status == TransferStatus.PENDING,
            Transfer.created_at < older_than,
            _due(),
        )
        .distinct()
    )
    return [int(lane) for lane in session.scalars(query)]


def get_batch(session: Session, batch_id: uuid.UUID) -> TransferBatch | None:
    return session.get(TransferBatch, batch_id)


def of_batch(session: Session, batch_id: uuid.UUID) -> list[Transfer]:
    query = select(Transfer).where(Transfer.batch_id == batch_id).order_by(Transfer.batch_index)
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


@dataclass(frozen=True, kw_only=True)
class TransferFilters:
    """What a listing of transfers may be narrowed by; every filter given must hold."""

    account_id: uuid.UUID | None = None
    status: TransferStatus | None = None
    kind: TransferKind | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    metadata: Mapping[str, str] = field(default_factory=dict)  # every pair must be present


def filtered(query: Select[Transfer], filters: TransferFilters) -> Select[Transfer]:
    if filters.account_id is not None:
        query = query.where(
            or_(
                Transfer.source_account_id == filters.account_id,
                Transfer.destination_account_id == filters.account_id,
            )
        )
    if filters.status is not None:
        query = query.where(Transfer.status == filters.status)
    if filters.kind is not None:
        query = query.where(Transfer.kind == filters.kind)
    if filters.created_after is not None:
        query = query.where(Transfer.created_at >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(Transfer.created_at < filters.created_before)
    if filters.metadata:
        # Containment (`@>`) is what the GIN index (jsonb_path_ops) answers; the index is
        # partial on `metadata <> '{}'`, repeated here so the planner may use it.
        query = query.where(
            Transfer.metadata_.contains(dict(filters.metadata)),
            Transfer.metadata_ != literal_column("'{}'::jsonb"),
        )
    return query


def page(
    session: Session,
    query: Select[Transfer],
    *,
    filters: TransferFilters,
    before_seq: int | None,
    limit: int,
) -> list[Transfer]:
    """Newest first; `before_seq` is the cursor from the previous page."""
    query = filtered(query, filters)
    if before_seq is not None:
        query = query.where(Transfer.seq < before_seq)
    return list(session.scalars(query.order_by(Transfer.seq.desc()).limit(limit)))


def count_pending_touching(session: Session, account_id: uuid.UUID) -> int:
    """Pending transfers from or to the account (the pending-source partial index and the
    destination index serve the two halves)."""
    query = (
        select(func.count())
        .select_from(Transfer)
        .where(
            Transfer.status == TransferStatus.PENDING,
            or_(
                Transfer.source_account_id == account_id,
                Transfer.destination_account_id == account_id,
            ),
        )
    )
    return int(session.scalar(query) or 0)


def count_failed_with(session: Session, failure_code: str) -> int:
    query = select(func.count()).select_from(Transfer).where(Transfer.failure_code == failure_code)
    return int(session.scalar(query) or 0)


def cancel_if_pending(session: Session, transfer_id: uuid.UUID) -> Transfer | None:
    """pending -> canceled, or None if it is no longer pending.

    Races the engine safely: the engine holds its pending rows FOR UPDATE while it
    applies them, so this UPDATE waits for that batch to commit, then finds the row
    no longer pending; and a drain that comes after a cancel no longer sees the row
    as pending. Either way exactly one of the two wins.
    """
    canceled = session.execute(
        update(Transfer)
        .where(Transfer.id == transfer_id, Transfer.status == TransferStatus.PENDING)
        .values(status=TransferStatus.CANCELED, completed_at=func.now())
        .returning(Transfer.id)
    ).scalar_one_or_none()
    if canceled is None:
        return None
    session.expire_all()
    return session.get(Transfer, transfer_id)


def is_atomic_batch(session: Session, batch_id: uuid.UUID) -> bool:
    return bool(session.scalar(select(TransferBatch.atomic).where(TransferBatch.id == batch_id)))
