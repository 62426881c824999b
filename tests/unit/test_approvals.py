"""Which requests wait for a second operator: decided from the request alone (no I/O)."""

from __future__ import annotations

import uuid

import pytest

from domain.enums import TransferKind
from domain.services.acceptance import MoneyItem
from domain.services.approvals import ApprovalPolicy, needs_approval

POLICY = ApprovalPolicy(deposit_threshold=1_000, ttl_seconds=3600)


def _item(kind: TransferKind, amount: int) -> MoneyItem:
    return MoneyItem(kind=kind, account_id=uuid.uuid4(), amount=amount, currency="USD")


@pytest.mark.parametrize(
    ("kind", "amount", "parked"),
    [
        (TransferKind.DEPOSIT, 999, False),
        (TransferKind.DEPOSIT, 1_000, True),  # at the threshold: approval
        (TransferKind.DEPOSIT, 10**8, True),
        (TransferKind.WITHDRAWAL, 10**8, False),
        (TransferKind.TRANSFER, 10**8, False),
    ],
)
def test_deposits_at_or_above_the_threshold_need_approval(
    kind: TransferKind, amount: int, parked: bool
) -> None:
    assert needs_approval(_item(kind, amount), policy=POLICY) is parked
