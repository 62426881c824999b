"""Approvals: parking a request, locking one to decide it, the decision itself, pages.

The decision is a conditional update (`WHERE status = 'pending'`), and the table's
trigger (migration 0007) refuses any other change to a decided row, so an
approval is decided once even if a caller forgot to lock it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from domain.enums import ApprovalStatus
from domain.models import Approval


def park(session: Session, row: dict[str, Any]) -> Approval | None:
    """Insert a pending approval; None if the requester already parked one under its key."""
    inserted = session.execute(
        insert(Approval)
        .values(**row)
        .on_conflict_do_nothing(
            index_elements=["requested_by", "idempotency_key"],
            index_where=Approval.idempotency_key.is_not(None),
        )
        .returning(Approval.id)
    ).first()
    return None if inserted is None else session.get(Approval, inserted[0])


def by_key(session: Session, requested_by: uuid.UUID, key: str) -> Approval | None:
    return session.scalars(
        select(Approval).where(
            Approval.requested_by == requested_by, Approval.idempotency_key == key
        )
    ).first()


def get(session: Session, approval_id: uuid.UUID) -> Approval | None:
    return session.get(Approval, approval_id)


def lock(session: Session, approval_id: uuid.UUID) -> Approval | None:
    """SELECT ... FOR UPDATE: two deciders of one approval take turns."""
    return session.scalars(
        select(Approval)
        .where(Approval.id == approval_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def decide(
    session: Session,
    approval_id: uuid.UUID,
    *,
    status: ApprovalStatus,
    decided_by: uuid.UUID | None,
    decided_at: datetime,
    transfer_id: uuid.UUID | None = None,
) -> bool:
    """Pending -> `status`; False if it was no longer pending."""
    result = session.execute(
        update(Approval)
        .where(Approval.id == approval_id, Approval.status == ApprovalStatus.PENDING)
        .values(
            status=status, decided_by=decided_by, decided_at=decided_at, transfer_id=transfer_id
        )
        .returning(Approval.id)
        .execution_options(synchronize_session="fetch")
    ).first()
    return result is not None


def page(
    session: Session,
    *,
    status: ApprovalStatus | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
    now: datetime,
) -> list[Approval]:
    """Newest first, paged on (created_at, id). A pending row past `expires_at` is
    listed as expired (it is only marked so when someone tries to decide it)."""
    query = select(Approval)
    lapsed = (Approval.status == ApprovalStatus.PENDING) & (Approval.expires_at <= now)
    if status == ApprovalStatus.PENDING:
        query = query.where(Approval.status == status, Approval.expires_at > now)
    elif status == ApprovalStatus.EXPIRED:
        query = query.where((Approval.status == status) | lapsed)
    elif status is not None:
        query = query.where(Approval.status == status)
    if before is not None:
        moment, key = before
        query = query.where(
            (Approval.created_at < moment) | ((Approval.created_at == moment) & (Approval.id < key))
        )
    return list(
        session.scalars(query.order_by(Approval.created_at.desc(), Approval.id.desc()).limit(limit))
    )
