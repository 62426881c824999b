"""GET /v1/events: the user's events in commit order, for consumers that poll."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from domain.models import Event
from domain.services import events
from gateway.deps import CurrentUser, SessionDep
from gateway.errors import ApiError
from gateway.schemas.common import Page
from gateway.schemas.webhooks import EventOut

router = APIRouter(tags=["events"])


def event_out(event: Event) -> EventOut:
    return EventOut.model_validate(event.payload)


@router.get(
    "/v1/events",
    response_model=Page[EventOut],
    summary="Your events after a cursor, oldest first",
    description="Start with no `after`; then pass the `next_cursor` of the previous page. "
    "Every event appears exactly once, in commit order. An empty page returns your cursor "
    "unchanged, so you can poll with it.",
)
def list_events(
    user: CurrentUser,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[EventOut]:
    if after is not None and not (after.isascii() and after.isdigit() and len(after) <= 18):
        raise ApiError(400, "invalid_cursor", "the cursor is not valid")
    after_seq = int(after) if after else 0
    rows = events.list_events(session=session, user_id=user.id, after_seq=after_seq, limit=limit)
    cursor = str(rows[-1].seq) if rows else (after or None)
    return Page(data=[event_out(e) for e in rows], next_cursor=cursor)
