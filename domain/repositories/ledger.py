"""Ledger entries: append and read. There is no update or delete, here or in the database.

Entries are read with what a statement shows beside them (their transfer's kind and
description, the other account's number and kind), joined from the transfer: nothing
of it is copied onto the entry, so the money path writes no more than before.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from domain.models import LedgerEntry

# Constant SQL: every value is a bound parameter; callers add one constant WHERE tail.
_DETAILED = """
    SELECT e.id, e.transfer_id, e.account_id, e.amount, e.currency, e.balance_before,
           e.balance_after, e.sequence, e.created_at, t.kind, t.description,
           c.number AS counterparty_number, c.kind AS counterparty_kind
      FROM ledger_entries e
      JOIN transfers t ON t.id = e.transfer_id
      JOIN accounts c ON c.id = CASE WHEN t.source_account_id = e.account_id
                                     THEN t.destination_account_id
                                     ELSE t.source_account_id END
     WHERE e.account_id = CAST(:account AS uuid)
"""


def append(session: Session, entries: list[LedgerEntry]) -> None:
    session.add_all(entries)


def for_account(
    session: Session, account_id: uuid.UUID, *, before_sequence: int | None, limit: int
) -> Sequence[Row[Any]]:
    """Newest first; `before_sequence` is the cursor from the previous page."""
    return session.execute(
        text(
            _DETAILED  # nosec B608: constant SQL
            + " AND e.sequence < :before ORDER BY e.sequence DESC LIMIT :limit"
        ),
        {
            "account": str(account_id),
            "before": before_sequence if before_sequence is not None else 2**63 - 1,
            "limit": limit,
        },
    ).all()


def in_sequence_range(
    session: Session, account_id: uuid.UUID, *, after: int, through: int, limit: int
) -> Sequence[Row[Any]]:
    """Entries with `after < sequence <= through`, oldest first, at most `limit`: one
    range scan of the (account_id, sequence) key. Statements page through it."""
    return session.execute(
        text(
            _DETAILED  # nosec B608: constant SQL
            + " AND e.sequence > :after AND e.sequence <= :through"
            " ORDER BY e.sequence LIMIT :limit"
        ),
        {"account": str(account_id), "after": after, "through": through, "limit": limit},
    ).all()


_AT = text(
    """
    SELECT e.balance_after, e.sequence FROM ledger_entries e
     WHERE e.account_id = CAST(:account AS uuid) AND e.created_at <= :at
     ORDER BY e.created_at DESC, e.sequence DESC LIMIT 1
    """
)


def position_at(session: Session, account_id: uuid.UUID, at: datetime) -> tuple[int, int]:
    """(balance, sequence) after the account's last entry at or before `at`; (0, 0)
    before its first. One probe of `ledger_entries_account_time_idx` (migration 0010)."""
    row = session.execute(_AT, {"account": str(account_id), "at": at}).first()
    return (0, 0) if row is None else (int(row.balance_after), int(row.sequence))
