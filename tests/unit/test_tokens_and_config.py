"""Access-token forgery attempts, settings safety, and small gateway helpers."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import ValidationError

from gateway.idempotency import fingerprint
from gateway.tokens import decode_access_token, issue_access_token
from settle.broker import broker_url
from settle.config import DEV_JWT_SECRET, Settings

SECRET = "s" * 48
WEBHOOK_KEY = "w" * 48  # required, like the JWT secret, outside development
AUDIT_KEY = "a" * 48  # likewise


@pytest.fixture
def settings():
    return Settings(
        environment="test",
        jwt_secret=SECRET,
        webhook_encryption_key=WEBHOOK_KEY,
        audit_key=AUDIT_KEY,
        database_url="",
        redis_url="",
    )


def _claims(settings, **overrides):
    now = datetime.now(UTC)
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "admin",
        "typ": "access",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "jti": "x",
    }
    claims.update(overrides)
    return claims


def test_round_trip(settings):
    user_id = uuid.uuid4()
    claims = decode_access_token(
        settings, issue_access_token(settings, user_id=user_id, role="customer")
    )
    assert claims.user_id == user_id and claims.role == "customer"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, default=str).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "forge",
    ["alg-none", "wrong-secret", "expired", "wrong-aud", "wrong-iss", "refresh-typ", "hs512"],
)
def test_forged_tokens_are_refused(settings, forge):
    claims = _claims(settings)
    if forge == "alg-none":
        payload = {
            k: (int(v.timestamp()) if isinstance(v, datetime) else v) for k, v in claims.items()
        }
        token = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': 'default'})}.{_b64(payload)}."
    elif forge == "wrong-secret":
        token = jwt.encode(claims, "x" * 48, algorithm="HS256")
    elif forge == "expired":
        token = jwt.encode(
            {**claims, "exp": datetime.now(UTC) - timedelta(seconds=1)}, SECRET, algorithm="HS256"
        )
    elif forge == "wrong-aud":
        token = jwt.encode({**claims, "aud": "other"}, SECRET, algorithm="HS256")
    elif forge == "wrong-iss":
        token = jwt.encode({**claims, "iss": "other"}, SECRET, algorithm="HS256")
    elif forge == "refresh-typ":
        token = jwt.encode({**claims, "typ": "refresh"}, SECRET, algorithm="HS256")
    else:
        token = jwt.encode(claims, SECRET, algorithm="HS512")
    with pytest.raises(jwt.InvalidTokenError):
        decode_access_token(settings, token)


def test_keys_rotate_by_kid():
    def keyed(keys, active):
        return Settings(
            environment="test",
            jwt_keys=keys,
            jwt_active_kid=active,
            webhook_encryption_key=WEBHOOK_KEY,
            audit_key=AUDIT_KEY,
        )

    old = keyed({"k1": "a" * 40}, "k1")
    token = issue_access_token(old, user_id=uuid.uuid4(), role="customer")
    assert jwt.get_unverified_header(token)["kid"] == "k1"
    both = keyed({"k1": "a" * 40, "k2": "b" * 40}, "k2")
    decode_access_token(both, token)  # old tokens still valid during the overlap
    new = issue_access_token(both, user_id=uuid.uuid4(), role="customer")
    assert jwt.get_unverified_header(new)["kid"] == "k2"
    retired = keyed({"k2": "b" * 40}, "k2")
    with pytest.raises(jwt.InvalidTokenError):
        decode_access_token(retired, token)
    with pytest.raises(ValidationError, match="must name a key"):
        keyed({"k2": "b" * 40}, "k1")


def test_audit_key_is_required_outside_development_and_rotates_by_kid():
    """Finding 3 (issue 10): the audit chain's key is not in the database and is no
    public default outside development (fails on main: there was no audit key)."""
    from settle.config import DEV_AUDIT_KEY

    base = {"jwt_secret": SECRET, "webhook_encryption_key": WEBHOOK_KEY, "metrics_token": SECRET}
    assert Settings(environment="development", **base).audit_keyring.active == "default"
    for environment in ("test", "production"):
        with pytest.raises(ValidationError, match="SETTLE_AUDIT_KEY must be set"):
            Settings(environment=environment, audit_key=DEV_AUDIT_KEY, **base)
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(environment="production", audit_key="short", **base)
    rotated = Settings(
        environment="production",
        audit_keys={"k1": "1" * 40, "k2": "2" * 40},
        audit_active_kid="k2",
        **base,
    ).audit_keyring
    assert rotated.active == "k2" and set(rotated.keys) == {"k1", "k2"}
    with pytest.raises(ValidationError, match="must name a key"):
        Settings(environment="production", audit_keys={"k1": "1" * 40}, **base)


def test_development_secret_is_refused_outside_development():
    Settings(environment="development", jwt_secret=DEV_JWT_SECRET)
    for environment in ("test", "production"):
        with pytest.raises(ValidationError, match="SETTLE_JWT_SECRET must be set"):
            Settings(environment=environment, jwt_secret=DEV_JWT_SECRET)
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(environment="production", jwt_secret="short")


def test_fingerprint_ignores_key_order_but_not_values():
    a = fingerprint("POST", "/v1/transfers", {"amount": 1, "currency": "USD"})
    b = fingerprint("post", "/v1/transfers", {"currency": "USD", "amount": 1})
    c = fingerprint("POST", "/v1/transfers", {"currency": "USD", "amount": 2})
    d = fingerprint("POST", "/v1/withdrawals", {"currency": "USD", "amount": 1})
    assert a == b and len({a, c, d}) == 3


def test_broker_url_translates_unix_sockets():
    assert broker_url("unix:///tmp/r.sock") == "redis+socket:///tmp/r.sock"
    assert broker_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_verified_tokens_remember_a_verdict_only_until_the_token_expires(settings, monkeypatch):
    from gateway import tokens as tokens_module

    cache = tokens_module.VerifiedTokens(settings)
    user = uuid.uuid4()
    token = issue_access_token(settings, user_id=user, role="customer")
    assert cache.claims(token).user_id == user
    decodes = []
    monkeypatch.setattr(
        tokens_module, "_decode", lambda *args: decodes.append(args) or pytest.fail("re-decoded")
    )
    assert cache.claims(token).user_id == user  # served from memory
    real_time = tokens_module.time.time
    monkeypatch.setattr(tokens_module.time, "time", lambda: real_time() + 3600)
    with pytest.raises(pytest.fail.Exception):
        cache.claims(token)  # expired: verified again (and refused by PyJWT for real)
    monkeypatch.undo()
    forged = jwt.encode(_claims(settings), "x" * 48, algorithm="HS256", headers={"kid": "default"})
    with pytest.raises(jwt.InvalidTokenError):
        tokens_module.VerifiedTokens(settings).claims(forged)
