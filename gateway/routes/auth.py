"""Registration, tokens (issue, refresh with rotation, logout) and /v1/me."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from domain.models import User
from domain.services import sessions, users
from gateway.deps import CurrentUser, SessionDep, SettingsDep
from gateway.schemas.auth import Credentials, RefreshRequest, TokenPair, UserOut
from gateway.tokens import issue_access_token
from settle.config import Settings

router = APIRouter(tags=["auth"])


def _user_out(user: User) -> UserOut:
    return UserOut.model_validate({"id": user.id, "email": user.email, "role": user.role})


def _token_pair(settings: Settings, user: User, refresh_token: str) -> TokenPair:
    return TokenPair(
        access_token=issue_access_token(settings, user_id=user.id, role=user.role),
        refresh_token=refresh_token,
        expires_in=settings.access_token_ttl_seconds,
    )


@router.post(
    "/v1/auth/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    summary="Create a customer user",
)
def register(body: Credentials, session: SessionDep) -> UserOut:
    user = users.register(
        session=session, cmd=users.RegisterUser(email=body.email, password=body.password)
    )
    session.commit()
    return _user_out(user)


@router.post(
    "/v1/auth/token",
    response_model=TokenPair,
    summary="Exchange email and password for an access and a refresh token",
    description="Wrong email and wrong password give the same 401 after the same work.",
)
def token(body: Credentials, session: SessionDep, settings: SettingsDep) -> TokenPair:
    user = users.authenticate(session=session, email=body.email, password=body.password)
    refresh = sessions.issue_refresh_token(
        session=session, user=user, ttl_seconds=settings.refresh_token_ttl_seconds
    )
    session.commit()
    return _token_pair(settings, user, refresh)


@router.post(
    "/v1/auth/refresh",
    response_model=TokenPair,
    summary="Rotate a refresh token",
    description="Each refresh token works once. Presenting a spent one revokes every "
    "token of its family (401).",
)
def refresh(body: RefreshRequest, session: SessionDep, settings: SettingsDep) -> TokenPair:
    try:
        user, new_refresh = sessions.rotate_refresh_token(
            session=session,
            token=body.refresh_token,
            ttl_seconds=settings.refresh_token_ttl_seconds,
        )
    finally:
        # Commit even on failure: a detected reuse must leave the family revoked.
        session.commit()
    return _token_pair(settings, user, new_refresh)


@router.post(
    "/v1/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a refresh token and its family",
)
def logout(body: RefreshRequest, session: SessionDep) -> Response:
    sessions.revoke_refresh_token(session=session, token=body.refresh_token)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/me", response_model=UserOut, summary="The authenticated user")
def me(user: CurrentUser) -> UserOut:
    return _user_out(user)
