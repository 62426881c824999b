"""Webhook endpoints, deliveries and attempts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, text, tuple_
from sqlalchemy.orm import Session

from domain.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from domain.repositories.prepared import Prepared
from domain.uow import QueuedDelivery


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
) -> list[QueuedDelivery]:
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
    return [QueuedDelivery(delivery.endpoint_id, delivery.id) for delivery in rows]


# What sending needs, for many deliveries in one round trip: the pending ones among
# `ids`, locked, with their endpoint (NULL columns when it is gone) and event. A test
# ping has no event: it carries its own payload.
_SENDABLE = Prepared(
    "settle_webhooks_sendable",
    """
    SELECT d.id, w.id AS endpoint_id, w.url, w.status AS endpoint_status, w.deleted_at,
           w.secret_ciphertext, w.previous_secret_ciphertext, w.previous_secret_expires_at,
           COALESCE(d.payload ->> 'id', e.id) AS msg_id,
           COALESCE(d.payload, e.payload) AS payload, d.event_seq IS NULL AS is_ping,
           e.created_at AS event_at
      FROM webhook_deliveries d
      LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id
      LEFT JOIN events e ON e.seq = d.event_seq
     WHERE d.id = ANY(CAST(:ids AS uuid[])) AND d.status = 'pending'
     ORDER BY d.event_seq NULLS FIRST
       FOR UPDATE OF d
    """,
)


def sendable(session: Session, delivery_ids: Sequence[uuid.UUID]) -> Sequence[Row[Any]]:
    return _SENDABLE.execute(session, {"ids": [str(i) for i in delivery_ids]}).all()


def close_undeliverable(
    session: Session, delivery_ids: Sequence[uuid.UUID], *, now: datetime, reason: str
) -> None:
    session.execute(
        text(
            """
            UPDATE webhook_deliveries
               SET status = 'failed', completed_at = :now, next_attempt_at = NULL,
                   last_error = :reason
             WHERE id = ANY(CAST(:ids AS uuid[]))
            """
        ),
        {"ids": [str(i) for i in delivery_ids], "now": now, "reason": reason},
    )


# Successful attempts, recorded together: the attempt rows and the deliveries closed
# as succeeded, in one statement.
_RECORD_SUCCESSES = Prepared(
    "settle_webhooks_record_successes",
    """
    WITH done AS (
        SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:codes AS int[]),
                             CAST(:durations AS int[])) AS t(id, code, duration_ms)
    ), attempts AS (
        INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, duration_ms)
        SELECT id, :now, code, duration_ms FROM done
    )
    UPDATE webhook_deliveries d
       SET attempts = d.attempts + 1, last_status_code = done.code, last_error = NULL,
           status = 'succeeded', completed_at = :now, next_attempt_at = NULL
      FROM done
     WHERE d.id = done.id
    """,
    {"now": "timestamptz"},
)


def record_successes(
    session: Session,
    *,
    now: datetime,
    delivery_ids: Sequence[uuid.UUID],
    status_codes: Sequence[int],
    durations_ms: Sequence[int],
) -> None:
    _RECORD_SUCCESSES.execute(
        session,
        {
            "ids": [str(i) for i in delivery_ids],
            "codes": list(status_codes),
            "durations": list(durations_ms),
            "now": now,
        },
    )


def next_due(session: Session) -> datetime | None:
    """When the earliest pending delivery falls due (the partial index answers it)."""
    query = select(func.min(WebhookDelivery.next_attempt_at)).where(
        WebhookDelivery.status == "pending"
    )
    return session.scalar(query)


def notify(session: Session, channel: str) -> None:
    """NOTIFY the dispatchers; PostgreSQL delivers it when (and only if) this commits."""
    session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})


def add_attempt(session: Session, attempt: WebhookAttempt) -> None:
    session.add(attempt)
    session.flush()


def attempts_of(session: Session, delivery_ids: list[uuid.UUID]) -> list[WebhookAttempt]:
    query = select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))
    return list(session.scalars(query.order_by(WebhookAttempt.id)))


_END_FAILURE_STREAKS = Prepared(
    "settle_webhooks_end_failure_streaks",
    """
    UPDATE webhook_endpoints SET failing_since = NULL
     WHERE id = ANY(CAST(:ids AS uuid[])) AND failing_since IS NOT NULL
    """,
)


def end_failure_streaks(session: Session, endpoint_ids: Sequence[uuid.UUID]) -> None:
    _END_FAILURE_STREAKS.execute(session, {"ids": [str(i) for i in endpoint_ids]})


def count_pending(session: Session) -> int:
    query = select(func.count()).where(WebhookDelivery.status == "pending")
    return session.scalar(query) or 0
