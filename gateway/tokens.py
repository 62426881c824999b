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
    kid = settings.jwt_active_kid
    return jwt.encode(claims, settings.jwt_keys[kid], algorithm=ALGORITHM, headers={"kid": kid})


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    """Raises jwt.InvalidTokenError for anything but a valid, unexpired access token.

    The key is chosen by the token's `kid` from the server-held set, so keys can be
    rotated: add the new key, make it active, drop the old one after the access-token
    lifetime. The algorithm is pinned; the token's own `alg` is never trusted.
    """
    kid = jwt.get_unverified_header(token).get("kid")
    key = settings.jwt_keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise jwt.InvalidTokenError("unknown or missing key id")
    claims = jwt.decode(
        token,
        key,
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
