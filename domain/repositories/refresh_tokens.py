"""Refresh tokens, stored only as SHA-256 hashes, grouped in rotation families."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain.models import RefreshToken


def get_by_hash_for_update(session: Session, token_hash: str) -> RefreshToken | None:
    # Row lock: two concurrent refreshes with one token cannot both rotate it.
    return session.scalars(
        select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
    ).first()


def add(session: Session, token: RefreshToken) -> None:
    session.add(token)
    session.flush()


def revoke_family(session: Session, family_id: uuid.UUID, *, at: datetime) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=at)
    )


def revoke_user(
    session: Session, user_id: uuid.UUID, *, at: datetime, keep_family: uuid.UUID | None = None
) -> None:
    """Revoke every live refresh token of the user, except those of `keep_family`."""
    query = update(RefreshToken).where(
        RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None)
    )
    if keep_family is not None:
        query = query.where(RefreshToken.family_id != keep_family)
    session.execute(query.values(revoked_at=at))
