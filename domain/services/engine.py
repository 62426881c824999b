"""The transfer engine: drains one lane's pending transfers in acceptance order.

A worker calls `apply_next_batch` repeatedly, one unit of work per call, until the
result says the lane is empty. Each batch
- locks the lane's oldest pending transfers (so a duplicate wake-up or a
  redelivered message, running at the same time, waits and then finds nothing left
  to do), then every account they touch, in id order (so concurrent drains never
  deadlock);
- applies them in acceptance order against in-memory account states, with the
  pure rules of `domain/rules.py`: per source account strictly first in, first out;
- writes the whole batch set-based (entries, transfer outcomes, balances, audit
  rows, events, webhook deliveries: one statement each) in the unit's transaction.

Atomic batches are applied whole, in one transaction: if any item fails, every
item fails (the culprits with their own code, the rest with `batch_failed`) and
no entry is written. Nothing here commits; the caller's unit of work does.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Row

from domain.enums import AccountKind, Role, TransferStatus
from domain.lanes import slot_of
from domain.repositories import engine as engine_repo
from domain.rules import BATCH_FAILED, Limits, failure_for
from domain.services import audit, events
from domain.uow import UnitOfWork


@dataclass
class AccountState:
    """An account row under the engine's lock, changed in memory and written back once."""

    id: uuid.UUID
    number: str
    kind: str
    status: str
    currency: str
    owner_id: uuid.UUID | None
    balance: int
    overdraft_limit: int
    last_sequence: int
    daily_outgoing_limit: int | None
    daily_sent: int
    daily_sent_on: date | None
    owner_role: str | None = None
    changed: bool = False

    @property
    def is_system(self) -> bool:
        return self.kind == AccountKind.SYSTEM

    def sent_on(self, day: date) -> int:
        return self.daily_sent if self.daily_sent_on == day else 0

    def post(
        self, transfer: Row[Any], amount: int, now: datetime, counterparty: AccountState
    ) -> dict[str, Any]:
        """One leg: move the balance and sequence on; returns the entry to write, with
        what its events show beside it (kind, description, counterparty)."""
        before = self.balance
        self.balance += amount
        self.last_sequence += 1
        if amount < 0 and not self.is_system:
            day = now.date()
            self.daily_sent = self.sent_on(day) - amount
            self.daily_sent_on = day
        self.changed = True
        return {
            "transfer_id": transfer.id,
            "account_id": self.id,
            "amount": amount,
            "currency": transfer.currency,
            "balance_before": before,
            "balance_after": self.balance,
            "sequence": self.last_sequence,
            "created_at": now,
            "kind": transfer.kind,
            "description": transfer.description,
            "counterparty_number": counterparty.number,
            "counterparty_kind": counterparty.kind,
        }


@dataclass
class Outcome:
    transfer: Row[Any]
    failure_code: str | None
    entries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> TransferStatus:
        return TransferStatus.FAILED if self.failure_code else TransferStatus.SUCCEEDED


@dataclass
class BatchResult:
    succeeded: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    more: bool = False  # pending transfers remain that this call could take; call again
    # Transfers that must wait for an older transfer of their source in another lane.
    waiting: int = 0

    @property
    def applied(self) -> int:
        return len(self.succeeded) + len(self.failed)


def apply_next_batch(
    *,
    uow: UnitOfWork,
    slots: Sequence[int],
    batch_size: int,
    limits: Limits,
    fail_with: str | None = None,
) -> BatchResult:
    """One batch of the lane. `fail_with`: fail what would be applied with this code
    instead (quarantine of a transfer that keeps breaking a database invariant)."""
    session = uow.session
    result = BatchResult()
    # Lock the lane's oldest pending transfers first: a concurrent drain of the same
    # lane waits here, then finds them no longer pending. Lanes hold disjoint rows,
    # so this cannot deadlock with other lanes; accounts are locked after, in id order.
    pending = _with_whole_atomic_batches(
        uow,
        engine_repo.pending_in_lane(session, slots, limit=batch_size, lock=True),
        slots,
        lock=True,
    )
    if not pending:
        return result
    involved = {t.source_account_id for t in pending}
    involved |= {t.destination_account_id for t in pending}
    accounts = {
        row.id: AccountState(**row._mapping) for row in engine_repo.lock_accounts(session, involved)
    }
    now = datetime.now(UTC)
    outcomes: list[Outcome] = []
    held: set[uuid.UUID] = set()  # sources whose next transfer must wait (FIFO)
    for unit in _units(pending):
        if any(t.source_account_id in held or (t.older_elsewhere or t.seq) < t.seq for t in unit):
            held.update(t.source_account_id for t in unit)
            result.waiting += len(unit)
            continue
        if fail_with is not None:
            outcomes += [Outcome(transfer=t, failure_code=fail_with) for t in unit]
            break
        outcomes += _apply_unit(unit, accounts, limits, now)
    if len(pending) >= batch_size:
        result.more = True
    _write(uow, outcomes, accounts, now)
    for outcome in outcomes:
        (result.failed if outcome.failure_code else result.succeeded).append(outcome.transfer.id)
    # An applied atomic batch may have been holding back transfers in other lanes.
    uow.wake_slots(
        {slot_of(o.transfer.source_account_id) for o in outcomes if o.transfer.atomic} - set(slots)
    )
    return result


