"""Refresh tokens: issue, rotate (single use), detect reuse, revoke."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from domain.errors import AuthenticationFailed
from domain.models import RefreshToken, User
from domain.repositories import refresh_tokens as tokens_repo
from domain.repositories import users as users_repo
from domain.services import audit
from domain.uow import UnitOfWork

REFRESH_TOKEN_PREFIX = "rt_"  # noqa: S105 - a prefix, not a secret


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_refresh_token(
    *, session: Session, user: User, ttl_seconds: int, family_id: uuid.UUID | None = None
) -> str:
    token = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
    tokens_repo.add(
        session,
        RefreshToken(
            user_id=user.id,
            family_id=family_id or uuid.uuid4(),
            token_hash=_hash(token),
            expires_at=datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        ),
    )
    return token


def rotate_refresh_token(
    *, uow: UnitOfWork, token: str, ttl_seconds: int, origin: audit.Origin
) -> tuple[User, str]:
    """Spend `token` and return its user with a fresh token of the same family.

    Presenting a token that was already spent means it was copied: the whole
    family is revoked, so the thief's and the owner's sessions both end. That
    revocation and its audit event are kept although the request is refused.
    """
    session = uow.session
    now = datetime.now(UTC)
    record = tokens_repo.get_by_hash_for_update(session, _hash(token))
    if record is None or record.revoked_at is not None or record.expires_at <= now:
        raise AuthenticationFailed("refresh token is invalid or expired", code="invalid_token")
    if record.used_at is not None:
        tokens_repo.revoke_family(session, record.family_id, at=now)
        audit.append(session, [origin.record("auth.refresh_token_reused")])
        uow.keep_on_refusal()
        raise AuthenticationFailed("refresh token was already used", code="token_reused")
    record.used_at = now
    user = users_repo.get(session, record.user_id)
    if user is None:
        raise AuthenticationFailed("refresh token is invalid or expired", code="invalid_token")
    new_token = issue_refresh_token(
        session=session, user=user, ttl_seconds=ttl_seconds, family_id=record.family_id
    )
    return user, new_token


def revoke_refresh_token(*, session: Session, token: str) -> None:
    """Logout: end the token's whole family. Unknown tokens are ignored (logout is idempotent)."""
    record = tokens_repo.get_by_hash_for_update(session, _hash(token))
    if record is not None:
        tokens_repo.revoke_family(session, record.family_id, at=datetime.now(UTC))
