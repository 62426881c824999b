"""A hold's state machine in the engine, as pure functions over in-memory rows.

Every transition a capture or void can meet: held -> captured (with entries, the whole
hold released), held -> voided, held but past expiry -> expired (the command fails),
and a hold already done (captured, voided, expired, failed, canceled) -> the command
fails with `hold_not_active` and nothing moves.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from domain.enums import TransferStatus
from domain.services.engine import AccountState, HoldState, _apply_command

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _account(balance: int, held: int = 0, status: str = "active") -> AccountState:
    return AccountState(
        id=uuid.uuid4(),
        number=str(uuid.uuid4().int)[:12],
        kind="customer",
        status=status,
        currency="USD",
        owner_id=uuid.uuid4(),
        balance=balance,
        overdraft_limit=0,
        last_sequence=0,
        daily_outgoing_limit=None,
        daily_sent=0,
        daily_sent_on=None,
        held=held,
    )


def _hold(source, destination, amount=500, status=TransferStatus.HELD, expires_in=60):
    row = SimpleNamespace(
        id=uuid.uuid4(),
        amount=amount,
        source_account_id=source.id,
        destination_account_id=destination.id,
        expires_at=NOW + timedelta(seconds=expires_in),
    )
    return HoldState(row=row, status=status)  # type: ignore[arg-type]


def _command(kind, hold, amount):
    return SimpleNamespace(
        id=uuid.uuid4(),
        kind=kind,
        amount=amount,
        currency="USD",
        hold_id=hold.row.id,
        description=None,
    )


def test_capture_moves_the_captured_amount_and_releases_the_whole_hold():
    source, destination = _account(1_000, held=500), _account(0)
    hold = _hold(source, destination)
    outcome = _apply_command(_command("capture", hold, 300), hold, source, destination, NOW)
    assert outcome.failure_code is None and outcome.hold is hold
    assert (hold.status, hold.moved_to, hold.captured) == ("captured", "captured", 300)
    assert (source.balance, source.held, destination.balance) == (700, 0, 300)
    assert [e["amount"] for e in outcome.entries] == [-300, 300]


def test_void_releases_without_moving_money():
    source, destination = _account(1_000, held=500), _account(0)
    hold = _hold(source, destination)
    outcome = _apply_command(_command("void", hold, 500), hold, source, destination, NOW)
    assert outcome.failure_code is None and outcome.entries == []
    assert (hold.status, source.balance, source.held) == ("voided", 1_000, 0)


def test_a_capture_after_the_expiry_expires_the_hold_and_fails():
    source, destination = _account(1_000, held=500), _account(0)
    hold = _hold(source, destination, expires_in=-1)
    outcome = _apply_command(_command("capture", hold, 500), hold, source, destination, NOW)
    assert outcome.failure_code == "hold_not_active" and outcome.hold is hold
    assert (hold.status, hold.moved_to, source.balance, source.held) == (
        "expired",
        "expired",
        1_000,
        0,
    )


@pytest.mark.parametrize(
    "status",
    [
        TransferStatus.CAPTURED,
        TransferStatus.VOIDED,
        TransferStatus.EXPIRED,
        TransferStatus.FAILED,
        TransferStatus.CANCELED,
    ],
)
@pytest.mark.parametrize("kind", ["capture", "void"])
def test_a_hold_that_is_done_takes_no_second_outcome(status, kind):
    source, destination = _account(1_000, held=0), _account(0)
    hold = _hold(source, destination, status=status)
    outcome = _apply_command(_command(kind, hold, 100), hold, source, destination, NOW)
    assert outcome.failure_code == "hold_not_active" and outcome.hold is None
    assert (hold.status, hold.moved_to, source.balance, source.held) == (status, None, 1_000, 0)


def test_a_second_command_in_the_same_batch_finds_the_hold_done():
    source, destination = _account(1_000, held=500), _account(0)
    hold = _hold(source, destination)
    first = _apply_command(_command("capture", hold, 100), hold, source, destination, NOW)
    second = _apply_command(_command("void", hold, 500), hold, source, destination, NOW)
    assert first.failure_code is None and second.failure_code == "hold_not_active"
    assert (source.balance, source.held) == (900, 0)


def test_a_capture_into_a_frozen_or_foreign_account_fails_and_the_hold_stays():
    source, destination = _account(1_000, held=500), _account(0, status="frozen")
    hold = _hold(source, destination)
    outcome = _apply_command(_command("capture", hold, 100), hold, source, destination, NOW)
    assert outcome.failure_code == "destination_unavailable"
    assert (hold.status, source.held) == ("held", 500)
    frozen_source = _account(1_000, held=500, status="frozen")
    hold = _hold(frozen_source, destination)
    outcome = _apply_command(_command("capture", hold, 100), hold, frozen_source, _account(0), NOW)
    assert outcome.failure_code == "account_frozen" and hold.status == "held"
