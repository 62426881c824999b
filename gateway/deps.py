"""FastAPI dependencies: settings, the request's unit of work, the caller, role gates.

Every request that touches the database gets one unit of work (`UowDep`), opened
before the route runs and ended right after it returns, before the response is
sent: committed (then its after-commit effects run) if the route succeeded,
rolled back if it raised. Routes never commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from domain.enums import Role
from domain.models import User
from domain.repositories import users as users_repo
from domain.services import sessions
from domain.services.logins import Logins
from domain.uow import UnitOfWork, unit_of_work
from gateway import security_events
from gateway.errors import ApiError
from gateway.guards import Guards, guards
from gateway.tokens import AccessClaims, VerifiedTokens
from settle.config import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_uow(request: Request) -> Iterator[UnitOfWork]:
    with unit_of_work(request.app.state.session_factory, request.app.state.ports) as uow:
        yield uow


# scope="function": the unit ends when the route returns, before the response
# goes out, so a 2xx is only ever sent for committed work (money rule 9).
UowDep = Annotated[UnitOfWork, Depends(get_uow, scope="function")]


def get_session(uow: UowDep) -> Session:
    return uow.session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
GuardsDep = Annotated[Guards, Depends(guards)]


def get_logins(request: Request) -> Logins:
    found: Logins = request.app.state.logins
    return found


LoginsDep = Annotated[Logins, Depends(get_logins)]

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /v1/auth/token")

_UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


def _invalid_token() -> ApiError:
    return ApiError(
        401, "invalid_token", "the access token is invalid or expired", _UNAUTHENTICATED
    )


def _claims(request: Request, credentials: HTTPAuthorizationCredentials | None) -> AccessClaims:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401, "not_authenticated", "a bearer access token is required", _UNAUTHENTICATED
        )
    tokens: VerifiedTokens = request.app.state.tokens
    try:
        return tokens.claims(credentials.credentials)
    except jwt.ExpiredSignatureError as exc:
        # The one failure a client fixes by itself: say how, instead of "invalid".
        raise ApiError(
            401,
            "token_expired",
            "the access token has expired; get a new one from POST /v1/auth/refresh "
            "with your refresh token (or log in again at POST /v1/auth/token)",
            {"WWW-Authenticate": 'Bearer error="invalid_token", error_description="expired"'},
        ) from exc
    except jwt.InvalidTokenError as exc:
        raise _invalid_token() from exc


def _authenticate(
    request: Request, session: Session, credentials: HTTPAuthorizationCredentials | None
) -> User:
    claims = _claims(request, credentials)
    user = users_repo.get(session, claims.user_id)
    # Revoked (password change, role change, disabled): the users row says so.
    if user is None or sessions.token_revoked(user, claims.issued_at):
        raise _invalid_token()
    request.state.access_claims = claims
    return user


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def current_user(request: Request, session: SessionDep, credentials: Credentials) -> User:
    return _authenticate(request, session, credentials)


async def token_caller(request: Request, credentials: Credentials) -> AccessClaims:
    """The caller as its access token says, with no database read.

    For the money routes: `settle_accept` checks in the same statement that the
    user still exists (and, for deposits, the role), so a lookup here would only
    add a round trip. Revocation is checked by the route, against the cutoff it
    reads from Redis in its one pipeline (`token_still_valid`).
    """
    return _claims(request, credentials)


def token_still_valid(claims: AccessClaims, cutoff: float | None) -> None:
    """Refuse a token issued before its user's cutoff (as read from Redis)."""
    if cutoff is not None and claims.issued_at < cutoff:
        raise _invalid_token()


def get_token_cutoffs(request: Request) -> sessions.TokenCutoffs:
    found: sessions.TokenCutoffs = request.app.state.token_cutoffs
    return found


CutoffsDep = Annotated[sessions.TokenCutoffs, Depends(get_token_cutoffs)]


def current_user_detached(request: Request, credentials: Credentials) -> User:
    """Like `current_user`, but returns the connection to the pool at once.

    For long-running (long-poll) requests that must not pin a database connection.
    """
    with request.app.state.session_factory() as session:
        return _authenticate(request, session, credentials)


CurrentUser = Annotated[User, Depends(current_user)]
TokenCaller = Annotated[AccessClaims, Depends(token_caller)]
DetachedUser = Annotated[User, Depends(current_user_detached)]


def operator_user(user: CurrentUser, request: Request) -> User:
    if not user.role.sees_everything:
        security_events.record(
            request, "auth.permission_denied", actor_id=user.id, data={"method": request.method}
        )
        raise ApiError(403, "forbidden", "this operation needs the operator role")
    return user


OperatorUser = Annotated[User, Depends(operator_user)]


def admin_user(user: CurrentUser, request: Request) -> User:
    if user.role != Role.ADMIN:
        security_events.record(
            request, "auth.permission_denied", actor_id=user.id, data={"method": request.method}
        )
        raise ApiError(403, "forbidden", "this operation needs the admin role")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
