"""Accepting money requests: validate, record as pending in one statement, wake the engine.

A request is a single transfer, deposit or withdrawal, or a batch of up to 1,000
of them under one Idempotency-Key. Acceptance only writes `pending` transfers;
the engine (`domain/services/engine.py`) applies them later. Recording happens in
one call of `settle_accept` (see `domain/repositories/acceptance.py`), whose
transaction has committed when it returns: the 202 is only sent for something
durable. Nothing is written when any item is refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from domain import anomalies
from domain.enums import TransferKind
from domain.errors import (
    AuthenticationFailed,
    BatchRejected,
    Conflict,
    DomainError,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    TooManyAttempts,
)
from domain.money import check_account_number, check_amount, check_currency
from domain.repositories import acceptance as acceptance_repo
from domain.resources import TransferResource
from domain.rules import ACCOUNT_CLOSED, DESTINATION_UNAVAILABLE, DESTINATION_UNAVAILABLE_DETAIL
from domain.uow import AsyncUnitOfWork, UnitOfWork

T = TypeVar("T")
MAX_BATCH_ITEMS = 1000
MAX_HOLD_SECONDS = 7 * 24 * 3600
# Backpressure's Retry-After: the account's drain rate over this window, and bounds.
DRAIN_RATE_WINDOW_SECONDS = 60
MAX_RETRY_AFTER_SECONDS = 3600


@dataclass(frozen=True, kw_only=True)
class MoneyLimits:
    currencies: list[str]
    max_amount: int
    large_transfer_threshold: int | None = None  # flag (not refuse) amounts at or above
    # Backpressure: a debit from an account with this many pending debits gets 429.
    max_pending_per_account: int | None = None


@dataclass(frozen=True, kw_only=True)
class Idempotency:
    key: str
    fingerprint: str  # hash of method, path and canonical body, computed by the caller


@dataclass(frozen=True, kw_only=True)
class MoneyItem:
    """One money movement. `account_id` is the source of a transfer, withdrawal or hold,
    the credited account of a deposit. A reversal, capture or void names the transfer
    it acts on (`target_id`) instead; its accounts and currency come from it, and a
    missing amount means all that is left (a reversal) or the whole hold (a capture)."""

    kind: TransferKind
    account_id: uuid.UUID | None
    amount: int | None
    currency: str | None
    destination_account_number: str | None = None
    description: str | None = None
    target_id: uuid.UUID | None = None
    execute_at: datetime | None = None
    execute_before: datetime | None = None
    expires_in_seconds: int | None = None  # a hold's lifetime
    metadata: Mapping[str, str] = field(default_factory=dict)  # checked by the caller


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
    batch_metadata: Mapping[str, str] | None = None,
) -> Accepted:
    """Record pending transfers, or replay what was accepted under this key before."""
    if not 1 <= len(items) <= (MAX_BATCH_ITEMS if batch else 1):
        raise InvalidRequest(
            f"a batch holds 1 to {MAX_BATCH_ITEMS} transfers", code="invalid_batch_size"
        )
    check_items(items, limits, batch=batch)
    call = _call(
        user_id,
        items,
        idempotency,
        limits,
        batch=batch,
        atomic=atomic,
        request_id=request_id,
        batch_metadata=batch_metadata,
    )
    rows = await acceptance_repo.accept(
        uow.conn, _with_backpressure(call, limits.max_pending_per_account)
    )
    backlog = next((r for r in rows if r.outcome == BACKLOG), None)
    if backlog is not None:
        # Only on this refusal: one more query, for the account's recent drain rate.
        pending, _, account = (backlog.detail or "0 ").partition(" ")
        drained = await acceptance_repo.recently_drained(
            uow.conn, uuid.UUID(account), window_seconds=DRAIN_RATE_WINDOW_SECONDS
        )
        raise TooManyAttempts(
            f"account {account} already has {pending} pending debits; retry after the "
            "time given in Retry-After, when some of them have been applied",
            retry_after=backlog_retry_after(
                pending=int(pending),
                limit=limits.max_pending_per_account or 0,
                drained=drained,
                window_seconds=DRAIN_RATE_WINDOW_SECONDS,
            ),
            code=BACKLOG,
        )
    return _outcome(rows, items, limits, batch=batch, wake=uow.wake_slots)


BACKLOG = "account_backlog"


def backlog_retry_after(*, pending: int, limit: int, drained: int, window_seconds: int) -> int:
    """Seconds until the account's backlog is likely below `limit` again, at the rate it
    drained over the last `window_seconds` (`drained` debits applied). An account that
    applied nothing lately (frozen out, or its lane stalled) gets the whole window."""
    if drained <= 0:
        return window_seconds
    excess = pending - limit + 1
    seconds = math.ceil(excess * window_seconds / drained)
    return max(1, min(MAX_RETRY_AFTER_SECONDS, seconds))


def _with_backpressure(
    call: acceptance_repo.AcceptCall, limit: int | None
) -> acceptance_repo.AcceptCall:
    if limit is None:
        return call
    return dataclasses.replace(call, max_pending=limit)


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
    batch_metadata: Mapping[str, str] | None = None,
) -> acceptance_repo.AcceptCall:
    # Encoded only when some item carries metadata: the hot path sends NULL.
    per_item = (
        json.dumps([dict(i.metadata) for i in items]) if any(i.metadata for i in items) else None
    )
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
        targets=_optional([i.target_id for i in items]),
        execute_at=_optional([i.execute_at for i in items]),
        execute_before=_optional([i.execute_before for i in items]),
        expires_in=_optional([i.expires_in_seconds for i in items]),
        metadata=per_item,
        batch_metadata=json.dumps(dict(batch_metadata)) if batch_metadata else None,
    )


def _optional(values: list[T | None]) -> list[T | None] | None:
    """None when no item has the value: the plain case sends a NULL, not a list of them."""
    return values if any(v is not None for v in values) else None


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
            # A command's amount may be left out (all that is left); its currency is
            # always the named transfer's.
            if item.amount is not None:
                check_amount(item.amount, maximum=limits.max_amount)
            if item.currency is not None:
                check_currency(item.currency, supported=limits.currencies)
            _check_timing(item)
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


def _check_timing(item: MoneyItem) -> None:
    if item.execute_at and item.execute_before and item.execute_before <= item.execute_at:
        raise InvalidRequest(
            "execute_before must be later than execute_at; move one of them",
            code="invalid_schedule",
        )
    if item.expires_in_seconds is not None and not 1 <= item.expires_in_seconds <= MAX_HOLD_SECONDS:
        raise InvalidRequest(
            f"expires_in_seconds must be between 1 and {MAX_HOLD_SECONDS} (7 days)",
            code="invalid_expiry",
        )


# settle_accept's refusals of reversals, captures and voids (migration 0009).
_CONFLICTS = {
    "not_reversible": "a {detail} cannot be reversed; only transfers and deposits can (credit "
    "a withdrawal back with a deposit)",
    "transfer_not_succeeded": "the transfer is {detail}: only a succeeded transfer can be "
    "reversed (cancel a pending one instead)",
    "reversal_exceeds_original": "the reversals of this transfer would exceed it: at most "
    "{detail} is left to reverse",
    "hold_not_active": "the hold is {detail}: only a pending or held hold can be captured or "
    "voided",
}


def _refusal(code: str, detail: str | None, item: MoneyItem) -> DomainError:
    if code in _CONFLICTS:
        return Conflict(_CONFLICTS[code].format(detail=detail), code=code)
    if code == "transfer_not_found":
        return NotFound("transfer not found")
    if code == "hold_not_found":
        return NotFound("hold not found")
    if code == "reversal_forbidden":
        return PermissionDenied(
            "only the destination account's owner (a refund) or an operator may reverse a transfer",
            code=code,
        )
    if code == "capture_exceeds_hold":
        return InvalidRequest(
            f"the capture is above the held amount ({detail}); capture at most that",
            code=code,
        )
    if code == "account_not_found":
        return NotFound("account not found")
    if code == "forbidden":
        return PermissionDenied("only operators may deposit")
    if code == "own_account" and item.kind == TransferKind.REVERSAL:
        return PermissionDenied(
            "an operator cannot reverse money back into an account they own; its "
            "destination's owner can refund it",
            code="own_account",
        )
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
    if code == ACCOUNT_CLOSED:
        return InvalidRequest(
            f"account {detail} is closed: it neither sends nor receives money; use another account",
            code=ACCOUNT_CLOSED,
        )
    if code == "no_settlement_account":
        return InvalidRequest(
            f"no settlement account exists for {detail}; it is created when the gateway starts",
            code="unsupported_currency",
        )
    return InvalidRequest(f"refused: {code}", code=code)
