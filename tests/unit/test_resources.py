"""Resources serialise timestamps one way, whatever offset the database driver returned."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from domain.resources import EntryResource, TransferResource

KOLKATA = timezone(timedelta(hours=5, minutes=30))


def _transfer(created_at: datetime, completed_at: datetime | None) -> TransferResource:
    return TransferResource(
        id=uuid.uuid4(),
        kind="transfer",
        status="succeeded",
        failure_code=None,
        source_account_id=uuid.uuid4(),
        destination_account_id=uuid.uuid4(),
        amount=1,
        currency="USD",
        description=None,
        created_at=created_at,
        completed_at=completed_at,
    )


def test_a_non_utc_offset_is_shown_as_the_same_instant_in_utc_with_z():
    local = datetime(2024, 3, 1, 5, 30, 0, 123_456, tzinfo=KOLKATA)
    shown = _transfer(local, local).model_dump(mode="json")
    assert shown["created_at"] == shown["completed_at"] == "2024-03-01T00:00:00.123456Z"
    entry = EntryResource(
        id=1,
        transfer_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        amount=-1,
        currency="USD",
        balance_before=1,
        balance_after=0,
        sequence=1,
        created_at=datetime(2024, 3, 1, tzinfo=UTC),
    )
    assert entry.model_dump_json().count('"2024-03-01T00:00:00Z"') == 1


def test_a_naive_timestamp_is_refused_rather_than_guessed():
    with pytest.raises(ValidationError):
        _transfer(datetime(2024, 3, 1), None)
