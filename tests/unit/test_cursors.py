"""The shared cursor codec: round trips, and a 400 `invalid_cursor` for anything else."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from domain.errors import InvalidRequest
from domain.services.events import EventCursor
from gateway import cursors
from gateway.errors import ApiError


def _raw(text: str) -> str:
    """A cursor built by hand: base64url, unpadded, of `text`."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_round_trips_of_every_shape():
    key = uuid.uuid4()
    moment = datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)
    assert cursors.decode_int(cursors.encode(cursors.BIGINT_MAX)) == cursors.BIGINT_MAX
    assert cursors.decode_int(cursors.encode(0)) == 0
    assert cursors.decode_uuid(cursors.encode(str(key))) == key
    assert cursors.decode_time_and_id(cursors.encode(*cursors.time_and_id(moment, key))) == (
        moment,
        key,
    )
    assert cursors.decode_int(None) is None


@pytest.mark.parametrize("first_page", [None, ""])
def test_no_cursor_and_an_empty_one_mean_the_first_page(first_page):
    assert cursors.decode_int(first_page) is None
    assert cursors.decode_uuid(first_page) is None
    assert cursors.decode_time_and_id(first_page) is None
    with pytest.raises(ApiError):
        cursors.decode("", int)  # the codec itself has no empty cursor


def test_a_cursor_is_url_safe_and_versioned():
    cursor = cursors.encode(2**62, "x" * 64)
    assert cursor.isascii() and "=" not in cursor and "+" not in cursor and "/" not in cursor
    assert base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).startswith(b"[1,")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!!",  # not the alphabet
        "MTIz=",  # padding is not part of the canonical form
        _raw("123"),  # the old encoding: a bare number, no version
        _raw("\u00b2"),  # a digit that int() refuses
        _raw("[1,\u00b2]"),  # non-ASCII inside the JSON
        _raw("[1,12]") + "A",  # trailing garbage
        _raw("[1, 12]"),  # another spelling of a valid cursor
        _raw("[1,012]"),  # not JSON
        _raw("[2,12]"),  # unknown version
        _raw("[true,12]"),  # a boolean is no version
        _raw("[1]"),  # too few parts
        _raw("[1,12,13]"),  # too many parts
        _raw("[1,true]"),  # a boolean is no integer
        _raw("[1,1.5]"),  # floats are refused
        _raw("[1,1e3]"),
        _raw("[1,NaN]"),
        _raw("[1,-1]"),  # negative
        _raw(f"[1,{2**63}]"),  # above bigint
        _raw('[1,"12"]'),  # a string where an integer belongs
        _raw('{"v":1}'),  # not a list
        "A" * 201,  # oversize
    ],
)
def test_malformed_integer_cursors_are_400_invalid_cursor(cursor):
    with pytest.raises(ApiError) as refused:
        cursors.decode_int(cursor)
    assert (refused.value.status, refused.value.code) == (400, "invalid_cursor")


@pytest.mark.parametrize(
    "cursor",
    [
        cursors.encode("not-a-uuid"),
        cursors.encode(str(uuid.uuid4()).upper()),  # not the spelling encode writes
        cursors.encode("x" * 65),  # oversize string
        cursors.encode(12),
    ],
)
def test_malformed_uuid_cursors_are_400_invalid_cursor(cursor):
    with pytest.raises(ApiError, match="the cursor is not valid"):
        cursors.decode_uuid(cursor)


def test_a_time_beyond_year_9999_is_400_not_an_overflow():
    with pytest.raises(ApiError, match="the cursor is not valid"):
        cursors.decode_time_and_id(cursors.encode(cursors.BIGINT_MAX, str(uuid.uuid4())))


@pytest.mark.parametrize(
    ("text", "position"),
    [("17.42", EventCursor(17, 42)), ("42", EventCursor(1, 42))],
)
def test_event_cursors_handed_out_before_the_codec_still_parse(text, position):
    assert EventCursor.decode(text) == position


@pytest.mark.parametrize(
    "text", ["", ".", "1.", ".1", "1.2.3", "\u00b2", "1.\u00b2", "9" * 19, f"1.{2**63}", "-1"]
)
def test_malformed_event_cursors_are_refused(text):
    with pytest.raises(InvalidRequest):
        EventCursor.decode(text)
