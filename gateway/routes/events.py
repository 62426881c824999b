"""GET /v1/events: the user's events in commit-safe order, filtered by type, long-polled.

A long-poll (`?wait=N`) holds no database connection while it sleeps: it waits on the
gateway's one LISTEN connection (gateway/completions.py) for a notification that the
user got events. An event becomes visible once every older transaction of the server
has finished (domain/services/events.py), which may be a moment after the
notification; until the read's snapshot has passed the transactions committed before
it, the waiter re-reads with a short, growing delay, and then sleeps again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from domain.enums import EventType
from domain.errors import InvalidRequest
from domain.models import User
from domain.resources import EventResource
from domain.services import events
from gateway import cursors
from gateway.completions import Completions, TooManyWaits
from gateway.deps import DetachedUser
from gateway.errors import ApiError, problem_responses
from gateway.schemas.common import CursorParam, Page

router = APIRouter(tags=["events"])

FIRST_RECHECK_SECONDS = 0.01
MAX_RECHECK_SECONDS = 1.0


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
    responses=problem_responses({429: "Too many `wait` requests at once (`too_many_waits`)"}),
    summary="Your events after a cursor, oldest first; optionally filtered and long-polled",
    description="Start with no `cursor`; then pass the `next_cursor` of the previous page. "
    "`after` is an alias of `cursor` (give one or the other), and cursors of the older "
    "`xid.seq` form are still accepted. Every event appears exactly once, in order. An "
    "empty page returns your cursor unchanged, so you can keep polling with it; with "
    "`types`, it may move past events of other types. With `wait=N`, an empty page is "
    "held until an event arrives or N seconds pass (at most `SETTLE_MAX_WAITS_PER_USER` "
    "such requests at once per user: past it, 429 `too_many_waits`).",
)
async def list_events(
    request: Request,
    user: DetachedUser,
    cursor: CursorParam = None,
    after: Annotated[str | None, Query(description="Alias of `cursor`")] = None,
    types: Annotated[
        str | None,
        Query(
            description="Comma-separated event types to return, e.g. "
            "`balance.below,balance.above`; omit for every type. One of: "
            + ", ".join(f"`{t.value}`" for t in EventType),
            max_length=1000,
        ),
    ] = None,
    wait: Annotated[
        int,
        Query(ge=0, le=30, description="Seconds to hold an empty page for new events"),
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="Items per page")] = 100,
) -> Page[EventResource]:
    if cursor and after and cursor != after:
        raise cursors.invalid_cursor()
    given = cursor or after  # empty means absent, as on every list
    position = _position(given) if given else None
    wanted = events.parse_types(types)
    factory: sessionmaker[Session] = request.app.state.session_factory

    def read(start: events.EventCursor | None) -> events.EventPage:
        with factory() as session:
            return events.list_events(
                session=session, user_id=user.id, after=start, limit=limit, types=wanted
            )

    if not wait:
        page = await run_in_threadpool(read, position)
        new = page.next
    else:
        try:
            page, new = await _wait_for_events(
                request.app.state.completions, user, position, read, wait
            )
        except TooManyWaits as exc:
            raise ApiError(
                429,
                "too_many_waits",
                "too many concurrent ?wait= requests; wait for one to finish, or poll without wait",
                {"Retry-After": "1"},
            ) from exc
    return Page(
        data=[events.render(e) for e in page.events],
        next_cursor=cursors.encode(new.xid, new.seq) if new else given or None,
    )


async def _wait_for_events(
    completions: Completions,
    user: User,
    position: events.EventCursor | None,
    read: Callable[[events.EventCursor | None], events.EventPage],
    wait: int,
) -> tuple[events.EventPage, events.EventCursor | None]:
    """Reads until a page has events or `wait` seconds pass; returns the last page and
    the cursor after everything seen (a filtered read may move past other types)."""
    deadline = time.monotonic() + wait
    moved: events.EventCursor | None = None
    # Events committed before a read are visible to it only once its snapshot's xmin has
    # passed them. Registered before the first read; the first read then counts as woken,
    # since events may have committed (and notified) before we listened.
    must_see_below = 0
    woken, recheck = True, FIRST_RECHECK_SECONDS
    async with completions.waiting_for_events(user.id) as notified:
        while True:
            page = await run_in_threadpool(read, moved or position)
            moved = page.next or moved
            if woken:
                must_see_below = max(must_see_below, page.committed_below)
            left = deadline - time.monotonic()
            if page.events or left <= 0:
                return page, moved
            if page.visible_below < must_see_below:
                # Notified, but an older transaction somewhere still hides the event.
                await asyncio.sleep(min(recheck, left))
                recheck = min(2 * recheck, MAX_RECHECK_SECONDS)
                woken = False
                continue
            recheck = FIRST_RECHECK_SECONDS
            woken = await completions.sleep(notified, left)
