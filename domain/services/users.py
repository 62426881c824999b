"""Registering users and checking their credentials."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain import password_policy, passwords
from domain.enums import Role
from domain.errors import AuthenticationFailed, Conflict, InvalidRequest
from domain.models import User
from domain.repositories import users as users_repo

# Deliberately simple: one "@", something on both sides, a dot in the domain.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, kw_only=True)
class RegisterUser:
    email: str
    password: str
    role: str = "customer"


def normalise_email(email: str) -> str:
    return email.strip().lower()


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


def authenticate(*, session: Session, email: str, password: str) -> User:
    """The same error, and the same work, for an unknown email and a wrong password.

    A correct password stored under an outdated scheme or parameters is rehashed.
    """
    user = users_repo.get_by_email(session, normalise_email(email))
    matches, new_hash = passwords.verify_password(password, user.password_hash if user else None)
    if not matches or user is None:
        raise AuthenticationFailed("invalid email or password", code="invalid_credentials")
    if new_hash is not None:
        user.password_hash = new_hash
        session.flush()
    return user
