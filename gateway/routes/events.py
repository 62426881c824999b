"""GET /v1/events: the user's events in commit-safe order, for consumers that poll."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from domain.errors import InvalidRequest
from domain.resources import EventResource
from domain.services import events
from gateway.deps import CurrentUser, SessionDep
from gateway.errors import ApiError
from gateway.schemas.common import Page

router = APIRouter(tags=["events"])


@router.get(
    "/v1/events",
    response_model=Page[EventResource],
    summary="Your events after a cursor, oldest first",
    description="Start with no `cursor`; then pass the `next_cursor` of the previous page "
    "(`after` is accepted as an alias). Every event appears exactly once, in order. An empty "
    "page returns your cursor unchanged, so you can keep polling with it.",
)
def list_events(
    user: CurrentUser,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[str | None, Query(max_length=64, description="Alias of cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[EventResource]:
    given = cursor or after
    try:
        position = events.EventCursor.decode(given) if given else None
    except InvalidRequest as exc:
        raise ApiError(400, "invalid_cursor", "the cursor is not valid") from exc
    rows = events.list_events(session=session, user_id=user.id, after=position, limit=limit)
    next_cursor = events.cursor_of(rows[-1]).encode() if rows else given
    return Page(data=[events.render(e) for e in rows], next_cursor=next_cursor)
