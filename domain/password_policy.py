"""The password policy of the original banking API spec, checked at registration.

At least 8 and at most 128 characters; not a common password (list shipped in
`domain/data/common-passwords.txt`); not only digits; not too similar to the email.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

from domain.errors import InvalidRequest

MIN_LENGTH = 8
MAX_LENGTH = 128
_COMMON_PASSWORDS = Path(__file__).parent / "data" / "common-passwords.txt"
_SIMILARITY_LIMIT = 0.7


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    lines = _COMMON_PASSWORDS.read_text().splitlines()
    return frozenset(line.strip().lower() for line in lines if line and not line.startswith("#"))


def check(password: str, *, email: str) -> None:
    def weak(reason: str) -> InvalidRequest:
        return InvalidRequest(f"password {reason}", code="weak_password")

    if len(password) < MIN_LENGTH:
        raise weak(f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise weak(f"must be at most {MAX_LENGTH} characters")
    lowered = password.lower()
    if lowered in common_passwords():
        raise weak("is too common")
    if password.isdigit():
        raise weak("must not be only digits")
    local_part = email.split("@", 1)[0].lower()
    if len(local_part) >= 4 and (local_part in lowered or lowered in email.lower()):
        raise weak("must not contain your email address")
    if difflib.SequenceMatcher(None, lowered, email.lower()).ratio() >= _SIMILARITY_LIMIT:
        raise weak("is too similar to your email address")
