"""Stored Idempotency-Key records: the fingerprint of the first request and its response."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.models import IdempotencyKey


def get(session: Session, user_id: uuid.UUID, key: str) -> IdempotencyKey | None:
    return session.scalars(
        select(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
    ).first()
