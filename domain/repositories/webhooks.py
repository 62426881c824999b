"""Webhook endpoints, deliveries and attempts."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from domain.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


def add(session: Session, endpoint: WebhookEndpoint) -> None:
    session.add(endpoint)
    session.flush()


def count_endpoints(session: Session, user_id: uuid.UUID) -> int:
    query = select(func.count()).where(
        WebhookEndpoint.user_id == user_id, WebhookEndpoint.deleted_at.is_(None)
    )
    return session.scalar(query) or 0


def get_endpoint(
    session: Session, endpoint_id: uuid.UUID, *, lock: bool = False
) -> WebhookEndpoint | None:
    endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=lock)
    return endpoint if endpoint is not None and endpoint.deleted_at is None else None


def has_pending_ping(session: Session, endpoint_id: uuid.UUID) -> bool:
    query = select(WebhookDelivery.id).where(
        WebhookDelivery.endpoint_id == endpoint_id,
        WebhookDelivery.event_seq.is_(None),
        WebhookDelivery.status == "pending",
    )
    return session.scalars(query.limit(1)).first() is not None


def add_delivery(session: Session, delivery: WebhookDelivery) -> None:
    session.add(delivery)
    session.flush()


# A row's place in a list ordered by creation: (created_at, id). Rows written by one
# transaction share created_at (now() is the transaction's start), so the id breaks
# the tie; together they are unique, and a page boundary never drops or repeats one.
Position = tuple[datetime, uuid.UUID]


def endpoints_of(
    session: Session,
    user_id: uuid.UUID,
    *,
    after: Position | None = None,
    limit: int | None = None,
) -> list[WebhookEndpoint]:
    """The user's endpoints, oldest first; `after` and `limit` page through them."""
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.user_id == user_id, WebhookEndpoint.deleted_at.is_(None)
    )
    if after is not None:
        position = tuple_(WebhookEndpoint.created_at, WebhookEndpoint.id)
        query = query.where(position > tuple_(*after))
    query = query.order_by(WebhookEndpoint.created_at, WebhookEndpoint.id).limit(limit)
    return list(session.scalars(query))


def get_delivery(
    session: Session, delivery_id: uuid.UUID, *, lock: bool = False
) -> WebhookDelivery | None:
    query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def deliveries_of(
    session: Session, endpoint_id: uuid.UUID, *, before: Position | None, limit: int
) -> list[WebhookDelivery]:
    """Newest first; `before` is the position of the last row of the previous page."""
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if before is not None:
        position = tuple_(WebhookDelivery.created_at, WebhookDelivery.id)
        query = query.where(position < tuple_(*before))
    query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    return list(session.scalars(query.limit(limit)))


def claim_due(
    session: Session, *, now: datetime, lease_until: datetime, limit: int
) -> list[uuid.UUID]:
    """Due deliveries, leased so a second dispatcher does not send them again meanwhile."""
    rows = list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    for delivery in rows:
        delivery.next_attempt_at = lease_until
    session.flush()
    return [delivery.id for delivery in rows]


def add_attempt(session: Session, attempt: WebhookAttempt) -> None:
    session.add(attempt)
    session.flush()


def attempts_of(session: Session, delivery_ids: list[uuid.UUID]) -> list[WebhookAttempt]:
    query = select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))
    return list(session.scalars(query.order_by(WebhookAttempt.id)))
