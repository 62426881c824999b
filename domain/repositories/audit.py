"""Audit events: unsealed inserts, the sealer's head row and seals, chain reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from domain.models import AuditChainHead, AuditEvent, AuditSeal


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


# Every row after the last sealed (xid, id) is unsealed: the sealer takes rows in that
# order, and only rows of transactions below the snapshot's xmin, so no row can later
# commit before the last sealed one.
_AFTER_LAST_SEALED = (
    "WITH last AS (SELECT a.xid, a.id FROM audit_seals s JOIN audit_events a"
    " ON a.id = s.audit_id ORDER BY s.chain_seq DESC LIMIT 1)"
    " SELECT {columns} FROM audit_events e"
    " WHERE (e.xid, e.id) > (COALESCE((SELECT xid FROM last), CAST('0' AS xid8)),"
    " COALESCE((SELECT id FROM last), 0))"
)


def unsealed_final(session: Session, *, limit: int) -> Sequence[Any]:
    """Unsealed rows of transactions that can no longer commit, in (xid, id) order.

    A transaction still running may yet commit rows with a smaller xid than a
    finished one; waiting until it is below the snapshot's xmin keeps the
    chain order fixed once written.
    """
    columns = (
        "e.id, e.occurred_at, e.event_type, e.actor_id, e.subject_type, e.subject_id,"
        " e.request_id, e.data"
    )
    return session.execute(
        text(
            _AFTER_LAST_SEALED.format(columns=columns)
            + " AND e.xid < pg_snapshot_xmin(pg_current_snapshot())"
            " ORDER BY e.xid, e.id LIMIT :limit"
        ),
        {"limit": limit},
    ).all()


class Seal(NamedTuple):
    audit_id: int
    chain_seq: int
    prev_hash: str
    hash: str
    key_id: str


def write_seals(session: Session, seals: Sequence[Seal], *, head: tuple[int, str]) -> None:
    """One seal row per event (INSERT only), and the new head, in two statements."""
    if not seals:
        return
    session.execute(
        text(
            "INSERT INTO audit_seals (audit_id, chain_seq, prev_hash, hash, key_id)"
            " SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:seqs AS bigint[]),"
            " CAST(:prevs AS text[]), CAST(:hashes AS text[]), CAST(:kids AS text[]))"
        ),
        {
            "ids": [s.audit_id for s in seals],
            "seqs": [s.chain_seq for s in seals],
            "prevs": [s.prev_hash for s in seals],
            "hashes": [s.hash for s in seals],
            "kids": [s.key_id for s in seals],
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


def iterate_chain(session: Session, *, chunk: int = 5000) -> Iterator[Any]:
    """Every sealed event with its seal, in chain order, in chunks so memory stays flat.

    Each row has the Sealable fields and `chain_seq`, `prev_hash`, `hash`, `key_id`.
    """
    after = 0
    while True:
        rows = session.execute(
            select(
                AuditEvent.id,
                AuditEvent.occurred_at,
                AuditEvent.event_type,
                AuditEvent.actor_id,
                AuditEvent.subject_type,
                AuditEvent.subject_id,
                AuditEvent.request_id,
                AuditEvent.data,
                AuditSeal.chain_seq,
                AuditSeal.prev_hash,
                AuditSeal.hash,
                AuditSeal.key_id,
            )
            .join(AuditSeal, AuditSeal.audit_id == AuditEvent.id)
            .where(AuditSeal.chain_seq > after)
            .order_by(AuditSeal.chain_seq)
            .limit(chunk)
        ).all()
        if not rows:
            return
        yield from rows
        after = rows[-1].chain_seq


def head(session: Session) -> AuditChainHead:
    return session.scalars(select(AuditChainHead).where(AuditChainHead.id == 1)).one()


def unsealed_older_than(session: Session, cutoff: datetime) -> list[dict[str, Any]]:
    rows = session.execute(
        text(
            _AFTER_LAST_SEALED.format(columns="e.id, e.event_type, e.occurred_at")
            + " AND e.occurred_at < :cutoff ORDER BY e.id LIMIT 20"
        ),
        {"cutoff": cutoff},
    )
    return [dict(r._mapping) for r in rows]
