"""Audit events: unsealed inserts, the sealer's head row and seals, chain reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from domain.models import AuditChainHead, AuditEvent


class Sealable(Protocol):
    """What the chain hash covers (an AuditEvent row, or a lighter row with these names)."""

    @property
    def occurred_at(self) -> datetime: ...
    @property
    def event_type(self) -> str: ...
    @property
    def actor_id(self) -> uuid.UUID | None: ...
    @property
    def subject_type(self) -> str | None: ...
    @property
    def subject_id(self) -> str | None: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def data(self) -> Any: ...


def insert_unsealed(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    session.execute(insert(AuditEvent), list(rows))


def claim_head(session: Session) -> tuple[int, str] | None:
    """Locks the chain head for this transaction; None if another sealer holds it."""
    row = session.execute(
        select(AuditChainHead.last_seq, AuditChainHead.last_hash)
        .where(AuditChainHead.id == 1)
        .with_for_update(skip_locked=True)
    ).first()
    return None if row is None else (int(row[0]), str(row[1]))


def unsealed_final(session: Session, *, limit: int) -> Sequence[Any]:
    """Unsealed rows of transactions that can no longer commit, in (xid, id) order.

    A transaction still running may yet commit rows with a smaller xid than a
    finished one; waiting until it is below the snapshot's xmin keeps the
    chain order fixed once written.
    """
    return session.execute(
        text(
            "SELECT id, occurred_at, event_type, actor_id, subject_type, subject_id,"
            " request_id, data FROM audit_events"
            " WHERE chain_seq IS NULL AND xid < pg_snapshot_xmin(pg_current_snapshot())"
            " ORDER BY xid, id LIMIT :limit"
        ),
        {"limit": limit},
    ).all()


def write_seals(
    session: Session, seals: Sequence[tuple[int, int, str, str]], *, head: tuple[int, str]
) -> None:
    """(id, chain_seq, prev_hash, hash) per row, and the new head, in two statements."""
    if not seals:
        return
    session.execute(
        text(
            "UPDATE audit_events a SET chain_seq = s.chain_seq, prev_hash = s.prev_hash,"
            " hash = s.hash"
            " FROM unnest(CAST(:ids AS bigint[]), CAST(:seqs AS bigint[]),"
            " CAST(:prevs AS text[]), CAST(:hashes AS text[])) AS s(id, chain_seq, prev_hash, hash)"
            " WHERE a.id = s.id"
        ),
        {
            "ids": [s[0] for s in seals],
            "seqs": [s[1] for s in seals],
            "prevs": [s[2] for s in seals],
            "hashes": [s[3] for s in seals],
        },
    )
    session.execute(
        text("UPDATE audit_chain_head SET last_seq = :seq, last_hash = :hash WHERE id = 1"),
        {"seq": head[0], "hash": head[1]},
    )


def page(
    session: Session, *, event_type: str | None, before_id: int | None, limit: int
) -> list[AuditEvent]:
    """Newest first (unsealed rows included: their chain fields are null)."""
    query = select(AuditEvent)
    if event_type is not None:
        query = query.where(AuditEvent.event_type == event_type)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    return list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))


def iterate_chain(session: Session, *, chunk: int = 5000) -> Iterator[AuditEvent]:
    """Every sealed event in chain order, read in chunks so memory stays flat."""
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
        after = rows[-1].chain_seq or after
        session.expunge_all()


def head(session: Session) -> AuditChainHead:
    return session.scalars(select(AuditChainHead).where(AuditChainHead.id == 1)).one()


def unsealed_older_than(session: Session, cutoff: datetime) -> list[dict[str, Any]]:
    rows = session.execute(
        text(
            "SELECT id, event_type, occurred_at FROM audit_events"
            " WHERE chain_seq IS NULL AND occurred_at < :cutoff ORDER BY id LIMIT 20"
        ),
        {"cutoff": cutoff},
    )
    return [dict(r._mapping) for r in rows]
