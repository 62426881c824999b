"""Users by id and by (case-insensitive) email."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain.enums import Role
from domain.models import User


def get(session: Session, user_id: uuid.UUID) -> User | None:
    return session.get(User, user_id)


def get_by_email(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(func.lower(User.email) == email.lower())).first()


def add(session: Session, user: User) -> User:
    session.add(user)
    session.flush()
    return user


def roles_of(session: Session, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Role]:
    ids = list(user_ids)
    if not ids:
        return {}
    rows = session.execute(select(User.id, User.role).where(User.id.in_(ids)))
    return {user_id: Role(role) for user_id, role in rows}
