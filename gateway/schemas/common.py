"""Shared schema pieces: the strict request base, the list envelope and its query parameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    model_validator,
)

from domain import metadata
from gateway import cursors


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(v) for v in value)
    return False


T = TypeVar("T")
R = TypeVar("R")

# The one cursor parameter of every list (and `Limit`, for lists of up to 200 a page).
CursorParam = Annotated[
    str | None,
    Query(description="Opaque: the `next_cursor` of the previous page. Omit for the first page"),
]
Limit = Annotated[int, Query(ge=1, le=200, description="Items per page")]


def _in_utc(moment: datetime) -> datetime:
    # PostgreSQL takes offsets up to ±15:59 only (Python up to ±23:59): the same instant in
    # UTC always fits; one that leaves the calendar in UTC is refused here, not in SQL.
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("the instant is outside years 1 to 9999 in UTC") from exc


Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""A query instant: RFC 3339 with an offset (a naive time is refused), taken in UTC."""

Metadata = Annotated[
    dict[StrictStr, StrictStr],
    AfterValidator(metadata.check_metadata),
    Field(
        description=f"Your own key/value strings, returned as sent and included in events: "
        f"at most {metadata.MAX_KEYS} keys of at most {metadata.MAX_KEY_LENGTH} characters, "
        f"values at most {metadata.MAX_VALUE_LENGTH} characters",
        examples=[{"order_id": "123"}],
    ),
]


class StrictRequest(BaseModel):
    """Unknown fields are an error, so nobody can smuggle in `balance`, `role` or `status`."""

    # Strictness per field (StrictInt, StrictStr) rather than model-wide: FastAPI
    # validates decoded JSON in Python mode, where strict UUIDs would reject strings.
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        """PostgreSQL text cannot hold NUL; refuse it here (422) rather than fail later."""
        if _contains_nul(data):
            raise ValueError("strings must not contain NUL characters")
        return data


class Page(BaseModel, Generic[T]):
    """Every list: a page of `data`, and the cursor of the next page (null on the last)."""

    data: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null when there is none"
    )


def paginate(
    rows: Sequence[R],
    *,
    limit: int,
    render: Callable[[R], T],
    cursor_of: Callable[[R], tuple[cursors.Part, ...]],
) -> Page[T]:
    """`rows` was fetched with `limit + 1`: the extra row only says another page exists."""
    more = len(rows) > limit
    shown = rows[:limit]
    return Page(
        data=[render(row) for row in shown],
        next_cursor=cursors.encode(*cursor_of(shown[-1])) if more else None,
    )