def _with_whole_atomic_batches(
    uow: UnitOfWork, rows: list[Row[Any]] | Any, slots: Sequence[int], *, lock: bool
) -> list[Row[Any]]:
    """`rows`, plus the rest of every atomic batch they include, in acceptance order."""
    rows = list(rows)
    atomic = {t.batch_id for t in rows if t.atomic}
    if not atomic:
        return rows
    seen = {t.id for t in rows}
    extra = [
        t
        for t in engine_repo.pending_of_batches(uow.session, atomic, slots, lock=lock)
        if t.id not in seen
    ]
    return sorted(rows + extra, key=lambda t: t.seq)


def _units(pending: list[Row[Any]]) -> list[list[Row[Any]]]:
    """Single transfers, and atomic batches as one unit at their first item's place."""
    units: list[list[Row[Any]]] = []
    batches: dict[uuid.UUID, list[Row[Any]]] = {}
    for transfer in pending:
        if not transfer.atomic:
            units.append([transfer])
        elif transfer.batch_id in batches:
            batches[transfer.batch_id].append(transfer)
        else:
            batches[transfer.batch_id] = [transfer]
            units.append(batches[transfer.batch_id])
    return units


def _apply_unit(
    unit: list[Row[Any]], accounts: dict[uuid.UUID, AccountState], limits: Limits, now: datetime
) -> list[Outcome]:
    if len(unit) == 1 and not unit[0].atomic:
        return [_apply_one(unit[0], accounts, limits, now)]
    # All or nothing: apply on copies, keep them only if every item succeeded.
    touched = {t.source_account_id for t in unit} | {t.destination_account_id for t in unit}
    scratch = {a: copy.copy(accounts[a]) for a in touched}
    outcomes = [_apply_one(t, scratch, limits, now) for t in unit]
    if all(o.failure_code is None for o in outcomes):
        accounts.update(scratch)
        return outcomes
    return [
        Outcome(transfer=o.transfer, failure_code=o.failure_code or BATCH_FAILED) for o in outcomes
    ]


def _apply_one(
    transfer: Row[Any], accounts: dict[uuid.UUID, AccountState], limits: Limits, now: datetime
) -> Outcome:
    source = accounts[transfer.source_account_id]
    destination = accounts[transfer.destination_account_id]
    failure = failure_for(
        transfer, source, destination, limits=limits, sent_today=source.sent_on(now.date())
    )
    if failure is not None:
        return Outcome(transfer=transfer, failure_code=failure)
    return Outcome(
        transfer=transfer,
        failure_code=None,
        entries=[
            source.post(transfer, -transfer.amount, now, destination),
            destination.post(transfer, transfer.amount, now, source),
        ],
    )


def _write(
    uow: UnitOfWork,
    outcomes: list[Outcome],
    accounts: dict[uuid.UUID, AccountState],
    now: datetime,
) -> None:
    """Two statements for the whole batch: the ledger side, then events and deliveries."""
    if not outcomes:
        return
    session = uow.session
    entries = [entry for outcome in outcomes for entry in outcome.entries]
    ids = engine_repo.write_batch(
        session,
        entries=entries,
        outcomes=[(o.transfer.id, o.status.value, o.failure_code) for o in outcomes],
        accounts=[
            {
                "id": a.id,
                "balance": a.balance,
                "last_sequence": a.last_sequence,
                "daily_sent": a.daily_sent,
                "daily_sent_on": a.daily_sent_on,
            }
            for a in accounts.values()
            if a.changed
        ],
        audit_rows=audit.rows([_audit_record(o) for o in outcomes], now),
        now=now,
    )
    for entry, entry_id in zip(entries, ids, strict=True):
        entry["id"] = entry_id
    owners = {a.id: a.owner_id for a in accounts.values() if a.owner_id is not None}
    sees_all = {a.owner_id for a in accounts.values() if a.owner_id and _sees_all(a.owner_role)} | {
        o.transfer.initiated_by for o in outcomes if _sees_all(o.transfer.initiator_role)
    }
    rows = events.outcome_events(
        [
            events.Finished(
                transfer={
                    **o.transfer._mapping,
                    "status": o.status,
                    "failure_code": o.failure_code,
                    "completed_at": now,
                },
                entries=o.entries,
            )
            for o in outcomes
        ],
        owners=owners,
        sees_all=sees_all,
        now=now,
    )
    finished_ids = [o.transfer.id for o in outcomes]
    finished_ids += [o.transfer.batch_id for o in outcomes if o.transfer.batch_id]
    uow.send_deliveries(
        engine_repo.publish(
            session, events=rows, due=events.delivery_due(now), finished_ids=finished_ids
        )
    )


def _sees_all(role: str | None) -> bool:
    return role is not None and Role(role).sees_everything


def _audit_record(outcome: Outcome) -> audit.AuditRecord:
    transfer = outcome.transfer
    return audit.AuditRecord(
        event_type=f"transfer.{outcome.status}",
        actor_id=transfer.initiated_by,
        subject_type="transfer",
        subject_id=str(transfer.id),
        data={
            "kind": transfer.kind,
            "amount": transfer.amount,
            "currency": transfer.currency,
            "source_account_id": str(transfer.source_account_id),
            "destination_account_id": str(transfer.destination_account_id),
            "failure_code": outcome.failure_code,
        },
    )
