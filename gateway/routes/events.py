"""GET /v1/events: the user's events in commit-safe order, for consumers that poll."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from domain.errors import InvalidRequest
from domain.resources import EventResource
from domain.services import events
from gateway import cursors
from gateway.deps import CurrentUser, SessionDep
from gateway.schemas.common import CursorParam, Page

router = APIRouter(tags=["events"])


def _position(given: str) -> events.EventCursor:
    # Cursors handed out before the shared codec were `xid.seq` or a bare `seq`: both
    # start with a digit, which an encoded cursor never does (its JSON starts `[`).
    if given[:1] in "0123456789":
        try:
            return events.EventCursor.decode(given)
        except InvalidRequest as exc:
            raise cursors.invalid_cursor() from exc
    xid, seq = cursors.decode(given, int, int)
    return events.EventCursor(cursors.as_int(xid), cursors.as_int(seq))


@router.get(
    "/v1/events",
    response_model=Page[EventResource],
    summary="Your events after a cursor, oldest first",
    description="Start with no `cursor`; then pass the `next_cursor` of the previous page. "
    "`after` is an alias of `cursor` (give one or the other), and cursors of the older "
    "`xid.seq` form are still accepted. Every event appears exactly once, in order. An "
    "empty page returns your cursor unchanged, so you can keep polling with it.",
)
def list_events(
    user: CurrentUser,
    session: SessionDep,
    cursor: CursorParam = None,
    after: Annotated[str | None, Query(description="Alias of `cursor`")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Items per page")] = 100,
) -> Page[EventResource]:
    if cursor and after and cursor != after:
        raise cursors.invalid_cursor()
    given = cursor or after  # empty means absent, as on every list
    position = _position(given) if given else None
    rows = events.list_events(session=session, user_id=user.id, after=position, limit=limit)
    if not rows:
        return Page(data=[], next_cursor=given or None)
    last = events.cursor_of(rows[-1])
    return Page(
        data=[events.render(e) for e in rows], next_cursor=cursors.encode(last.xid, last.seq)
    )
