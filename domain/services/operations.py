"""What an operator asks the ledger day to day: the overview behind `settle status` (and,
as numbers, behind the gauges of `/metrics`), and the look-ups behind `settle accounts
find` and `settle transfers show`.

Read-only. The CLI (settle/cli.py) prints these; the probes of the running processes
(gateway, workers, Flower) are the CLI's own, since they are not the ledger's business.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from domain.errors import InvalidRequest, NotFound
from domain.models import LedgerVerification
from domain.repositories import accounts as accounts_repo
from domain.repositories import operations as operations_repo
from domain.repositories import transfers as transfers_repo
from domain.repositories import webhooks as webhooks_repo
from domain.resources import AccountResource, EntryResource, TransferResource
from domain.services import people
from domain.services import transfers as transfers_service
from domain.services import verify as verify_service

# `settle status` lists deliveries given up on within this window.
FAILED_WEBHOOKS_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class LastVerify:
    ran_at: datetime
    ok: bool
    problems: int


@dataclass(frozen=True)
class Overview:
    pending: int
    oldest_pending_age_seconds: float | None
    quarantined: int
    failing_webhooks: list[operations_repo.FailingEndpoint]
    last_verify: LastVerify | None


@dataclass(frozen=True)
class FoundAccount:
    account: AccountResource
    kind: str
    owner_email: str | None


@dataclass(frozen=True)
class Delivery:
    id: uuid.UUID
    event_type: str
    url: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None


@dataclass(frozen=True)
class TransferDetails:
    transfer: TransferResource
    source_number: str
    destination_number: str
    entries: list[EntryResource]
    deliveries: list[Delivery] = field(default_factory=list)


def overview(*, session: Session, now: datetime | None = None) -> Overview:
    now = now or datetime.now(UTC)
    backlog = operations_repo.backlog(session)
    latest: LedgerVerification | None = verify_service.latest(session=session)
    return Overview(
        pending=backlog.pending,
        oldest_pending_age_seconds=(now - backlog.oldest_pending_at).total_seconds()
        if backlog.oldest_pending_at
        else None,
        quarantined=transfers_service.count_quarantined(session=session),
        failing_webhooks=operations_repo.failing_endpoints(
            session, since=now - FAILED_WEBHOOKS_WINDOW
        ),
        last_verify=LastVerify(ran_at=latest.ran_at, ok=latest.ok, problems=latest.problems)
        if latest
        else None,
    )


def snapshot(*, session: Session, now: datetime | None = None) -> dict[str, Any]:
    """The overview's numbers for the gauges of `/metrics` (settle/metrics.py): one short
    read per scrape. Queue depths live in the broker, so the caller adds them."""
    now = now or datetime.now(UTC)
    backlog = operations_repo.backlog(session)
    latest = verify_service.latest(session=session)
    oldest = backlog.oldest_pending_at
    return {
        "pending": backlog.pending,
        "oldest_pending_age": max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        "webhooks_pending": webhooks_repo.count_pending(session),
        "quarantined": transfers_service.count_quarantined(session=session),
        "verify": None
        if latest is None
        else {"ok": latest.ok, "problems": latest.problems, "ran_at": latest.ran_at.timestamp()},
    }


def find_accounts(
    *, session: Session, number: str | None = None, email: str | None = None
) -> list[FoundAccount]:
    """Accounts with this number, or owned by the user with this email (any form of it)."""
    if (number is None) == (email is None):
        raise InvalidRequest("give exactly one of an account number or an owner's email")
    if number is not None:
        rows = operations_repo.accounts_by_number(session, number.strip())
    else:
        owner = people.find_by_email(session, email=email or "")
        rows = operations_repo.accounts_by_owner(session, owner.id) if owner else []
    return [
        FoundAccount(
            account=AccountResource.model_validate(account),
            kind=str(account.kind),
            owner_email=owner_email,
        )
        for account, owner_email in rows
    ]


def transfer_details(*, session: Session, transfer_id: uuid.UUID) -> TransferDetails:
    transfer = transfers_repo.get(session, transfer_id)
    if transfer is None:
        raise NotFound(f"no transfer has the id {transfer_id}")
    source = accounts_repo.get(session, transfer.source_account_id)
    destination = accounts_repo.get(session, transfer.destination_account_id)
    return TransferDetails(
        transfer=TransferResource.model_validate(transfer),
        source_number=source.number if source else "?",
        destination_number=destination.number if destination else "?",
        entries=[
            EntryResource.model_validate(entry)
            for entry in operations_repo.entries_of_transfer(session, transfer_id)
        ],
        deliveries=[
            Delivery(
                id=delivery.id,
                event_type=event_type,
                url=url,
                status=delivery.status,
                attempts=delivery.attempts,
                last_status_code=delivery.last_status_code,
                last_error=delivery.last_error,
            )
            for delivery, event_type, url in operations_repo.deliveries_of_transfer(
                session, transfer_id
            )
        ],
    )
