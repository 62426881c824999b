"""Access tokens: short-lived HS256 JWTs. The algorithm is pinned on both sides."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from settle.config import Settings

ALGORITHM = "HS256"
ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - the `typ` claim value


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    role: str


def issue_access_token(settings: Settings, *, user_id: uuid.UUID, role: str) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "role": role,
        "typ": ACCESS_TOKEN_TYPE,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(seconds=settings.access_token_ttl_seconds),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    """Raises jwt.InvalidTokenError for anything but a valid, unexpired access token."""
    claims = jwt.decode(
        token,
        settings.jwt_secret,
        algorithms=[ALGORITHM],  # never trust the token's own "alg"
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        options={"require": ["exp", "iat", "sub", "iss", "aud", "typ", "jti"]},
    )
    if claims.get("typ") != ACCESS_TOKEN_TYPE:
        raise jwt.InvalidTokenError("not an access token")
    try:
        return AccessClaims(user_id=uuid.UUID(claims["sub"]), role=str(claims.get("role", "")))
    except ValueError as exc:
        raise jwt.InvalidTokenError("bad subject") from exc
