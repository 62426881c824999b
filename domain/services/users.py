"""Registering users and checking their credentials."""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain import password_policy, passwords
from domain.enums import Role
from domain.errors import AuthenticationFailed, Conflict, InvalidRequest
from domain.models import User
from domain.repositories import users as users_repo
from domain.services import audit, sessions

# Deliberately simple: one "@", something on both sides, a dot in the domain.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, kw_only=True)
class RegisterUser:
    email: str
    password: str
    role: str = "customer"


def _is_blank(char: str) -> bool:
    # Whitespace, and the invisible format characters (zero-width space, BOM, ...)
    # that a paste can bring along.
    return char.isspace() or unicodedata.category(char) == "Cf"


def normalise_email(email: str) -> str:
    """The one form of an email that registration, login, rate limits and lockouts all use.

    Unicode NFKC (full-width letters, composed accents, NBSP → space), every kind of
    whitespace and invisible format character trimmed at both ends, case-folded,
    then NFKC again (case folding can leave a string unnormalised). Any variant of
    an address is the same identity, so a locked client cannot get round its
    lockout by retyping the address, nor register it twice.
    """
    text = unicodedata.normalize("NFKC", email)
    start, end = 0, len(text)
    while start < end and _is_blank(text[start]):
        start += 1
    while end > start and _is_blank(text[end - 1]):
        end -= 1
    return unicodedata.normalize("NFKC", text[start:end].casefold())


def check_new_user(*, session: Session, email: str, role: str) -> str:
    """Everything about a new user that can be checked before its password: the email
    (valid, not taken) and the role. Returns the normalised email. Lets `settle
    create-user` refuse before it asks for a password it could not use."""
    email = normalise_email(email)
    if len(email) > 320 or not _EMAIL.match(email):
        raise InvalidRequest("email is not a valid address", code="invalid_email")
    if role not in tuple(Role):
        raise InvalidRequest(f"role must be one of {', '.join(Role)}", code="invalid_role")
    if users_repo.get_by_email(session, email) is not None:
        raise Conflict("an account with this email already exists", code="email_taken")
    return email


def register(*, session: Session, cmd: RegisterUser) -> User:
    email = normalise_email(cmd.email)
    if len(email) > 320 or not _EMAIL.match(email):
        raise InvalidRequest("email is not a valid address", code="invalid_email")
    if cmd.role not in tuple(Role):
        raise InvalidRequest(f"role must be one of {', '.join(Role)}", code="invalid_role")
    password_policy.check(cmd.password, email=email)
    user = User(email=email, password_hash=passwords.hash_password(cmd.password), role=cmd.role)
    try:
        with session.begin_nested():
            users_repo.add(session, user)
    except IntegrityError as exc:
        raise Conflict("an account with this email already exists", code="email_taken") from exc
    return user


def change_password(
    *,
    session: Session,
    user: User,
    current_password: str,
    new_password: str,
    keep_family: uuid.UUID | None,
    cutoffs: sessions.TokenCutoffs,
    origin: audit.Origin,
) -> None:
    """Set a new password and end every other session of the user.

    Every access token issued so far is refused from the next request on, the
    caller's included; the caller's own session (`keep_family`, the refresh
    family its token names) keeps its refresh token, so the caller refreshes
    once and carries on. Every other refresh token is revoked.
    """
    matches, _ = passwords.verify_password(current_password, user.password_hash)
    if not matches:
        raise AuthenticationFailed("the current password is wrong", code="invalid_credentials")
    password_policy.check(new_password, email=user.email)
    user.password_hash = passwords.hash_password(new_password)
    sessions.revoke_sessions(session=session, user=user, cutoffs=cutoffs, keep_family=keep_family)
    audit.append(
        session,
        [
            origin.record(
                "auth.password_changed",
                actor_id=user.id,
                subject_type="user",
                subject_id=str(user.id),
            )
        ],
    )


def authenticate(*, session: Session, email: str, password: str) -> User:
    """The same error, and the same work, for an unknown email and a wrong password.

    A correct password stored under an outdated scheme or parameters is rehashed.
    """
    user = users_repo.get_by_email(session, normalise_email(email))
    matches, new_hash = passwords.verify_password(password, user.password_hash if user else None)
    # A disabled user is refused like a wrong password, after the same work.
    if not matches or user is None or user.disabled_at is not None:
        raise AuthenticationFailed("invalid email or password", code="invalid_credentials")
    if new_hash is not None:
        user.password_hash = new_hash
        session.flush()
    return user
