"""Access tokens: short-lived HS256 JWTs. The algorithm is pinned on both sides.

Every token carries `iat`, `nbf` and `exp`, and its lifetime (exp - iat) may not
exceed MAX_ACCESS_TOKEN_TTL_SECONDS: a token minted with a longer one is refused
even if its signature is good. `iat` keeps sub-second precision (RFC 7519
NumericDate may be fractional) so a revocation cutoff (domain/services/sessions.py)
separates the tokens issued just before it from those issued just after.
`sid` names the session (refresh-token family) the token was issued for.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from settle.config import MAX_ACCESS_TOKEN_TTL_SECONDS, Settings

ALGORITHM = "HS256"
ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - the `typ` claim value


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    role: str
    issued_at: float = 0.0  # epoch seconds; compared with the user's revocation cutoff
    session_id: uuid.UUID | None = None


def issue_access_token(
    settings: Settings, *, user_id: uuid.UUID, role: str, session_id: uuid.UUID | None = None
) -> str:
    now = round(time.time(), 6)
    claims: dict[str, object] = {
        "sub": str(user_id),
        "role": role,
        "typ": ACCESS_TOKEN_TYPE,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": int(now),
        "exp": int(now) + settings.access_token_ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    if session_id is not None:
        claims["sid"] = str(session_id)
    kid = settings.jwt_active_kid
    return jwt.encode(claims, settings.jwt_keys[kid], algorithm=ALGORITHM, headers={"kid": kid})


class VerifiedTokens:
    """Remembers recently verified access tokens until they expire.

    Verifying an HS256 token costs more than the rest of a money request's Python
    work together; the same client presents the same token for minutes. A token's
    verdict cannot change while it is unexpired (the key set is fixed for the
    process's life), so a hit only re-checks the expiry time. Bounded in size.
    """

    def __init__(self, settings: Settings, *, capacity: int = 10_000) -> None:
        self._settings = settings
        self._capacity = capacity
        self._known: dict[str, tuple[AccessClaims, float]] = {}

    def claims(self, token: str) -> AccessClaims:
        known = self._known.get(token)
        if known is not None:
            claims, expires_at = known
            if time.time() < expires_at:
                return claims
            del self._known[token]
        claims, expires_at = _decode(self._settings, token)
        if len(self._known) >= self._capacity:
            self._known.clear()  # crude but bounded; refilled by the next requests
        self._known[token] = (claims, expires_at)
        return claims


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    return _decode(settings, token)[0]


def _decode(settings: Settings, token: str) -> tuple[AccessClaims, float]:
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
        options={"require": ["exp", "iat", "nbf", "sub", "iss", "aud", "typ", "jti"]},
    )
    if claims.get("typ") != ACCESS_TOKEN_TYPE:
        raise jwt.InvalidTokenError("not an access token")
    try:
        issued_at, expires = float(claims["iat"]), float(claims["exp"])
    except (TypeError, ValueError) as exc:
        raise jwt.InvalidTokenError("bad time claims") from exc
    if expires - issued_at > MAX_ACCESS_TOKEN_TTL_SECONDS:
        raise jwt.InvalidTokenError("token lifetime exceeds the maximum")
    try:
        sid = claims.get("sid")
        found = AccessClaims(
            user_id=uuid.UUID(claims["sub"]),
            role=str(claims.get("role", "")),
            issued_at=issued_at,
            session_id=uuid.UUID(sid) if isinstance(sid, str) else None,
        )
    except ValueError as exc:
        raise jwt.InvalidTokenError("bad subject") from exc
    return found, float(claims["exp"])
