"""Registration, tokens (issue, refresh with rotation, logout) and /v1/me."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response, status

from domain.errors import TooManyAttempts
from domain.models import User
from domain.services import audit, sessions, users
from domain.services.logins import LogIn
from gateway import security_events
from gateway.deps import (
    CurrentUser,
    CutoffsDep,
    GuardsDep,
    LoginsDep,
    SessionDep,
    SettingsDep,
    UowDep,
)
from gateway.errors import PROBLEM_JSON, problem_responses
from gateway.guards import too_many_attempts
from gateway.schemas.auth import (
    Credentials,
    PasswordChange,
    RefreshRequest,
    TokenPair,
    UserOut,
)
from gateway.tokens import issue_access_token
from settle.config import Settings

router = APIRouter(tags=["auth"])

_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "Rate limited or temporarily locked; see Retry-After",
        "content": {PROBLEM_JSON: {}},
    }
}


def _user_out(user: User) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)


def _token_pair(
    settings: Settings, user: User, refresh_token: str, session_id: uuid.UUID
) -> TokenPair:
    return TokenPair(
        access_token=issue_access_token(
            settings, user_id=user.id, role=user.role, session_id=session_id
        ),
        refresh_token=refresh_token,
        expires_in=settings.access_token_ttl_seconds,
    )


@router.post(
    "/v1/auth/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=_LIMITED,
    summary="Create a customer user",
    description="Passwords: 8-128 characters, not a common password, not only digits, "
    "not similar to the email. Operators and admins are created with `settle create-user`.",
)
def register(
    body: Credentials,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    guards: GuardsDep,
) -> UserOut:
    guards.enforce(
        "register-ip", security_events.client_address(request), settings.rate_limit_register_per_ip
    )
    user = users.register(
        session=session, cmd=users.RegisterUser(email=body.email, password=body.password)
    )
    audit.append(
        session,
        [
            security_events.security_record(
                request,
                "auth.registered",
                actor_id=user.id,
                subject_type="user",
                subject_id=str(user.id),
            )
        ],
    )
    return _user_out(user)


@router.post(
    "/v1/auth/token",
    response_model=TokenPair,
    responses=_LIMITED,
    summary="Exchange email and password for an access and a refresh token",
    description="Wrong email and wrong password give the same 401 after the same work. "
    "Repeated failures lock the (account, client) pair for a growing, capped time (429).",
)
def token(
    body: Credentials,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    logins: LoginsDep,
) -> TokenPair:
    cmd = LogIn(email=body.email, password=body.password, origin=security_events.origin(request))
    try:
        done = logins.log_in(session=session, cmd=cmd)
    except TooManyAttempts as exc:
        raise too_many_attempts(exc) from exc
    return _token_pair(settings, done.user, done.refresh_token, done.family_id)


@router.post(
    "/v1/auth/refresh",
    response_model=TokenPair,
    summary="Rotate a refresh token",
    description="Each refresh token works once. Presenting a spent one revokes every "
    "token of its family (401).",
)
def refresh(
    body: RefreshRequest, request: Request, uow: UowDep, settings: SettingsDep
) -> TokenPair:
    user, new_refresh, family_id = sessions.rotate_refresh_token(
        uow=uow,
        token=body.refresh_token,
        ttl_seconds=settings.refresh_token_ttl_seconds,
        origin=security_events.origin(request),
    )
    return _token_pair(settings, user, new_refresh, family_id)


@router.post(
    "/v1/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a refresh token and its family",
)
def logout(body: RefreshRequest, session: SessionDep) -> Response:
    sessions.revoke_refresh_token(session=session, token=body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/v1/auth/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(
        {
            401: "Not authenticated, or the current password is wrong",
            422: "The new password does not meet the policy",
            429: "Rate limited; see Retry-After",
        }
    ),
    summary="Change your password; every other session ends",
    description="Every refresh token of yours but this session's is revoked, and every "
    "access token issued so far (this one included) is refused from the next request "
    "on: use this session's refresh token for a new pair.",
)
def change_password(
    body: PasswordChange,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    guards: GuardsDep,
    cutoffs: CutoffsDep,
) -> Response:
    # Guessing the current password here is throttled like guessing it at login.
    guards.enforce("password-user", str(user.id), settings.rate_limit_login_per_account)
    users.change_password(
        session=session,
        user=user,
        current_password=body.current_password,
        new_password=body.new_password,
        keep_family=request.state.access_claims.session_id,
        cutoffs=cutoffs,
        origin=security_events.origin(request),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/me", response_model=UserOut, summary="The authenticated user")
def me(user: CurrentUser) -> UserOut:
    return _user_out(user)
