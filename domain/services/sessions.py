"""Sessions: refresh tokens (issue, rotate once, detect reuse, revoke) and revoking
a user's access tokens.

A session is a refresh-token family; its access tokens name it in their `sid`
claim. Access tokens are revoked by a per-user cutoff: tokens issued before
`users.tokens_valid_after` are refused. The cutoff is kept in the users row (read
by every route that loads the user) and, through the `TokenCutoffs` port, in
Redis, where the money routes read it in the round trip they already make.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol

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


class TokenCutoffs(Protocol):
    """Where the routes that never load the user find the cutoff (Redis in production)."""

    def revoke_before(self, user_id: uuid.UUID, at: datetime) -> None:
        """Access tokens of the user issued before `at` are invalid. Raises if it
        cannot be recorded: a revocation must not silently fail."""
        ...


def token_revoked(user: User, issued_at: float) -> bool:
    """Whether an access token of `user` issued at `issued_at` (epoch seconds) is void:
    the user is disabled, or the token predates the user's cutoff."""
    if user.disabled_at is not None:
        return True
    cutoff = user.tokens_valid_after
    return cutoff is not None and issued_at < cutoff.timestamp()


def revoke_sessions(
    *,
    session: Session,
    user: User,
    cutoffs: TokenCutoffs,
    keep_family: uuid.UUID | None = None,
) -> datetime:
    """End every session of `user` (but `keep_family`'s refresh tokens): refresh tokens
    revoked, and every access token issued until now refused from the next request on.

    The cutoff reaches Redis before the transaction commits: if the commit then
    fails, the user only has to log in again, while the other order could leave
    revoked tokens working on the money routes.
    """
    now = datetime.now(UTC)
    user.tokens_valid_after = now
    tokens_repo.revoke_user(session, user.id, at=now, keep_family=keep_family)
    session.flush()
    cutoffs.revoke_before(user.id, now)
    return now


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
) -> tuple[User, str, uuid.UUID]:
    """Spend `token` and return its user with a fresh token of the same family (and the family).

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
    if user is None or user.disabled_at is not None:
        raise AuthenticationFailed("refresh token is invalid or expired", code="invalid_token")
    new_token = issue_refresh_token(
        session=session, user=user, ttl_seconds=ttl_seconds, family_id=record.family_id
    )
    return user, new_token, record.family_id


def revoke_refresh_token(*, session: Session, token: str) -> None:
    """Logout: end the token's whole family. Unknown tokens are ignored (logout is idempotent)."""
    record = tokens_repo.get_by_hash_for_update(session, _hash(token))
    if record is not None:
        tokens_repo.revoke_family(session, record.family_id, at=datetime.now(UTC))
