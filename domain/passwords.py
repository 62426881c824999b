"""Password hashing: argon2id through passlib (the maintained `libpass` fork)."""

from __future__ import annotations

from passlib.context import CryptContext

# OWASP's argon2id baseline: m=19 MiB, t=2, p=1.
# pbkdf2_sha256 is accepted for hashes imported from older systems and upgraded
# to argon2id transparently at the next successful login.
_context = CryptContext(
    schemes=["argon2", "pbkdf2_sha256"],
    deprecated=["pbkdf2_sha256"],
    argon2__type="ID",
    argon2__memory_cost=19 * 1024,
    argon2__time_cost=2,
    argon2__parallelism=1,
)

# Verified against when the email is unknown, so that path costs the same as a
# wrong password and does not reveal which emails are registered.
_DUMMY_HASH = _context.hash("settle-dummy-password-for-timing")


def hash_password(password: str) -> str:
    return str(_context.hash(password))


def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """(matches, new hash to store if the stored one is outdated, else None)."""
    if password_hash is None:
        _context.verify(password, _DUMMY_HASH)
        return False, None
    matches, new_hash = _context.verify_and_update(password, password_hash)
    return bool(matches), new_hash
