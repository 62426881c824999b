"""Audit events and the chain head row that serialises appends."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.models import AuditChainHead, AuditEvent


def lock_head(session: Session) -> AuditChainHead:
    head = session.scalars(
        select(AuditChainHead)
        .where(AuditChainHead.id == 1)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    return head


def add_all(session: Session, events: list[AuditEvent]) -> None:
    session.add_all(events)


def page(
    session: Session, *, event_type: str | None, before_seq: int | None, limit: int
) -> list[AuditEvent]:
    query = select(AuditEvent)
    if event_type is not None:
        query = query.where(AuditEvent.event_type == event_type)
    if before_seq is not None:
        query = query.where(AuditEvent.chain_seq < before_seq)
    return list(session.scalars(query.order_by(AuditEvent.chain_seq.desc()).limit(limit)))


def iterate_chain(session: Session, *, chunk: int = 5000) -> Iterator[AuditEvent]:
    """Every event in chain order, read in chunks so memory stays flat."""
    after = 0
    while True:
        rows = list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.chain_seq > after)
                .order_by(AuditEvent.chain_seq)
                .limit(chunk)
            )
        )
        if not rows:
            return
        yield from rows
        after = rows[-1].chain_seq
        session.expunge_all()


def head(session: Session) -> AuditChainHead:
    return session.scalars(select(AuditChainHead).where(AuditChainHead.id == 1)).one()
