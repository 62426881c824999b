"""The audit chain's fast canonical form is byte for byte the json.dumps form it replaced.

Seals written before (and by any other writer of the format) must keep verifying, so
`canonical` is held to the reference encoding on awkward inputs: non-ASCII and control
characters, quotes, nested and unsorted data, numbers, None everywhere it may be.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from domain.services.audit import canonical, event_hash


def _reference(event: Any, *, chain_seq: int, prev_hash: str) -> bytes:
    """The chain's format as first written (domain/services/audit.py before issue 14)."""
    return json.dumps(
        {
            "seq": chain_seq,
            "prev": prev_hash,
            "at": event.occurred_at.astimezone(UTC).isoformat(),
            "type": event.event_type,
            "actor": str(event.actor_id) if event.actor_id else None,
            "subject": [event.subject_type, event.subject_id],
            "request": event.request_id,
            "data": event.data,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    ).encode()


EVENTS = [
    SimpleNamespace(
        occurred_at=datetime(2026, 11, 29, 9, 0, 0, 123456, tzinfo=UTC),
        event_type="transfer.succeeded",
        actor_id=uuid.UUID("8f0c1d9e-0000-4000-8000-000000000001"),
        subject_type="transfer",
        subject_id=str(uuid.UUID(int=7)),
        request_id=None,
        data={
            "kind": "transfer",
            "amount": 1234,
            "currency": "USD",
            "source_account_id": str(uuid.UUID(int=1)),
            "destination_account_id": str(uuid.UUID(int=2)),
            "failure_code": None,
        },
    ),
    SimpleNamespace(  # whole seconds: isoformat drops the fraction; another zone
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        event_type="auth.login_failed",
        actor_id=None,
        subject_type=None,
        subject_id=None,
        request_id='req-"quoted"\\slash',
        data={
            "z": [1, 2.5, -0.0, True, False, None, {"b": 1, "a": "Ω"}],
            "email": "straße@exämple.com\u2028\x00\t",
            "a": {"nested": {"y": 1e300, "x": "😀"}},
            "": "",
        },
    ),
    SimpleNamespace(
        occurred_at=datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        event_type="émoji.😀",
        actor_id=uuid.UUID(int=0),  # falsy? no: a UUID is always truthy
        subject_type="account",
        subject_id="\u00e9\U0001f600",
        request_id="",
        data={},
    ),
]


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("prev", ["0" * 64, 'a"b\\c', "ü"])
def test_canonical_is_the_json_dumps_form(event: Any, prev: str) -> None:
    fast = canonical(
        chain_seq=42,
        prev_hash=prev,
        at=event.occurred_at.astimezone(UTC).isoformat(),
        event_type=event.event_type,
        actor=str(event.actor_id) if event.actor_id else None,
        subject_type=event.subject_type,
        subject_id=event.subject_id,
        request_id=event.request_id,
        data=event.data,
    )
    assert fast == _reference(event, chain_seq=42, prev_hash=prev)


@pytest.mark.parametrize("event", EVENTS)
def test_event_hash_is_the_hmac_of_the_reference_form(event: Any) -> None:
    key = b"k" * 32
    expected = hmac.new(
        key, _reference(event, chain_seq=3, prev_hash="f" * 64), hashlib.sha256
    ).hexdigest()
    assert event_hash(event, chain_seq=3, prev_hash="f" * 64, key=key) == expected


def test_a_changed_field_changes_the_hash() -> None:
    event = EVENTS[0]
    key = b"k" * 32
    original = event_hash(event, chain_seq=1, prev_hash="0" * 64, key=key)
    changed = SimpleNamespace(**{**vars(event), "data": {**event.data, "amount": 1235}})
    assert event_hash(changed, chain_seq=1, prev_hash="0" * 64, key=key) != original
    assert event_hash(event, chain_seq=2, prev_hash="0" * 64, key=key) != original
