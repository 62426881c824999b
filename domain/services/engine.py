"""The transfer engine: drains one source account's pending transfers in acceptance order.

A worker calls `apply_next_batch` repeatedly, one transaction per call, until its
result says nothing more is pending. Each batch locks the source account and every
destination in id order (so concurrent drains never deadlock), re-reads the pending
transfers under those locks (so a duplicate wake-up or a redelivered message finds
nothing left to do), applies them one by one as double-entry ledger entries, and
appends one audit event per outcome. Nothing here commits: the caller's
transaction makes a batch all-or-nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from domain.models import Account, LedgerEntry, Transfer
from domain.repositories import accounts as accounts_repo
from domain.repositories import ledger as ledger_repo
from domain.repositories import transfers as transfers_repo
from domain.rules import Limits, failure_for
from domain.services import audit, events


@dataclass
class BatchResult:
    succeeded: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    deliveries: list[uuid.UUID] = field(default_factory=list)  # webhooks to send after commit
    more: bool = False  # pending transfers may remain; call again

    @property
    def applied(self) -> int:
        return len(self.succeeded) + len(self.failed)


def apply_next_batch(
    *, session: Session, source_account_id: uuid.UUID, batch_size: int, limits: Limits
) -> BatchResult:
    result = BatchResult()
    # Unlocked peek, only to learn which accounts this batch will touch.
    peek = transfers_repo.pending_for_source(session, source_account_id, limit=batch_size)
    if not peek:
        return result
    involved = {source_account_id} | {t.destination_account_id for t in peek}
    accounts = accounts_repo.lock_accounts(session, involved)
    # Under the source lock, nobody else can be applying this account's transfers:
    # what is still pending now is exactly what is ours to apply.
    pending = transfers_repo.pending_for_source(
        session, source_account_id, limit=batch_size, lock=True
    )
    if not pending:
        return result
    now = datetime.now(UTC)
    source = accounts[source_account_id]
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    sent_today = 0 if source.is_system else transfers_repo.sent_since(session, source.id, midnight)
    records: list[audit.AuditRecord] = []
    applied: list[Transfer] = []
    entries: list[LedgerEntry] = []
    for transfer in pending:
        destination = accounts.get(transfer.destination_account_id)
        if destination is None:
            # A transfer accepted after the peek, to an account we did not lock.
            # Stop here to keep acceptance order; the next batch will lock it.
            result.more = True
            break
        failure = failure_for(transfer, source, destination, limits=limits, sent_today=sent_today)
        entries += _apply(session, transfer, source, destination, failure, now)
        applied.append(transfer)
        if failure is None:
            sent_today += transfer.amount
            result.succeeded.append(transfer.id)
        else:
            result.failed.append(transfer.id)
        records.append(_audit_record(transfer))
    else:
        result.more = len(pending) == batch_size
    session.flush()
    # Last, under the audit chain-head lock (held until commit): this is what makes
    # event cursors increase in commit order.
    audit.append(session, records)
    result.deliveries = events.publish_outcomes(session, applied, entries, now=now)
    return result


def _apply(
    session: Session,
    transfer: Transfer,
    source: Account,
    destination: Account,
    failure: str | None,
    now: datetime,
) -> list[LedgerEntry]:
    transfer.completed_at = now
    if failure is not None:
        transfer.status = "failed"
        transfer.failure_code = failure
        return []
    legs = [
        _post(transfer, source, -transfer.amount, now),
        _post(transfer, destination, transfer.amount, now),
    ]
    ledger_repo.append(session, legs)
    transfer.status = "succeeded"
    return legs


def _post(transfer: Transfer, account: Account, amount: int, now: datetime) -> LedgerEntry:
    """One leg: move the account's balance and sequence on, and record the entry."""
    before = account.balance
    account.balance = before + amount
    account.last_sequence += 1
    return LedgerEntry(
        transfer_id=transfer.id,
        account_id=account.id,
        amount=amount,
        currency=transfer.currency,
        balance_before=before,
        balance_after=account.balance,
        sequence=account.last_sequence,
        created_at=now,
    )


def _audit_record(transfer: Transfer) -> audit.AuditRecord:
    return audit.AuditRecord(
        event_type=f"transfer.{transfer.status}",
        actor_id=transfer.initiated_by,
        subject_type="transfer",
        subject_id=str(transfer.id),
        data={
            "kind": transfer.kind,
            "amount": transfer.amount,
            "currency": transfer.currency,
            "source_account_id": str(transfer.source_account_id),
            "destination_account_id": str(transfer.destination_account_id),
            "failure_code": transfer.failure_code,
        },
    )
