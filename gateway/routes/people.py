"""Admins manage people: change roles, disable users; operators and admins look users up.

Every change ends the user's sessions at once (domain/services/people.py).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request

from domain.models import User
from domain.services import people
from gateway import security_events
from gateway.deps import AdminUser, CutoffsDep, OperatorUser, SessionDep
from gateway.errors import problem_responses
from gateway.schemas.people import AdminUserOut, RoleChange

router = APIRouter(prefix="/v1/admin/users", tags=["admins"])

_CHANGE = problem_responses(
    {
        403: "Admins only",
        404: "No such user",
        422: "Invalid role, or the admin's own user",
    }
)


def _out(user: User) -> AdminUserOut:
    return AdminUserOut.model_validate(user, from_attributes=True)


@router.get(
    "",
    response_model=list[AdminUserOut],
    responses=problem_responses({403: "Operators and admins only"}),
    summary="Find a user by email (any variant of it): a list of at most one",
)
def find_users(
    email: Annotated[str, Query(min_length=1, max_length=320)],
    request: Request,
    user: OperatorUser,
    session: SessionDep,
) -> list[AdminUserOut]:
    """Audited as `admin.users_looked_up` (who looked for which email, and the result)."""
    found = people.find_by_email(
        session, email=email, actor=user, origin=security_events.origin(request)
    )
    return [_out(found)] if found is not None else []


@router.post(
    "/{user_id}/role",
    response_model=AdminUserOut,
    responses=_CHANGE,
    summary="Change a user's role (admins only); the user's sessions end",
)
def change_role(
    user_id: uuid.UUID,
    body: RoleChange,
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    cutoffs: CutoffsDep,
) -> AdminUserOut:
    changed = people.set_role(
        session=session,
        actor=admin,
        user_id=user_id,
        role=body.role,
        cutoffs=cutoffs,
        origin=security_events.origin(request),
    )
    return _out(changed)


@router.post(
    "/{user_id}/disable",
    response_model=AdminUserOut,
    responses=_CHANGE,
    summary="Disable a user (admins only): no login, and every token refused at once",
)
def disable_user(
    user_id: uuid.UUID,
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    cutoffs: CutoffsDep,
) -> AdminUserOut:
    disabled = people.disable(
        session=session,
        actor=admin,
        user_id=user_id,
        cutoffs=cutoffs,
        origin=security_events.origin(request),
    )
    return _out(disabled)
