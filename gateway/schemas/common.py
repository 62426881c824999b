"""Shared schema pieces: strict request base, pagination cursors, list envelopes."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator

from gateway.errors import ApiError


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
    data: list[T]
    next_cursor: str | None


def paginate(
    rows: Sequence[R], *, limit: int, render: Callable[[R], T], cursor_of: Callable[[R], str | int]
) -> Page[T]:
    """`rows` was fetched with `limit + 1`: the extra row only says another page exists."""
    more = len(rows) > limit
    shown = rows[:limit]
    return Page(
        data=[render(row) for row in shown],
        next_cursor=encode_cursor(cursor_of(shown[-1])) if more else None,
    )


def encode_cursor(value: str | int) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.urlsafe_b64decode(padded.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_cursor", "the cursor is not valid") from exc


def decode_int_cursor(cursor: str | None) -> int | None:
    raw = decode_cursor(cursor)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ApiError(400, "invalid_cursor", "the cursor is not valid")
    return int(raw)
