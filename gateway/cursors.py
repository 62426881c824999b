"""The one cursor codec of every list: an opaque, versioned, url-safe position.

A cursor is base64url (unpadded) of compact JSON `[version, part, ...]`, each part
an integer in bigint range or a short ASCII string. Clients must treat it as
opaque; the version leaves room to change what a list pages on without breaking
the cursors already handed out.

Decoding is strict, because a cursor comes straight from the query string and
its parts go straight into SQL: anything but the canonical encoding of the
expected shape (wrong version, arity or types, integers outside bigint, long or
non-ASCII strings, padding, stray characters) is a 400 `invalid_cursor`, never a
500 from the database.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from gateway.errors import ApiError

VERSION = 1
BIGINT_MAX = 2**63 - 1
MAX_CURSOR_LENGTH = 200
MAX_STRING_PART = 64

Part = int | str

_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def invalid_cursor() -> ApiError:
    return ApiError(400, "invalid_cursor", "the cursor is not valid")


def _refuse(cause: Exception | None = None) -> NoReturn:
    raise invalid_cursor() from cause


def encode(*parts: Part) -> str:
    """The cursor for a position; `parts` are what the list pages on, most significant first."""
    payload = json.dumps([VERSION, *parts], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode("ascii")).decode("ascii").rstrip("=")


def decode(cursor: str, *kinds: type[int] | type[str]) -> tuple[Part, ...]:
    """The parts of `cursor`, checked against `kinds` (one type per part, in order)."""
    if not 0 < len(cursor) <= MAX_CURSOR_LENGTH or not _ALPHABET.fullmatch(cursor):
        _refuse()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        # Floats, NaN and Infinity are no part of any cursor: refuse them while parsing.
        value: Any = json.loads(
            raw.decode("ascii"), parse_float=_no_float, parse_constant=_no_float
        )
    except (binascii.Error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        _refuse(exc)
    if not isinstance(value, list) or len(value) != len(kinds) + 1:
        _refuse()
    version, *parts = value
    if type(version) is not int or version != VERSION:
        _refuse()
    for part, kind in zip(parts, kinds, strict=True):
        # `type(...) is`, not isinstance: JSON `true` would pass for the integer 1.
        if type(part) is not kind:
            _refuse()
        if isinstance(part, int) and not 0 <= part <= BIGINT_MAX:
            _refuse()
        if isinstance(part, str) and not (len(part) <= MAX_STRING_PART and part.isascii()):
            _refuse()
    # One position, one spelling: no padding, whitespace or alternative JSON forms.
    if encode(*parts) != cursor:
        _refuse()
    return tuple(parts)


def _no_float(text: str) -> NoReturn:
    raise ValueError(f"not an integer: {text}")


def as_int(part: Part) -> int:
    if not isinstance(part, int):
        _refuse()
    return part


def as_uuid(part: Part) -> uuid.UUID:
    if not isinstance(part, str):
        _refuse()
    try:
        key = uuid.UUID(part)
    except ValueError as exc:
        _refuse(exc)
    if str(key) != part:  # the one spelling `encode` writes
        _refuse()
    return key


def micros(moment: datetime) -> int:
    """A timestamp as whole microseconds since the epoch: exact, as PostgreSQL stores it."""
    return (moment - _EPOCH) // _MICROSECOND


def as_datetime(part: Part) -> datetime:
    try:
        return _EPOCH + as_int(part) * _MICROSECOND
    except OverflowError as exc:  # past year 9999
        _refuse(exc)


# In the helpers below, no cursor and an empty one (`?cursor=`) both mean the first page.


def decode_int(cursor: str | None) -> int | None:
    """A list paged on one integer key (a sequence number or an identity)."""
    if not cursor:
        return None
    (key,) = decode(cursor, int)
    return as_int(key)


def decode_uuid(cursor: str | None) -> uuid.UUID | None:
    """A list paged on a uuid primary key."""
    if not cursor:
        return None
    (key,) = decode(cursor, str)
    return as_uuid(key)


def decode_time_and_id(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """A list paged on (created_at, id): the id breaks ties between rows of one transaction."""
    if not cursor:
        return None
    moment, key = decode(cursor, int, str)
    return as_datetime(moment), as_uuid(key)


def time_and_id(moment: datetime, key: uuid.UUID) -> tuple[int, str]:
    return micros(moment), str(key)
