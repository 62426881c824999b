"""One normalisation of identities (issue 10, finding 1) and the access-token rules
of finding 8, without a database.

On the old code these fail: `normalise_email` was `strip().lower()` (full-width
letters, decomposed accents, zero-width characters and ß/SS stayed distinct
identities), `nbf` was not required, and any token lifetime was accepted.
"""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from pydantic import ValidationError

from domain.services.users import normalise_email
from gateway.tokens import ALGORITHM, decode_access_token, issue_access_token
from settle.config import MAX_ACCESS_TOKEN_TTL_SECONDS, Settings

BASE = "bob@example.com"
VARIANTS = [
    "bob@example.com ",  # trailing space
    "bob@example.com\t",  # tab
    "bob@example.com\u00a0",  # NBSP
    "bob@example.com\u2003",  # EM SPACE
    "bob@example.com\u3000",  # IDEOGRAPHIC SPACE
    " \u2003bob@example.com",  # leading whitespace
    "\u200bbob@example.com\ufeff",  # zero-width space, BOM
    "".join(chr(ord(c) + 0xFEE0) for c in "BOB@example.com"),  # full-width
    "BoB@Example.COM",  # mixed case
    "\nBOB@EXAMPLE.COM\r\n",
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_of_an_address_is_one_identity(variant: str) -> None:
    assert normalise_email(variant) == BASE


def test_composed_and_decomposed_accents_and_case_folding_agree() -> None:
    composed, decomposed = "jos\u00e9@example.com", "jose\u0301@example.com"
    assert normalise_email(composed) == normalise_email(decomposed) == composed
    assert normalise_email("STRASSE@example.com") == normalise_email("straße@example.com")
    assert normalise_email(normalise_email("Ǆ@x.io")) == normalise_email("Ǆ@x.io")


def test_inner_whitespace_is_kept_so_validation_refuses_it() -> None:
    assert normalise_email("bob @example.com") == "bob @example.com"


def _settings(**overrides: object) -> Settings:
    return Settings(
        environment="test",
        jwt_secret="k" * 40,
        webhook_encryption_key="w" * 40,
        audit_key="a" * 40,
        **overrides,
    )  # type: ignore[arg-type]


def _forge(settings: Settings, **claims: object) -> str:
    now = int(time.time())
    body = {
        "sub": str(uuid.uuid4()),
        "role": "customer",
        "typ": "access",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "x",
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    kid = settings.jwt_active_kid
    return jwt.encode(body, settings.jwt_keys[kid], algorithm=ALGORITHM, headers={"kid": kid})


def test_nbf_is_required() -> None:
    """Finding 8: a token without `nbf` was accepted."""
    settings = _settings()
    decode_access_token(settings, _forge(settings))
    with pytest.raises(jwt.InvalidTokenError):
        decode_access_token(settings, _forge(settings, nbf=None))


def test_a_token_living_longer_than_the_cap_is_refused() -> None:
    """Finding 8: a correctly signed token valid for a year was accepted."""
    settings = _settings()
    now = int(time.time())
    with pytest.raises(jwt.InvalidTokenError):
        decode_access_token(settings, _forge(settings, exp=now + 365 * 24 * 3600))
    decode_access_token(settings, _forge(settings, exp=now + MAX_ACCESS_TOKEN_TTL_SECONDS))


def test_the_lifetime_setting_is_capped() -> None:
    with pytest.raises(ValidationError):
        _settings(access_token_ttl_seconds=MAX_ACCESS_TOKEN_TTL_SECONDS + 1)


def test_issued_tokens_carry_a_precise_iat_and_their_session() -> None:
    settings = _settings()
    sid = uuid.uuid4()
    before = time.time()
    claims = decode_access_token(
        settings,
        issue_access_token(settings, user_id=uuid.uuid4(), role="customer", session_id=sid),
    )
    assert claims.session_id == sid
    assert before - 0.001 <= claims.issued_at <= time.time()
