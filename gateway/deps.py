"""FastAPI dependencies: settings, database session, current user, role gates."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from domain.models import User
from domain.repositories import users as users_repo
from gateway import security_events
from gateway.errors import ApiError
from gateway.guards import Guards, guards
from gateway.tokens import decode_access_token
from gateway.wakeups import WakeupPublisher
from settle.config import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request. Routes commit explicitly, before they answer."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.close()


def get_wakeups(request: Request) -> WakeupPublisher:
    publisher: WakeupPublisher = request.app.state.wakeups
    return publisher


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
WakeupsDep = Annotated[WakeupPublisher, Depends(get_wakeups)]
GuardsDep = Annotated[Guards, Depends(guards)]

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /v1/auth/token")

_UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


def _authenticate(
    settings: Settings, session: Session, credentials: HTTPAuthorizationCredentials | None
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401, "not_authenticated", "a bearer access token is required", _UNAUTHENTICATED
        )
    try:
        claims = decode_access_token(settings, credentials.credentials)
    except jwt.InvalidTokenError as exc:
        raise ApiError(
            401, "invalid_token", "the access token is invalid or expired", _UNAUTHENTICATED
        ) from exc
    user = users_repo.get(session, claims.user_id)
    if user is None:
        raise ApiError(
            401, "invalid_token", "the access token is invalid or expired", _UNAUTHENTICATED
        )
    return user


def current_user(
    settings: SettingsDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    return _authenticate(settings, session, credentials)


def current_user_detached(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """Like `current_user`, but returns the connection to the pool at once.

    For long-running (long-poll) requests that must not pin a database connection.
    """
    with request.app.state.session_factory() as session:
        return _authenticate(settings, session, credentials)


CurrentUser = Annotated[User, Depends(current_user)]
DetachedUser = Annotated[User, Depends(current_user_detached)]


def operator_user(user: CurrentUser, request: Request) -> User:
    if user.role not in ("operator", "admin"):
        security_events.record(
            request, "auth.permission_denied", actor_id=user.id, data={"method": request.method}
        )
        raise ApiError(403, "forbidden", "this operation needs the operator role")
    return user


OperatorUser = Annotated[User, Depends(operator_user)]
