"""The SQL behind the operator's overview (`settle status`) and look-ups (`settle accounts
find`, `settle transfers show`): read-only, each one statement."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from domain.enums import TransferStatus
from domain.models import (
    Account,
    Event,
    LedgerEntry,
    Transfer,
    User,
    WebhookDelivery,
    WebhookEndpoint,
)


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_pending_at: datetime | None


@dataclass(frozen=True)
class FailingEndpoint:
    endpoint_id: uuid.UUID
    url: str
    status: str  # active, or disabled (410 or failing too long)
    failing_since: datetime | None
    retrying: int  # deliveries still pending after at least one failed attempt
    failed: int  # deliveries given up on since `since`
    last_status_code: int | None
    last_error: str | None


def backlog(session: Session) -> Backlog:
    pending, oldest = session.execute(
        select(func.count(), func.min(Transfer.created_at)).where(
            Transfer.status == TransferStatus.PENDING
        )
    ).one()
    return Backlog(pending=int(pending), oldest_pending_at=oldest)


def failing_endpoints(session: Session, *, since: datetime) -> list[FailingEndpoint]:
    """Endpoints with a delivery being retried or failed since `since`, or that are
    failing (`failing_since` set) or disabled; with the latest failed attempt's outcome."""
    retrying = func.count(WebhookDelivery.id).filter(
        WebhookDelivery.status == "pending", WebhookDelivery.attempts > 0
    )
    failed = func.count(WebhookDelivery.id).filter(
        WebhookDelivery.status == "failed", WebhookDelivery.completed_at >= since
    )
    rows = session.execute(
        select(
            WebhookEndpoint.id,
            WebhookEndpoint.url,
            WebhookEndpoint.status,
            WebhookEndpoint.failing_since,
            retrying,
            failed,
        )
        .outerjoin(WebhookDelivery, WebhookDelivery.endpoint_id == WebhookEndpoint.id)
        .where(WebhookEndpoint.deleted_at.is_(None))
        .group_by(WebhookEndpoint.id)
        .having(
            or_(
                retrying > 0,
                failed > 0,
                WebhookEndpoint.failing_since.is_not(None),
                WebhookEndpoint.status != "active",
            )
        )
        .order_by(WebhookEndpoint.failing_since.asc().nulls_last(), WebhookEndpoint.id)
    ).all()
    last = _last_failures(session, [row[0] for row in rows])
    return [
        FailingEndpoint(
            endpoint_id=row[0],
            url=row[1],
            status=row[2],
            failing_since=row[3],
            retrying=int(row[4]),
            failed=int(row[5]),
            last_status_code=last.get(row[0], (None, None))[0],
            last_error=last.get(row[0], (None, None))[1],
        )
        for row in rows
    ]


def _last_failures(
    session: Session, endpoint_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[int | None, str | None]]:
    if not endpoint_ids:
        return {}
    rows = session.execute(
        select(
            WebhookDelivery.endpoint_id,
            WebhookDelivery.last_status_code,
            WebhookDelivery.last_error,
        )
        .where(WebhookDelivery.endpoint_id.in_(endpoint_ids), WebhookDelivery.attempts > 0)
        .where(
            or_(
                WebhookDelivery.last_error.is_not(None),
                ~WebhookDelivery.last_status_code.between(200, 299),
            )
        )
        .order_by(WebhookDelivery.endpoint_id, WebhookDelivery.created_at.desc())
        .distinct(WebhookDelivery.endpoint_id)
    ).all()
    return {row[0]: (row[1], row[2]) for row in rows}


def accounts_by_number(session: Session, number: str) -> list[tuple[Account, str | None]]:
    return _with_owner(session, Account.number == number)


def accounts_by_owner(session: Session, owner_id: uuid.UUID) -> list[tuple[Account, str | None]]:
    return _with_owner(session, Account.owner_id == owner_id)


def _with_owner(session: Session, condition: object) -> list[tuple[Account, str | None]]:
    rows = session.execute(
        select(Account, User.email)
        .outerjoin(User, User.id == Account.owner_id)
        .where(condition)  # type: ignore[arg-type]
        .order_by(Account.created_at, Account.id)
    ).all()
    return [(account, email) for account, email in rows]


def entries_of_transfer(session: Session, transfer_id: uuid.UUID) -> list[LedgerEntry]:
    return list(
        session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.transfer_id == transfer_id)
            .order_by(LedgerEntry.amount, LedgerEntry.id)
        )
    )


def deliveries_of_transfer(
    session: Session, transfer_id: uuid.UUID
) -> list[tuple[WebhookDelivery, str, str]]:
    """Each webhook delivery of the transfer's events, with its event type and endpoint URL."""
    rows = session.execute(
        select(WebhookDelivery, Event.type, WebhookEndpoint.url)
        .join(Event, Event.seq == WebhookDelivery.event_seq)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        # Events carry the transfer in their payload only. No index: an operator's
        # one-off look-up scans the events table, which the API never does.
        .where(Event.payload["data"]["transfer"]["id"].astext == str(transfer_id))
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
    ).all()
    return [(delivery, str(kind), url) for delivery, kind, url in rows]
