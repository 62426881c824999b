"""Password hashing: argon2id through passlib (the maintained `libpass` fork)."""

from __future__ import annotations

from passlib.context import CryptContext

# OWASP's argon2id baseline: m=19 MiB, t=2, p=1.
_context = CryptContext(
    schemes=["argon2"],
    argon2__type="ID",
    argon2__memory_cost=19 * 1024,
    argon2__time_cost=2,
    argon2__parallelism=1,
    deprecated="auto",
)

# Verified against when the email is unknown, so that path costs the same as a
# wrong password and does not reveal which emails are registered.
_DUMMY_HASH = _context.hash("settle-dummy-password-for-timing")

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128


def hash_password(password: str) -> str:
    return str(_context.hash(password))


def verify_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        _context.verify(password, _DUMMY_HASH)
        return False
    return bool(_context.verify(password, password_hash))
