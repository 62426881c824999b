"""Accepting money movements: validate, record as pending, remember the Idempotency-Key.

Acceptance only writes a `pending` transfer; the engine (`domain/services/engine.py`)
applies it later. Both the transfer and its idempotency record are written in the
caller's transaction, so a 202 is only sent for something durable.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.errors import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from domain.models import Account, IdempotencyKey, Transfer, User
from domain.money import check_amount, check_currency
from domain.repositories import accounts as accounts_repo
from domain.repositories import idempotency as idempotency_repo
from domain.repositories import transfers as transfers_repo
from domain.services import audit
from domain.services.accounts import can_see_everything, get_owned_account, settlement_account


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
class TransferCmd:
    source_account_id: uuid.UUID
    destination_account_number: str
    amount: int
    currency: str
    description: str | None = None


@dataclass(frozen=True, kw_only=True)
class DepositCmd:
    account_id: uuid.UUID
    amount: int
    currency: str
    description: str | None = None


@dataclass(frozen=True, kw_only=True)
class WithdrawalCmd:
    account_id: uuid.UUID
    amount: int
    currency: str
    description: str | None = None


MoneyCmd = TransferCmd | DepositCmd | WithdrawalCmd


@dataclass(frozen=True, kw_only=True)
class Accepted:
    transfer: Transfer
    response_status: int
    response_body: dict[str, Any]
    replayed: bool
    anomalies: tuple[str, ...] = ()


def transfer_snapshot(transfer: Transfer) -> dict[str, Any]:
    """The transfer resource as plain JSON-able data (the API's `Transfer` schema)."""
    return {
        "id": str(transfer.id),
        "kind": transfer.kind,
        "status": transfer.status,
        "failure_code": transfer.failure_code,
        "source_account_id": str(transfer.source_account_id),
        "destination_account_id": str(transfer.destination_account_id),
        "amount": transfer.amount,
        "currency": transfer.currency,
        "description": transfer.description,
        "created_at": transfer.created_at.isoformat(),
        "completed_at": transfer.completed_at.isoformat() if transfer.completed_at else None,
    }


def accept(
    *,
    session: Session,
    user: User,
    cmd: MoneyCmd,
    idempotency: Idempotency,
    limits: MoneyLimits,
    request_id: str | None = None,
) -> Accepted:
    """Record a pending transfer, or replay the one already accepted under this key."""
    if not idempotency_repo.try_claim(session, user.id, idempotency.key):
        raise IdempotencyKeyInFlight(
            "a request with this Idempotency-Key is still being processed; retry shortly"
        )
    previous = _replay(session, user, idempotency)
    if previous is not None:
        return previous
    check_amount(cmd.amount, maximum=limits.max_amount)
    check_currency(cmd.currency, supported=limits.currencies)
    source, destination, kind = _resolve_accounts(session, user, cmd)
    transfer = Transfer(
        id=uuid.uuid4(),
        kind=kind,
        status="pending",
        source_account_id=source.id,
        destination_account_id=destination.id,
        amount=cmd.amount,
        currency=cmd.currency,
        description=cmd.description,
        initiated_by=user.id,
        created_at=datetime.now(UTC),
    )
    body = transfer_snapshot(transfer)
    key = IdempotencyKey(
        user_id=user.id,
        key=idempotency.key,
        fingerprint=idempotency.fingerprint,
        transfer_id=transfer.id,
        response_status=202,
        response_body=body,
    )
    try:
        # A concurrent request with the same key blocks on the unique index until
        # the first commits, then fails here; it then replays the first's answer.
        # The savepoint makes that failure undo this transfer's row too.
        with session.begin_nested():
            transfers_repo.add_with_idempotency_key(session, transfer, key)
    except IntegrityError:
        replay = _replay(session, user, idempotency)
        if replay is None:
            raise
        return replay
    anomalies = _record_acceptance(session, transfer, limits, request_id)
    return Accepted(
        transfer=transfer,
        response_status=202,
        response_body=body,
        replayed=False,
        anomalies=anomalies,
    )


def _record_acceptance(
    session: Session, transfer: Transfer, limits: MoneyLimits, request_id: str | None
) -> tuple[str, ...]:
    """The money event, plus an anomaly flag for unusually large amounts."""
    data = {
        "kind": transfer.kind,
        "amount": transfer.amount,
        "currency": transfer.currency,
        "source_account_id": str(transfer.source_account_id),
        "destination_account_id": str(transfer.destination_account_id),
    }
    records = [
        audit.AuditRecord(
            event_type="transfer.accepted",
            actor_id=transfer.initiated_by,
            subject_type="transfer",
            subject_id=str(transfer.id),
            request_id=request_id,
            data=data,
        )
    ]
    anomalies: tuple[str, ...] = ()
    threshold = limits.large_transfer_threshold
    if threshold is not None and transfer.amount >= threshold:
        anomalies = ("large_transfer",)
        records.append(
            audit.AuditRecord(
                event_type="anomaly.large_transfer",
                actor_id=transfer.initiated_by,
                subject_type="transfer",
                subject_id=str(transfer.id),
                request_id=request_id,
                data={**data, "threshold": threshold},
            )
        )
    audit.append(session, records)
    return anomalies


def purge_idempotency_keys(*, session: Session, retention_seconds: float) -> int:
    """Forget keys older than the retention window (at least 24 h by default)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=retention_seconds)
    return idempotency_repo.purge_older_than(session, cutoff)


def _replay(session: Session, user: User, idempotency: Idempotency) -> Accepted | None:
    record = idempotency_repo.get(session, user.id, idempotency.key)
    if record is None:
        return None
    if record.fingerprint != idempotency.fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request")
    transfer = transfers_repo.get(session, record.transfer_id)
    assert transfer is not None
    return Accepted(
        transfer=transfer,
        response_status=record.response_status,
        response_body=record.response_body,
        replayed=True,
    )


def _resolve_accounts(session: Session, user: User, cmd: MoneyCmd) -> tuple[Account, Account, str]:
    if isinstance(cmd, TransferCmd):
        source = get_owned_account(session=session, user=user, account_id=cmd.source_account_id)
        destination = accounts_repo.get_by_number(session, cmd.destination_account_number)
        if destination is None or destination.kind != "customer":
            raise InvalidRequest(
                "no account has that destination account number", code="destination_not_found"
            )
        if destination.id == source.id:
            raise InvalidRequest(
                "source and destination must be different accounts", code="same_account"
            )
        _check_currencies(cmd.currency, source, destination)
        return source, destination, "transfer"
    if isinstance(cmd, DepositCmd):
        if not can_see_everything(user):
            raise PermissionDenied("only operators may deposit")
        account = accounts_repo.get(session, cmd.account_id)
        if account is None or account.kind != "customer":
            raise NotFound("account not found")
        _check_currencies(cmd.currency, account)
        return settlement_account(session=session, currency=cmd.currency), account, "deposit"
    account = get_owned_account(session=session, user=user, account_id=cmd.account_id)
    _check_currencies(cmd.currency, account)
    return account, settlement_account(session=session, currency=cmd.currency), "withdrawal"


def _check_currencies(currency: str, *accounts: Account) -> None:
    for account in accounts:
        if account.currency != currency:
            raise InvalidRequest(
                f"account {account.number} holds {account.currency}, not {currency}",
                code="currency_mismatch",
            )


def get_visible_transfer(*, session: Session, user: User, transfer_id: uuid.UUID) -> Transfer:
    transfer = transfers_repo.get(session, transfer_id)
    if transfer is None:
        raise NotFound("transfer not found")
    if can_see_everything(user) or transfer.initiated_by == user.id:
        return transfer
    for account_id in (transfer.source_account_id, transfer.destination_account_id):
        account = accounts_repo.get(session, account_id)
        if account is not None and account.owner_id == user.id:
            return transfer
    raise NotFound("transfer not found")


def list_visible_transfers(
    *,
    session: Session,
    user: User,
    account_id: uuid.UUID | None,
    status: str | None,
    before_seq: int | None,
    limit: int,
) -> list[Transfer]:
    query = (
        transfers_repo.all_transfers()
        if can_see_everything(user)
        else transfers_repo.visible_to(user.id)
    )
    return transfers_repo.page(
        session, query, account_id=account_id, status=status, before_seq=before_seq, limit=limit
    )
