"""Stored Idempotency-Key records: the fingerprint of the first request and its response."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from domain.models import IdempotencyKey


def try_claim(session: Session, user_id: uuid.UUID, key: str) -> bool:
    """Transaction-scoped advisory lock on (user, key): False if another request holds it.

    Held until the claiming transaction ends, so a second request with the same key
    while the first is still in flight is told so (409) instead of queueing behind it.
    """
    claimed = session.scalar(
        text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"),
        {"k": f"idempotency:{user_id}:{key}"},
    )
    return bool(claimed)


def purge_older_than(session: Session, cutoff: datetime) -> int:
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


def get(session: Session, user_id: uuid.UUID, key: str) -> IdempotencyKey | None:
    return session.scalars(
        select(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
    ).first()
