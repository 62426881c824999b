"""The transfer engine: drains one lane's pending transfers in acceptance order.

A worker calls `apply_next_batch` repeatedly, one unit of work per call, until the
result says the lane is empty. Each batch
- locks the lane's oldest pending transfers (so a duplicate wake-up or a
  redelivered message, running at the same time, waits and then finds nothing left
  to do), then every account they touch, in id order (so concurrent drains never
  deadlock); in batches of `skip_locked_from` transfers or more, only the accounts
  no other drain holds, deferring the transfers that need the others to the next
  batch (FIFO kept);
- applies them in acceptance order against in-memory account states, with the
  pure rules of `domain/rules.py`: per source account strictly first in, first out;
- writes the whole batch set-based (entries, transfer outcomes, balances, audit
  rows, events, webhook deliveries: one statement each) in the unit's transaction;
- evaluates the balance alerts of the accounts that have any (domain/services/alerts.py),
  entry by entry, so their events are written with the transfer events, exactly once
  per crossing. Accounts without alerts cost nothing: their alert count comes with
  the account lock, and no alert statement runs for them.

Atomic batches are applied whole, in one transaction: if any item fails, every
item fails (the culprits with their own code, the rest with `batch_failed`) and
no entry is written. Nothing here commits; the caller's unit of work does.

Holds (migration 0009) go through the same path: a pending hold is checked like a
debit against the available balance (`balance - held`) and becomes `held`, adding
its amount to the source's `held`; a capture or void is a pending command in the
hold's lane, applied in order with the source's other transfers, under a lock on the
hold: a capture writes its entries (the captured amount) and releases the whole
hold, a void releases it. `expire_due_holds` (the sweeper) expires holds whose time
has passed under the same locks, in the same order. A transfer whose
`execute_before` has passed fails with `expired`.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Row

from domain.enums import AccountKind, AccountStatus, Role, TransferKind, TransferStatus
from domain.lanes import slot_of
from domain.repositories import engine as engine_repo
from domain.rules import (
    ACCOUNT_CLOSED,
    ACCOUNT_FROZEN,
    BATCH_FAILED,
    DESTINATION_UNAVAILABLE,
    EXPIRED,
    HOLD_NOT_ACTIVE,
    Limits,
    failure_for,
)
from domain.services import alerts, audit, batch_completion, events
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
    balance_alert_count: int = 0
    held: int = 0  # active holds: reserved, not spendable
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
class HoldState:
    """A hold named by a capture or void of the batch, under its row lock."""

    row: Row[Any]
    status: TransferStatus
    moved_to: TransferStatus | None = None  # captured, voided or expired in this batch
    captured: int | None = None


@dataclass
class Outcome:
    transfer: Row[Any]
    failure_code: str | None
    entries: list[dict[str, Any]] = field(default_factory=list)
    success: TransferStatus = TransferStatus.SUCCEEDED  # `held` for a hold
    # The hold a capture or void moved on (or that a late capture found expired).
    hold: HoldState | None = None

    @property
    def status(self) -> TransferStatus:
        return TransferStatus.FAILED if self.failure_code else self.success


@dataclass(frozen=True, slots=True)
class Finished:
    """One transfer's outcome, as the worker's log line and metrics report it."""

    id: uuid.UUID
    kind: str
    code: str | None  # None: succeeded
    amount: int
    currency: str
    created_at: datetime
    completed_at: datetime

    @property
    def status(self) -> str:
        return TransferStatus.SUCCEEDED if self.code is None else TransferStatus.FAILED


@dataclass
class BatchResult:
    succeeded: list[uuid.UUID] = field(default_factory=list)
    # Every transfer the batch brought to a terminal state (for logs and metrics).
    finished: list[Finished] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    more: bool = False  # pending transfers remain that this call could take; call again
    # Transfers that must wait for an older transfer of their source in another lane.
    waiting: int = 0
    # With `skip_locked_from`: transfers left for the next batch because another lane's
    # drain held one of their accounts (the later transfers of their sources wait behind
    # them, FIFO, and count as `waiting`); `deferred_oldest`: the first unit the batch
    # could have applied was one of them, so the next batch should wait for the locks
    # instead (within a drain, that transfer is not passed over twice in a row).
    deferred: int = 0
    deferred_oldest: bool = False
    # Set by the drain (domain/services/draining.py) after a batch that was not full:
    # whether the lane still had due pending transfers once its marker was let go.
    pending_after_release: bool = False

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
    skip_locked_from: int | None = None,
) -> BatchResult:
    """One batch of the lane. `fail_with`: fail what would be applied with this code
    instead (quarantine of a transfer that keeps breaking a database invariant).

    `skip_locked_from`: in a batch of at least this many transfers, take only the
    accounts no other transaction holds, and defer the transfers that need the others.
    Lanes are disjoint by source, not by destination: two drains of batches of random
    transfers almost always share an account, and with waiting locks they took turns,
    one lane at a time (a lock wait of 30-70 ms per batch, with a quarter of the machine
    idle). Deferring keeps both at work. Small batches wait as before: their lock waits
    are short, and a deferral costs a re-read of the lane (a hot destination that every
    lane pays into lost a fifth). A skipping batch never waits for an account, and a
    waiting one takes them in id order as before, so every wait still follows id order:
    no new deadlock.
    """
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
    # Captures and voids: lock their holds (only batches that have any pay for this).
    holds = {
        row.id: HoldState(row=row, status=TransferStatus(row.status))
        for row in engine_repo.lock_holds(session, {t.hold_id for t in pending if t.hold_id})
    }
    involved = {t.source_account_id for t in pending}
    involved |= {t.destination_account_id for t in pending}
    accounts = {
        row.id: AccountState(**row._mapping)
        for row in engine_repo.lock_accounts(
            session,
            involved,
            skip_locked=skip_locked_from is not None and len(pending) >= skip_locked_from,
        )
    }
    now = datetime.now(UTC)
    outcomes: list[Outcome] = []
    held: set[uuid.UUID] = set()  # sources whose next transfer must wait (FIFO)
    first = True  # no unit of this batch could be applied yet (or was deferred)
    for unit in _units(pending):
        if any(
            t.source_account_id in held
            or (t.older_elsewhere or t.seq) < t.seq
            # A command on a hold still pending when the batch began waits for the next
            # batch: one statement must not move the hold twice (pending, then held, then
            # captured).
            or (t.hold_id is not None and holds[t.hold_id].status is TransferStatus.PENDING)
            for t in unit
        ):
            held.update(t.source_account_id for t in unit)
            result.waiting += len(unit)
            continue
        if any(
            account not in accounts
            for t in unit
            for account in (t.source_account_id, t.destination_account_id)
        ):
            # Could be applied, but another drain holds one of its accounts: deferred.
            # Still pending (and locked by us until commit); its source's later transfers
            # wait behind it.
            held.update(t.source_account_id for t in unit)
            result.deferred += len(unit)
            result.deferred_oldest |= first
            first = False
            continue
        first = False
        if fail_with is not None:
            outcomes += [Outcome(transfer=t, failure_code=fail_with) for t in unit]
            break
        outcomes += _apply_unit(unit, accounts, holds, limits, now)
    if len(pending) >= batch_size or result.deferred:
        result.more = True
    _write(uow, outcomes, accounts, now)
    for outcome in outcomes:
        transfer = outcome.transfer
        (result.failed if outcome.failure_code else result.succeeded).append(transfer.id)
        result.finished.append(
            Finished(
                transfer.id,
                transfer.kind,
                outcome.failure_code,
                transfer.amount,
                transfer.currency,
                transfer.created_at,
                now,
            )
        )
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
    unit: list[Row[Any]],
    accounts: dict[uuid.UUID, AccountState],
    holds: dict[uuid.UUID, HoldState],
    limits: Limits,
    now: datetime,
) -> list[Outcome]:
    if len(unit) == 1 and not unit[0].atomic:
        return [_apply_one(unit[0], accounts, holds, limits, now)]
    # All or nothing: apply on copies, keep them only if every item succeeded. (Batch
    # items are plain transfers: no holds.)
    touched = {t.source_account_id for t in unit} | {t.destination_account_id for t in unit}
    scratch = {a: copy.copy(accounts[a]) for a in touched}
    outcomes = [_apply_one(t, scratch, holds, limits, now) for t in unit]
    if all(o.failure_code is None for o in outcomes):
        accounts.update(scratch)
        return outcomes
    return [
        Outcome(transfer=o.transfer, failure_code=o.failure_code or BATCH_FAILED) for o in outcomes
    ]


def _apply_one(
    transfer: Row[Any],
    accounts: dict[uuid.UUID, AccountState],
    holds: dict[uuid.UUID, HoldState],
    limits: Limits,
    now: datetime,
) -> Outcome:
    if transfer.execute_before is not None and transfer.execute_before <= now:
        return Outcome(transfer=transfer, failure_code=EXPIRED)
    source = accounts[transfer.source_account_id]
    destination = accounts[transfer.destination_account_id]
    if transfer.hold_id is not None:
        return _apply_command(transfer, holds[transfer.hold_id], source, destination, now)
    failure = failure_for(
        transfer, source, destination, limits=limits, sent_today=source.sent_on(now.date())
    )
    if failure is not None:
        return Outcome(transfer=transfer, failure_code=failure)
    if transfer.kind == TransferKind.HOLD:
        # Reserved, not moved: the available balance drops, the balance does not.
        source.held += transfer.amount
        source.changed = True
        return Outcome(transfer=transfer, failure_code=None, success=TransferStatus.HELD)
    return Outcome(
        transfer=transfer,
        failure_code=None,
        entries=[
            source.post(transfer, -transfer.amount, now, destination),
            destination.post(transfer, transfer.amount, now, source),
        ],
    )


def _apply_command(
    command: Row[Any],
    hold: HoldState,
    source: AccountState,
    destination: AccountState,
    now: datetime,
) -> Outcome:
    """A capture or void of a hold, against the hold's state under its lock."""
    if hold.status is not TransferStatus.HELD:
        return Outcome(transfer=command, failure_code=HOLD_NOT_ACTIVE)
    if hold.row.expires_at <= now:
        # Too late: the hold expires now (as the sweeper would have done), and the
        # command fails. Exactly one outcome for the hold, whichever came first.
        _release(hold, source, TransferStatus.EXPIRED)
        return Outcome(transfer=command, failure_code=HOLD_NOT_ACTIVE, hold=hold)
    if command.kind == TransferKind.VOID:
        _release(hold, source, TransferStatus.VOIDED)
        return Outcome(transfer=command, failure_code=None, hold=hold)
    # A capture: the money was reserved at hold time, so no balance check; the accounts
    # must still be able to move it. On failure the hold stays held (void it, or retry).
    if AccountStatus.CLOSED in (source.status, destination.status):
        # Unreachable while closing needs nothing held; kept so no capture can ever
        # post to a closed account.
        return Outcome(transfer=command, failure_code=ACCOUNT_CLOSED)
    if source.status != "active":
        return Outcome(transfer=command, failure_code=ACCOUNT_FROZEN)
    if destination.status != "active" or destination.currency != command.currency:
        return Outcome(transfer=command, failure_code=DESTINATION_UNAVAILABLE)
    _release(hold, source, TransferStatus.CAPTURED)
    hold.captured = command.amount
    entries = [
        source.post(command, -command.amount, now, destination),
        destination.post(command, command.amount, now, source),
    ]
    return Outcome(transfer=command, failure_code=None, entries=entries, hold=hold)


