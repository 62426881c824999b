"""Ledger entries: append and read. There is no update or delete, here or in the database."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.models import LedgerEntry


def append(session: Session, entries: list[LedgerEntry]) -> None:
    session.add_all(entries)


def for_account(
    session: Session, account_id: uuid.UUID, *, before_sequence: int | None, limit: int
) -> list[LedgerEntry]:
    """Newest first; `before_sequence` is the cursor from the previous page."""
    query = select(LedgerEntry).where(LedgerEntry.account_id == account_id)
    if before_sequence is not None:
        query = query.where(LedgerEntry.sequence < before_sequence)
    return list(session.scalars(query.order_by(LedgerEntry.sequence.desc()).limit(limit)))
