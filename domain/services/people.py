"""Admins manage people: change a user's role, disable a user, look users up.

Each change ends the user's sessions at once (sessions.revoke_sessions): no token
keeps the old role, and a disabled user's next request is refused, on every
route. Each step is audited in the request's own transaction.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from domain.enums import Role
from domain.errors import InvalidRequest, NotFound
from domain.models import User
from domain.repositories import users as users_repo
from domain.services import audit, sessions, users


def _target(session: Session, *, actor: User, user_id: uuid.UUID) -> User:
    user = users_repo.get(session, user_id)
    if user is None:
        raise NotFound("user not found", code="user_not_found")
    if user.id == actor.id:
        # An admin cannot demote or disable themselves: the last admin could lock everyone out.
        raise InvalidRequest("admins cannot change their own role or status", code="own_user")
    return user


def set_role(
    *,
    session: Session,
    actor: User,
    user_id: uuid.UUID,
    role: Role,
    cutoffs: sessions.TokenCutoffs,
    origin: audit.Origin,
) -> User:
    user = _target(session, actor=actor, user_id=user_id)
    previous = user.role
    user.role = role
    sessions.revoke_sessions(session=session, user=user, cutoffs=cutoffs)
    audit.append(
        session,
        [
            origin.record(
                "admin.user_role_changed",
                actor_id=actor.id,
                subject_type="user",
                subject_id=str(user.id),
                data={"from": str(previous), "to": str(role)},
            )
        ],
    )
    return user


def disable(
    *,
    session: Session,
    actor: User,
    user_id: uuid.UUID,
    cutoffs: sessions.TokenCutoffs,
    origin: audit.Origin,
) -> User:
    """Disable the user: no login, no refresh, and every token they hold refused from
    their next request on. Disabling a disabled user changes nothing but is audited."""
    user = _target(session, actor=actor, user_id=user_id)
    if user.disabled_at is None:
        user.disabled_at = datetime.now(UTC)
    sessions.revoke_sessions(session=session, user=user, cutoffs=cutoffs)
    audit.append(
        session,
        [
            origin.record(
                "admin.user_disabled",
                actor_id=actor.id,
                subject_type="user",
                subject_id=str(user.id),
            )
        ],
    )
    return user


def find_by_email(
    session: Session, *, email: str, actor: User | None = None, origin: audit.Origin | None = None
) -> User | None:
    """The user with this email (any variant of it). With `actor` and `origin`, the
    lookup is audited: who looked for whom, and whether they were found."""
    found = users_repo.get_by_email(session, users.normalise_email(email))
    if actor is not None and origin is not None:
        audit.append(
            session,
            [
                origin.record(
                    "admin.users_looked_up",
                    actor_id=actor.id,
                    subject_type="user",
                    subject_id=str(found.id) if found is not None else None,
                    data={"email": email, "found": int(found is not None)},
                )
            ],
        )
    return found