def _release(hold: HoldState, source: AccountState, to: TransferStatus) -> None:
    source.held -= hold.row.amount
    source.changed = True
    hold.status = hold.moved_to = to


def expire_due_holds(*, uow: UnitOfWork, limit: int = 500) -> list[uuid.UUID]:
    """Expire held holds past their `expires_at` (the sweeper calls this, no task per
    hold): hold rows locked first, then their accounts in id order, like a drain."""
    session = uow.session
    due = engine_repo.due_expired_holds(session, limit=limit)
    if not due:
        return []
    involved = {h.source_account_id for h in due} | {h.destination_account_id for h in due}
    accounts = {
        row.id: AccountState(**row._mapping) for row in engine_repo.lock_accounts(session, involved)
    }
    now = datetime.now(UTC)
    expired: list[HoldState] = []
    for row in due:
        hold = HoldState(row=row, status=TransferStatus.HELD)
        _release(hold, accounts[row.source_account_id], TransferStatus.EXPIRED)
        expired.append(hold)
    _write(uow, [], accounts, now, moved=expired)
    return [h.row.id for h in expired]


def _write(
    uow: UnitOfWork,
    outcomes: list[Outcome],
    accounts: dict[uuid.UUID, AccountState],
    now: datetime,
    moved: list[HoldState] | None = None,
) -> None:
    """Two statements for the whole batch: the ledger side, then events and deliveries.

    `moved`: holds captured, voided or expired (by this batch's commands, or the
    sweeper's expiry)."""
    moved = (moved or []) + [o.hold for o in outcomes if o.hold is not None]
    if not outcomes and not moved:
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
                "held": a.held,
            }
            for a in accounts.values()
            if a.changed
        ],
        audit_rows=audit.rows(
            [_audit_record(o) for o in outcomes] + [_hold_audit_record(h) for h in moved], now
        ),
        now=now,
        holds=[(h.row.id, str(h.moved_to), h.captured) for h in moved],
    )
    for entry, entry_id in zip(entries, ids, strict=True):
        entry["id"] = entry_id
    # Zero statements unless an account of the batch has balance alerts.
    crossings = alerts.evaluate_in_engine(
        session, [a.id for a in accounts.values() if a.balance_alert_count], entries
    )
    owners = {a.id: a.owner_id for a in accounts.values() if a.owner_id is not None}
    sees_all = {a.owner_id for a in accounts.values() if a.owner_id and _sees_all(a.owner_role)} | {
        o.transfer.initiated_by for o in outcomes if _sees_all(o.transfer.initiator_role)
    }
    sees_all |= {h.row.initiated_by for h in moved if _sees_all(h.row.initiator_role)}
    # A capture or void that succeeded is told as its hold's event (hold.captured with
    # the capture's entries, hold.voided); a failed one as transfer.failed.
    by_hold = {o.hold.row.id: o for o in outcomes if o.hold is not None and not o.failure_code}
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
            if not (o.hold is not None and not o.failure_code)
        ]
        + [
            events.Finished(
                transfer={
                    **h.row._mapping,
                    "status": h.moved_to,
                    "captured_amount": h.captured,
                    "completed_at": now,
                },
                entries=by_hold[h.row.id].entries if h.row.id in by_hold else [],
            )
            for h in moved
        ],
        owners=owners,
        sees_all=sees_all,
        now=now,
        crossings=crossings,
    )
    # After the transfers' own events: the batches whose last transfer this finished.
    rows += batch_completion.finished(
        session, [o.transfer.batch_id for o in outcomes if o.transfer.batch_id], now
    )
    finished_ids = [o.transfer.id for o in outcomes] + [h.row.id for h in moved]
    finished_ids += [o.transfer.batch_id for o in outcomes if o.transfer.batch_id]
    uow.send_deliveries(
        engine_repo.publish(
            session, events=rows, due=events.delivery_due(now), finished_ids=finished_ids
        )
    )


def _hold_audit_record(hold: HoldState) -> audit.AuditRecord:
    row = hold.row
    return audit.AuditRecord(
        event_type=f"hold.{hold.moved_to}",
        actor_id=row.initiated_by,
        subject_type="transfer",
        subject_id=str(row.id),
        data={
            "kind": row.kind,
            "amount": row.amount,
            "captured_amount": hold.captured,
            "currency": row.currency,
            "source_account_id": str(row.source_account_id),
            "destination_account_id": str(row.destination_account_id),
        },
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
        # Not the drain's request id: wake-ups coalesce, so the request that woke this
        # lane is not the one of every transfer in the batch. The transfer's own
        # request id is on its acceptance row (same subject_id).
        request_id=None,
        data={
            "kind": transfer.kind,
            "amount": transfer.amount,
            "currency": transfer.currency,
            "source_account_id": str(transfer.source_account_id),
            "destination_account_id": str(transfer.destination_account_id),
            "failure_code": outcome.failure_code,
        },
    )
