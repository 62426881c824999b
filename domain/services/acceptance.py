"""Accepting money requests: validate, record as pending in one statement, wake the engine.

A request is a single transfer, deposit or withdrawal, or a batch of up to 1,000
of them under one Idempotency-Key. Acceptance only writes `pending` transfers;
the engine (`domain/services/engine.py`) applies them later. Recording happens in
one call of `settle_accept` (see `domain/repositories/acceptance.py`), whose
transaction has committed when it returns: the 202 is only sent for something
durable. Nothing is written when any item is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from domain import anomalies
from domain.enums import TransferKind
from domain.errors import (
    AuthenticationFailed,
    BatchRejected,
    DomainError,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from domain.money import check_account_number, check_amount, check_currency
from domain.repositories import acceptance as acceptance_repo
from domain.resources import TransferResource
from domain.rules import DESTINATION_UNAVAILABLE, DESTINATION_UNAVAILABLE_DETAIL
from domain.uow import AsyncUnitOfWork, UnitOfWork

MAX_BATCH_ITEMS = 1000


@dataclass(frozen=True, kw_only=True)
class MoneyLimits:
    currencies: list[str]
    max_amount: int
    large_transfer_threshold: int | None = None  # flag (not refuse) amounts at or above


@dataclass(frozen=True, kw_only=True)
class Idempotency:
    key: str
    fingerprint: str  # hash of method, path and canonical body, computed by the caller


@dataclass(frozen=True, kw_only=True)
class MoneyItem:
    """One money movement. `account_id` is the source of a transfer or withdrawal,
    the credited account of a deposit."""

    kind: TransferKind
    account_id: uuid.UUID
    amount: int
    currency: str
    destination_account_number: str | None = None
    description: str | None = None


@dataclass(frozen=True, kw_only=True)
class Accepted:
    transfers: list[TransferResource]
    replayed: bool
    batch_id: uuid.UUID | None = None
    anomalies: tuple[str, ...] = ()


async def accept(
    *,
    uow: AsyncUnitOfWork,
    user_id: uuid.UUID,
    items: Sequence[MoneyItem],
    idempotency: Idempotency,
    limits: MoneyLimits,
    batch: bool = False,
    atomic: bool = False,
    request_id: str | None = None,
) -> Accepted:
    """Record pending transfers, or replay what was accepted under this key before."""
    if not 1 <= len(items) <= (MAX_BATCH_ITEMS if batch else 1):
        raise InvalidRequest(
            f"a batch holds 1 to {MAX_BATCH_ITEMS} transfers", code="invalid_batch_size"
        )
    check_items(items, limits, batch=batch)
    rows = await acceptance_repo.accept(
        uow.conn,
        _call(
            user_id, items, idempotency, limits, batch=batch, atomic=atomic, request_id=request_id
        ),
    )
    return _outcome(rows, items, limits, batch=batch, wake=uow.wake_slots)


def accept_in(
    *,
    uow: UnitOfWork,
    user_id: uuid.UUID,
    items: Sequence[MoneyItem],
    idempotency: Idempotency,
    limits: MoneyLimits,
    request_id: str | None = None,
) -> Accepted:
    """`accept`, inside a unit of work's transaction: the same statement, checks and
    outcomes, committed (and the engine woken) with the rest of that unit. For a
    deposit an approval applies (domain/services/approvals.py)."""
    check_items(items, limits, batch=False)
    rows = acceptance_repo.accept_in_session(
        uow.session,
        _call(
            user_id, items, idempotency, limits, batch=False, atomic=False, request_id=request_id
        ),
    )
    return _outcome(rows, items, limits, batch=False, wake=uow.wake_slots)


def _call(
    user_id: uuid.UUID,
    items: Sequence[MoneyItem],
    idempotency: Idempotency,
    limits: MoneyLimits,
    *,
    batch: bool,
    atomic: bool,
    request_id: str | None,
) -> acceptance_repo.AcceptCall:
    return acceptance_repo.AcceptCall(
        user_id=user_id,
        key=idempotency.key,
        fingerprint=idempotency.fingerprint,
        kinds=[i.kind.value for i in items],
        accounts=[i.account_id for i in items],
        destinations=[i.destination_account_number for i in items],
        amounts=[i.amount for i in items],
        currencies=[i.currency for i in items],
        descriptions=[i.description for i in items],
        batch_id=uuid.uuid4() if batch else None,
        atomic=atomic,
        request_id=request_id,
        large_threshold=limits.large_transfer_threshold,
    )


def _outcome(
    rows: Sequence[acceptance_repo.Row],
    items: Sequence[MoneyItem],
    limits: MoneyLimits,
    *,
    batch: bool,
    wake: Callable[[Collection[int]], None],
) -> Accepted:
    outcome = rows[0].outcome
    if outcome in ("accepted", "replayed"):
        transfers = [TransferResource.as_accepted(r.transfer) for r in rows]
        threshold = limits.large_transfer_threshold
        replayed = outcome == "replayed"
        if not replayed:
            wake({_slot(r.transfer) for r in rows})
        return Accepted(
            transfers=transfers,
            replayed=replayed,
            batch_id=uuid.UUID(rows[0].transfer["batch_id"])
            if batch and rows[0].transfer
            else None,
            anomalies=tuple(
                anomalies.LARGE_TRANSFER
                for t in transfers
                if not replayed and anomalies.is_large_transfer(t.amount, threshold)
            ),
        )
    if outcome == "in_flight":
        raise IdempotencyKeyInFlight(
            "a request with this Idempotency-Key is still being processed; retry shortly"
        )
    if outcome == "key_reused":
        raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request")
    if outcome == "unknown_user":
        raise AuthenticationFailed("the access token is invalid or expired", code="invalid_token")
    refusals = [
        (index, _refusal(r.outcome, r.detail, items[index]))
        for r in rows
        for index in [r.item - 1 if r.item else 0]
    ]
    if not batch:
        raise refusals[0][1]
    raise BatchRejected(
        f"{len(refusals)} of {len(items)} transfers were refused; nothing was accepted",
        errors=[{"index": i, "code": e.code, "detail": e.detail} for i, e in refusals],
    )


def _batch_id(transfer: dict[str, object] | None) -> uuid.UUID:
    assert transfer is not None
    return uuid.UUID(str(transfer["batch_id"]))


def _slot(transfer: dict[str, object] | None) -> int:
    assert transfer is not None
    return int(str(transfer["lane"]))


def check_items(items: Sequence[MoneyItem], limits: MoneyLimits, *, batch: bool) -> None:
    """Amount, currency and account-number rules that need no database, for every item."""
    errors: list[tuple[int, DomainError]] = []
    for index, item in enumerate(items):
        try:
            check_amount(item.amount, maximum=limits.max_amount)
            check_currency(item.currency, supported=limits.currencies)
            if item.destination_account_number is not None:
                check_account_number(item.destination_account_number)
        except DomainError as exc:
            errors.append((index, exc))
    if not errors:
        return
    if not batch:
        raise errors[0][1]
    raise BatchRejected(
        f"{len(errors)} of {len(items)} transfers were refused; nothing was accepted",
        errors=[{"index": i, "code": e.code, "detail": e.detail} for i, e in errors],
    )


def _refusal(code: str, detail: str | None, item: MoneyItem) -> DomainError:
    if code == "account_not_found":
        return NotFound("account not found")
    if code == "forbidden":
        return PermissionDenied("only operators may deposit")
    if code == "own_account":
        return PermissionDenied(
            "an operator cannot deposit into an account they own", code="own_account"
        )
    if code == "destination_not_found":
        return InvalidRequest(
            "no account has that destination account number (the number is well-formed: "
            "check it with its owner)",
            code="destination_not_found",
        )
    if code == "same_account":
        return InvalidRequest(
            "source and destination must be different accounts", code="same_account"
        )
    if code == "currency_mismatch" and detail:
        # Only ever about the caller's own account (or, for a deposit, one an operator
        # may see): settle_accept says `destination_unavailable` about anyone else's.
        number, _, held = detail.partition(" ")
        return InvalidRequest(
            f"account {number} holds {held}, not {item.currency}", code="currency_mismatch"
        )
    if code == DESTINATION_UNAVAILABLE:
        return InvalidRequest(DESTINATION_UNAVAILABLE_DETAIL, code=DESTINATION_UNAVAILABLE)
    if code == "no_settlement_account":
        return InvalidRequest(
            f"no settlement account exists for {detail}; it is created when the gateway starts",
            code="unsupported_currency",
        )
    return InvalidRequest(f"refused: {code}", code=code)
