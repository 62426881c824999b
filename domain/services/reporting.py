"""Reporting on accounts: detailed entries, the balance at an instant, statements (JSON, CSV).

A statement covers `(from, to]`: its opening balance is the balance at `from`, its
closing balance the balance at `to` (exactly what `balance?at=` answers), and its
entries are the account's entries between those two positions in *sequence*. As
sequences are gapless and each entry continues the previous balance (both enforced
by the database), closing = opening + the entries holds by construction.

Statements never hold a whole period in memory when streamed: the CSV is produced
page by page (keyset pages over `(account_id, sequence)`), each page read in a
short session of its own, so memory stays flat and no connection is held while the
client reads.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from domain.enums import AccountKind
from domain.errors import InvalidRequest
from domain.models import User
from domain.repositories import ledger as ledger_repo
from domain.resources import AccountResource, BalanceResource, EntryResource, StatementResource
from domain.services import accounts

# A JSON statement is one document; past this many entries, ask for the CSV (streamed).
MAX_JSON_STATEMENT_ENTRIES = 10_000
CSV_PAGE_SIZE = 1000
CSV_COLUMNS = (
    "sequence",
    "created_at",
    "transfer_id",
    "kind",
    "description",
    "counterparty_account_number",
    "amount",
    "currency",
    "balance_before",
    "balance_after",
)


def shown_counterparty(number: str | None, kind: str | None, *, sees_all: bool) -> str | None:
    """The counterparty of a transfer between customers is named to both sides (the payer
    typed it; a payee's statement names the payer, as a bank statement does); a
    settlement account only to operators."""
    return None if kind == AccountKind.SYSTEM and not sees_all else number


def entry_resource(entry: Mapping[Any, Any], *, sees_all: bool) -> EntryResource:
    """An entry as a caller sees it (see `shown_counterparty`)."""
    counterparty = shown_counterparty(
        entry.get("counterparty_number"), entry.get("counterparty_kind"), sees_all=sees_all
    )
    return EntryResource.model_validate({**entry, "counterparty_account_number": counterparty})


def list_entries(
    *, session: Session, user: User, account_id: uuid.UUID, before_sequence: int | None, limit: int
) -> list[EntryResource]:
    accounts.get_visible_account(session=session, user=user, account_id=account_id)
    rows = ledger_repo.for_account(
        session, account_id, before_sequence=before_sequence, limit=limit
    )
    sees_all = user.role.sees_everything
    return [entry_resource(row._mapping, sees_all=sees_all) for row in rows]


def balance_at(
    *, session: Session, user: User, account_id: uuid.UUID, at: datetime
) -> BalanceResource:
    accounts.get_visible_account(session=session, user=user, account_id=account_id)
    balance, sequence = ledger_repo.position_at(session, account_id, at)
    return BalanceResource(balance=balance, as_of=at, sequence=sequence)


@dataclass(frozen=True)
class StatementPlan:
    """A statement fixed at its start: the account, both ends and their positions."""

    account: AccountResource
    account_id: uuid.UUID
    sees_all: bool
    start: datetime
    end: datetime
    opening_balance: int
    opening_sequence: int
    closing_balance: int
    closing_sequence: int

    @property
    def entry_count(self) -> int:
        return self.closing_sequence - self.opening_sequence


def plan_statement(
    *, session: Session, user: User, account_id: uuid.UUID, start: datetime, end: datetime
) -> StatementPlan:
    account = accounts.get_visible_account(session=session, user=user, account_id=account_id)
    if start >= end:
        raise InvalidRequest(
            "`from` must be before `to`; both are RFC 3339 instants with an offset",
            code="invalid_period",
        )
    opening, opening_seq = ledger_repo.position_at(session, account_id, start)
    closing, closing_seq = ledger_repo.position_at(session, account_id, end)
    # Entry times follow their sequence (each batch stamps its entries after taking the
    # account's lock, so after the previous batch committed); should a clock ever step
    # back, the statement still spans whole sequences and stays consistent.
    closing_seq = max(closing_seq, opening_seq)
    if closing_seq == opening_seq:
        closing = opening
    return StatementPlan(
        account=AccountResource.model_validate(account),
        account_id=account.id,
        sees_all=user.role.sees_everything,
        start=start,
        end=end,
        opening_balance=opening,
        opening_sequence=opening_seq,
        closing_balance=closing,
        closing_sequence=closing_seq,
    )


def statement(
    *, session: Session, user: User, account_id: uuid.UUID, start: datetime, end: datetime
) -> StatementResource:
    """The statement as one JSON document (up to MAX_JSON_STATEMENT_ENTRIES entries)."""
    plan = plan_statement(session=session, user=user, account_id=account_id, start=start, end=end)
    if plan.entry_count > MAX_JSON_STATEMENT_ENTRIES:
        raise InvalidRequest(
            f"the period holds {plan.entry_count} entries, more than a JSON statement's "
            f"{MAX_JSON_STATEMENT_ENTRIES}; ask for `Accept: text/csv` (streamed) or a "
            "shorter period",
            code="statement_too_large",
        )
    rows = ledger_repo.in_sequence_range(
        session,
        account_id,
        after=plan.opening_sequence,
        through=plan.closing_sequence,
        limit=MAX_JSON_STATEMENT_ENTRIES,
    )
    return StatementResource.model_validate(
        {
            "account": plan.account,
            "from": start,
            "to": end,
            "opening_balance": plan.opening_balance,
            "closing_balance": plan.closing_balance,
            "entries": [entry_resource(r._mapping, sees_all=plan.sees_all) for r in rows],
        }
    )


def _cell(value: object) -> str:
    """CSV text that a spreadsheet shows as text: a cell starting with = + - @ (or a
    tab or CR) would be read as a formula (CSV injection), so it gets a leading '."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_chunks(
    factory: sessionmaker[Session], plan: StatementPlan, *, page_size: int = CSV_PAGE_SIZE
) -> Iterator[str]:
    """The statement's entries as CSV text, one chunk per page of `page_size` entries.

    Each page is one keyset query in a short session of its own; only the current page
    is ever in memory."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    after = plan.opening_sequence
    while True:
        with factory() as session:
            rows = ledger_repo.in_sequence_range(
                session,
                plan.account_id,
                after=after,
                through=plan.closing_sequence,
                limit=page_size,
            )
        # Straight from the rows (no resource per entry: this loop runs once per entry
        # of a possibly huge statement), with the same visibility rule.
        writer.writerows(
            (
                row.sequence,
                row.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                row.transfer_id,
                row.kind,
                _cell(row.description),
                shown_counterparty(
                    row.counterparty_number, row.counterparty_kind, sees_all=plan.sees_all
                )
                or "",
                row.amount,
                row.currency,
                row.balance_before,
                row.balance_after,
            )
            for row in rows
        )
        chunk = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if chunk:
            yield chunk
        if len(rows) < page_size:
            return
        after = int(rows[-1].sequence)
